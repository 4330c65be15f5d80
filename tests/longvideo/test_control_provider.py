"""The long-video sampler with a per-clip control provider instead of control files (fake pipeline, CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from longvie.longvideo.run_state import RunMismatchError
from longvie.longvideo.sampler import LongVideoSampler, LongVideoSettings, load_run_frames
from longvie.longvideo.validation import ClipCondition

FRAMES, HEIGHT, WIDTH = 5, 16, 32
SETTINGS = LongVideoSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=1, model="fake", dtype="float32")


class FakePipeline:
    """Output = a deterministic function of the image, the controls and the noise."""

    def __call__(self, image, prompt, dense_video, sparse_video, history=None, noise=None, num_frames=5, height=16,
                 width=32, seed=0, **kwargs):
        if noise is None:
            noise = torch.randn((1, 16, 2, height // 8, width // 8), generator=torch.Generator().manual_seed(seed))
        key = int(np.asarray(dense_video, dtype=np.int64).sum() + 3 * np.asarray(sparse_video, dtype=np.int64).sum())
        frames = (np.asarray(image)[None].astype(np.int64) + np.arange(num_frames)[:, None, None, None] + key) % 256
        return frames.astype(np.uint8), noise


class Provider:
    """Controls that depend on the clips so far (the mean of the last finished clip), like --explore's."""

    name = "test-provider"

    def __init__(self, version: str = "v1"):
        self.version, self.calls = version, []

    def fingerprint(self, index):
        return f"{self.version}:{index}"

    def __call__(self, index, finished):
        self.calls.append((index, len(finished), [finished.sha256(i) for i in range(len(finished))]))
        level = 0 if index == 0 else int(finished[index - 1].mean())
        frames = np.full((FRAMES, HEIGHT * 2, WIDTH * 2, 3), (level + 40 * index) % 256, dtype=np.uint8)
        return frames, frames // 2  # twice the run's size: brought to it like control files


def clips(tmp_path, count=3):
    return [ClipCondition(index=i, text=f"clip {i}", depth=tmp_path / f"depth_{i:02d}.mp4",
                          track=tmp_path / f"track_{i:02d}.mp4") for i in range(count)]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(path)
    return path


def test_provider_gets_the_clips_so_far_and_is_recorded(tmp_path, image):
    provider = Provider()
    result = LongVideoSampler(SETTINGS, pipe=FakePipeline(), progress=False)(tmp_path / "run", image,
                                                                          clips(tmp_path), controls=provider)
    assert result.generated == [0, 1, 2]
    assert [(index, count) for index, count, _ in provider.calls] == [(0, 0), (1, 1), (2, 2)]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    hashes = [c["state_sha256"] for c in manifest["clips"]]
    assert provider.calls[2][2] == hashes[:2]  # the finished clips' state hashes
    depth = manifest["clips"][1]["inputs"]["depth"]
    assert depth == {"path": str(tmp_path / "depth_01.mp4"), "sha256": "v1:1",
                     "found_by": "control provider test-provider"}
    assert not (tmp_path / "depth_01.mp4").exists()  # nothing read from (or required at) the clip's paths


def test_interrupted_provider_run_resumes_identically_and_refuses_other_settings(tmp_path, image):
    class Crash(Exception):
        pass

    def crash(index):
        if index == 0:
            raise Crash

    reference = LongVideoSampler(SETTINGS, pipe=FakePipeline(), progress=False)
    reference(tmp_path / "a", image, clips(tmp_path), controls=Provider())
    sampler = LongVideoSampler(SETTINGS, pipe=FakePipeline(), progress=False)
    with pytest.raises(Crash):
        sampler(tmp_path / "b", image, clips(tmp_path), controls=Provider(), on_clip_done=crash)
    provider = Provider()
    assert sampler(tmp_path / "b", image, clips(tmp_path), controls=provider).generated == [1, 2]
    assert provider.calls[0][:2] == (1, 1)  # clip 0 comes from the run's stored state
    assert np.array_equal(load_run_frames(tmp_path / "b"), load_run_frames(tmp_path / "a"))
    with pytest.raises(RunMismatchError, match="depth video"):
        sampler(tmp_path / "b", image, clips(tmp_path), controls=Provider("v2"))
