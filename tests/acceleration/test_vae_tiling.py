"""VAE tiling is a setting of its own: recorded in the run manifest, applied to the pipe, and a resume
in another tiling is refused (tiled and untiled clips would otherwise be mixed silently)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from longvie.longvideo.cli import build_parser, resolve_config
from longvie.longvideo.run_state import RunDir, RunMismatchError
from longvie.longvideo.sampler import LongVideoSampler, LongVideoSettings
from longvie.longvideo.validation import load_conditions
from longvie.media.video_io import write_video

FRAMES, HEIGHT, WIDTH = 5, 16, 32
SETTINGS = LongVideoSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=1, model="fake", dtype="float32")


class TilingRecorder:
    """Pipeline stand-in: remembers the tiling in force at every call."""

    def __init__(self):
        self.vae_tiling = None
        self.tiling_at_call = []

    def set_vae_tiling(self, enabled):
        self.vae_tiling = enabled

    def __call__(self, image, prompt, dense_video, sparse_video, noise=None, num_frames=81, height=352, width=640,
                 seed=0, **kwargs):
        self.tiling_at_call.append(self.vae_tiling)
        if noise is None:
            noise = torch.randn((1, 16, 1 + (num_frames - 1) // 4, height // 8, width // 8),
                                generator=torch.Generator().manual_seed(seed))
        frames = np.repeat(np.asarray(image)[None], num_frames, axis=0)
        return frames, noise


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(tmp_path / "first.png")
    entries = []
    for index in range(2):
        for kind in ("depth", "track"):
            write_video(tmp_path / f"{kind}_{index}.mp4", rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), np.uint8))
        entries.append({"text": f"clip {index}", "depth": f"depth_{index}.mp4", "track": f"track_{index}.mp4"})
    (tmp_path / "cond.json").write_text(json.dumps(entries))
    clips, problems = load_conditions(tmp_path / "cond.json")
    assert not problems
    return tmp_path / "first.png", clips


def test_tiling_recorded_applied_and_resume_in_other_tiling_refused(tmp_path, inputs):
    image, clips = inputs
    tiled = dataclasses.replace(SETTINGS, vae_tiling=True)
    pipe = TilingRecorder()
    LongVideoSampler(tiled, pipe=pipe, progress=False)(tmp_path / "run", image, clips[:1])
    assert pipe.tiling_at_call == [True]
    assert RunDir(tmp_path / "run").load_manifest()["settings"]["vae_tiling"] is True
    with pytest.raises(RunMismatchError, match="vae_tiling"):
        LongVideoSampler(SETTINGS, pipe=TilingRecorder(), progress=False)(tmp_path / "run", image, clips)
    resumed = TilingRecorder()
    LongVideoSampler(tiled, pipe=resumed, progress=False)(tmp_path / "run", image, clips)
    assert resumed.tiling_at_call == [True]  # only clip 1 was generated, tiled like clip 0


def test_run_made_before_the_setting_existed_resumes(tmp_path, inputs):
    """A manifest without vae_tiling (an earlier version) resumes untiled, or tiled when it used offload group."""
    image, clips = inputs
    LongVideoSampler(SETTINGS, pipe=TilingRecorder(), progress=False)(tmp_path / "run", image, clips[:1])
    run = RunDir(tmp_path / "run")
    manifest = run.load_manifest()
    del manifest["settings"]["vae_tiling"]
    run.save_manifest(manifest)
    resumed = TilingRecorder()
    LongVideoSampler(SETTINGS, pipe=resumed, progress=False)(tmp_path / "run", image, clips)
    assert resumed.tiling_at_call == [False]
    manifest = run.load_manifest()
    del manifest["settings"]["vae_tiling"]
    manifest["config"] = {**manifest.get("config", {}), "offload": "group"}
    manifest["clips"] = manifest["clips"][:1]
    run.save_manifest(manifest)
    with pytest.raises(RunMismatchError, match="vae_tiling"):
        LongVideoSampler(SETTINGS, pipe=TilingRecorder(), progress=False)(tmp_path / "run", image, clips)


def test_cli_flag_sets_the_recorded_setting():
    parser = build_parser()
    assert resolve_config(parser.parse_args(["--preset", "tiny"]))["sampling"]["vae_tiling"] is False
    assert resolve_config(parser.parse_args(["--preset", "tiny", "--vae-tiling"]))["sampling"]["vae_tiling"] is True


def test_pipeline_tiling_is_independent_of_offload(tiny_pipeline):
    assert tiny_pipeline.vae_tiling is False and not tiny_pipeline.vae.use_tiling
    tiny_pipeline.set_vae_tiling(True)
    try:
        assert tiny_pipeline.vae.use_tiling and tiny_pipeline.vae_tiling
    finally:
        tiny_pipeline.set_vae_tiling(False)
