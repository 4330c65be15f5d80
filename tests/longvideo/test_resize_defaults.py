"""Every place inputs are fitted uses the "auto" default: sampler settings, pipeline, CLI, validation."""
import inspect
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from longvie.longvideo.cli import SAMPLING_DEFAULTS
from longvie.longvideo.sampler import LongVideoSampler, LongVideoSettings
from longvie.longvideo.validation import validate_inputs
from longvie.media.video_io import write_video
from longvie.sampling.pipeline import LongViePipeline

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_auto():
    assert LongVideoSettings().resize == "auto"
    assert SAMPLING_DEFAULTS["resize"] == "auto"
    assert inspect.signature(LongViePipeline.__call__).parameters["resize_mode"].default == "auto"
    assert inspect.signature(validate_inputs).parameters["resize"].default == "auto"
    release = yaml.safe_load((REPO / "configs" / "longvie2_i2v_14b.yaml").read_text())
    assert release["sampling"]["resize"] == "auto"


class SpyPipe:
    """Records what the sampler hands the pipeline and returns a constant clip."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, prompt, dense_video, sparse_video, history=None, noise=None, num_frames=9,
                 height=32, width=64, seed=0, **_):
        self.calls.append({"image": np.asarray(image).copy(), "dense": np.asarray(dense_video).copy(),
                           "sparse": np.asarray(sparse_video).copy()})
        noise = torch.zeros(1, 16, 1 + (num_frames - 1) // 4, height // 8, width // 8) if noise is None else noise
        return np.repeat(np.asarray(image)[None], num_frames, axis=0), noise


def upstream_resize(frames, height, width):
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height))) for f in frames])


def test_sampler_stretches_upstream_like_inputs_by_default(tmp_path):
    """Sources at 104x60 (the 832x480 aspect, target 112x64) reach the pipeline as upstream inference resizes them."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (60, 104, 3), dtype=np.uint8)
    Image.fromarray(first).save(tmp_path / "first.png")
    dense, sparse = (rng.integers(0, 256, (9, 60, 104, 3), dtype=np.uint8) for _ in range(2))
    write_video(tmp_path / "depth_00.mp4", dense)
    write_video(tmp_path / "track_00.mp4", sparse)
    (tmp_path / "cond.json").write_text('[{"text": "t", "depth": "depth_00.mp4", "track": "track_00.mp4"}]')
    inputs = validate_inputs(tmp_path / "first.png", tmp_path / "cond.json", num_frames=9, height=64, width=112)
    assert any("auto: plain resize (stretch)" in note for note in inputs.notes), inputs.notes
    spy = SpyPipe()
    settings = LongVideoSettings(num_frames=9, height=64, width=112, steps=1, model="tiny", dtype="float32")
    LongVideoSampler(settings, pipe=spy, progress=False)(tmp_path / "run", inputs.image, inputs.clips)
    call = spy.calls[0]
    np.testing.assert_array_equal(call["image"], upstream_resize(first[None], 64, 112)[0])
    from longvie.media.video_io import read_video
    np.testing.assert_array_equal(call["dense"], upstream_resize(read_video(tmp_path / "depth_00.mp4"), 64, 112))
    np.testing.assert_array_equal(call["sparse"], upstream_resize(read_video(tmp_path / "track_00.mp4"), 64, 112))
