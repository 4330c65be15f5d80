"""End-to-end training on the tiny preset (CPU): the three stages, resume, checkpoints, 2 processes, cache.

Slow tests (about 2 minutes together on an idle 2-core machine). Every run uses the tiny random
Wan2.1-I2V and the synthetic example at 32 x 48 x 9 frames. The overfitting runs use
``train.overfit`` (the same clip, noise and timestep every step) and a learning rate of 1e-3
(the tiny preset's default; 100x the paper's 1e-5, for a 0.1M-parameter branch and 30 steps).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from longvie.train.metrics import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tiny_env")]  # tiny_env: tests/train/conftest.py
REPO = Path(__file__).resolve().parents[2]
OVERFIT_STEPS = 30


def run_stage(stage: int, output: Path, resume=None, build_cache: bool = False, **overrides):
    """One in-process training run of the tiny preset (accelerate's singletons reset first)."""
    from accelerate.state import AcceleratorState, GradientState

    from longvie.train.config import load_train_config
    from longvie.train.trainer import train

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    overrides = {"train.output_dir": str(output), **overrides}
    return train(load_train_config(stage=stage, preset="tiny", overrides=overrides), resume=resume,
                 build_cache=build_cache)


def losses(run_dir: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(run_dir / "logs" / "metrics.csv")}


@pytest.fixture(scope="module")
def history_metadata(tiny_env, tmp_path_factory):
    """The synthetic clips that start after frame 0 (so that stage 3 has history frames)."""
    rows = json.loads(Path(tiny_env["metadata"]).read_text())
    path = Path(tiny_env["metadata"]).parent / "with_history.json"
    path.write_text(json.dumps([r for r in rows if r["start"] > 0]))
    return path


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, history_metadata):
    """Stages 1, 2 and 3, each overfitting one clip for 30 steps from the half copy that stage 1
    saved (``stage1/init``, loaded through --init-from).

    Stages 2 and 3 degrade the conditioning frame on purpose (first_frame_p = 1): stage 2 by
    re-generation through the model, stage 3 by VAE round trips, with history frames always on,
    so that every degradation and loss term runs. (Stage 2 -> 3 chaining: test_stage2_starts_...)
    """
    root = tmp_path_factory.mktemp("stages")
    common = {"train.overfit": True, "train.learning_rate": 1e-3, "train.max_steps": OVERFIT_STEPS,
              "train.save_every": OVERFIT_STEPS}
    run_stage(1, root / "stage1", **common)
    init = {"model.init_from": str(root / "stage1" / "init"), "degradation.first_frame_p": 1.0}
    run_stage(2, root / "stage2", **common, **init, **{"degradation.regen_p": 1.0})
    run_stage(3, root / "stage3", **common, **init, **{"degradation.regen_p": 0.0,
                                                       "data.metadata": str(history_metadata),
                                                       "degradation.history_none_p": 0.0})
    return root


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_stage_overfits_one_clip(stage_runs, stage):
    run = stage_runs / f"stage{stage}"
    rows = read_metrics(run / "logs" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, OVERFIT_STEPS + 1))
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < 0.5 * first, f"stage {stage}: loss {first:.4f} -> {last:.4f}"
    if stage > 1:
        assert all(r["degraded"] == 1 for r in rows)  # the degraded-frame path ran
    assert all((r["history_frames"] > 0) == (stage == 3) for r in rows)


def test_checkpoint_files_and_layout(stage_runs):
    for stage in (1, 2, 3):
        run = stage_runs / f"stage{stage}"
        checkpoint = run / f"checkpoint-{OVERFIT_STEPS:06d}"
        assert (run / "latest").read_text().strip() == checkpoint.name
        assert (checkpoint / "state" / "optimizer.bin").is_file()
        control = load_file(checkpoint / "control.safetensors")
        assert "control_blocks_dense.0.self_attn.q.weight" in control and "control_t_mod.weight" in control
        assert all(not k.startswith(("pipe.", "control.")) for k in control)
        assert (checkpoint / "dit.safetensors").is_file() == (stage == 3)
        final = load_file(run / "final" / "control.safetensors")
        assert all(torch.equal(final[k], control[k]) for k in control)
    dit = load_file(stage_runs / "stage3" / "final" / "dit.safetensors")
    assert dit and all(".self_attn." in k for k in dit)
    assert {k.split(".", 3)[-1] for k in dit} >= {"q.weight", "norm_q.weight", "norm_k.weight", "o.bias"}


def test_stage1_init_is_the_half_copy_of_the_base_dit(stage_runs, tiny_env):
    from longvie.models.control_branch import LongVieControlBranch
    from longvie.weights.loading import load_control_branch, load_transformer

    transformer = load_transformer(tiny_env["base_dir"], torch_dtype=torch.float32)
    saved = load_control_branch(stage_runs / "stage1" / "init" / "control.safetensors", transformer.config,
                                torch_dtype=torch.float32)
    q = transformer.blocks[1].attn1.to_q.weight
    assert torch.equal(saved.control_blocks_dense[1].attn1.to_q.weight, q[0::2, 0::2])
    assert torch.equal(saved.control_blocks_sparse[1].attn1.to_q.weight, q[1::2, 1::2])
    fresh = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, saved.depth))
    fresh.init_half_copy(transformer)
    blocks = {k: v for k, v in fresh.state_dict().items() if k.startswith("control_blocks")}
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in blocks.items())


def test_stage2_starts_from_stage1_weights(stage_runs, tiny_env):
    from longvie.train.config import load_train_config
    from longvie.train.trainer import build_denoiser

    config = load_train_config(stage=2, preset="tiny", overrides={
        "model.init_from": str(stage_runs / "stage1"), "model.base_model_dir": str(tiny_env["base_dir"])})
    control = build_denoiser(config).control.state_dict()
    from longvie.weights.checkpoint_keys import convert_control_state_dict

    stage1 = convert_control_state_dict(load_file(stage_runs / "stage1" / "final" / "control.safetensors"))
    assert set(control) == set(stage1) and all(torch.equal(control[k], stage1[k]) for k in control)
    assert stage1["control_combine_linears.0.weight"].abs().sum() > 0  # trained, not a fresh half copy


def sample_clip(base_dir, longvie_dir, example_dir):
    from longvie.media.video_io import load_image, read_video
    from longvie.sampling.pipeline import LongViePipeline

    pipe = LongViePipeline.from_pretrained(base_dir, longvie_dir, torch_dtype=torch.float32, device="cpu")
    frames, _ = pipe(load_image(example_dir / "first.png"), "a plaza", read_video(example_dir / "depth_00.mp4"),
                     read_video(example_dir / "track_00.mp4"), num_frames=9, height=32, width=48,
                     num_inference_steps=2, guidance_scale=1.0, progress=False)
    return frames.astype(np.float32)


def test_checkpoints_load_into_the_pipeline_and_change_its_output(stage_runs, tiny_env):
    example = Path(tiny_env["root"]) / "data" / "example"
    base = tiny_env["base_dir"]
    initial = sample_clip(base, stage_runs / "stage1" / "init", example)  # zero adapters: plain Wan2.1
    stage1 = sample_clip(base, stage_runs / "stage1" / f"checkpoint-{OVERFIT_STEPS:06d}", example)
    stage3 = sample_clip(base, stage_runs / "stage3" / "final", example)  # control + dit.safetensors
    assert np.abs(stage1 - initial).mean() > 0.5
    assert np.abs(stage3 - stage1).mean() > 0.5


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    """20 steps straight vs. 10 steps, stop, --resume to 20: identical losses for steps 11-20.

    Normal (non-overfit) training: shuffled clips over several epochs, random timesteps and noise,
    stage-1 degradations. (Gradient accumulation runs in the two-process test.)
    """
    common = {"train.save_every": 10, "train.learning_rate": 1e-3}
    run_stage(1, tmp_path / "straight", **common, **{"train.max_steps": 20})
    run_stage(1, tmp_path / "resumed", **common, **{"train.max_steps": 10})
    result = run_stage(1, tmp_path / "resumed", resume="auto", **common, **{"train.max_steps": 20})
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 21)) and result.step == 20
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-7), step
    assert len(set(straight.values())) > 15  # the losses do vary: the comparison means something
    a = load_file(tmp_path / "straight" / "final" / "control.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "control.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_process_cpu_run_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "longvie.train",
               "--preset", "tiny", "--stage", "1", "--max-steps", "2", "--save-every", "2",
               "--gradient-accumulation-steps", "2", "--output", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out / "checkpoint-000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and len(state["positions"]) == 2
    assert [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")] == [1, 2]
    assert (out / "checkpoint-000002" / "state" / "random_states_1.pkl").is_file()
    assert (out / "final" / "control.safetensors").is_file()


def test_latent_cache_gives_the_same_losses(tmp_path, monkeypatch):
    """Training from the latent cache = training from pixels (same plans, same noise); from an existing cache
    umT5 and CLIP are not even loaded in stage 1 (only the VAE, for the degraded depth videos)."""
    from longvie.weights import loading

    loaded = []
    load = loading.load_base_components
    monkeypatch.setattr(loading, "load_base_components",
                        lambda *args, **kwargs: loaded.append(tuple(kwargs["components"])) or load(*args, **kwargs))
    common = {"train.max_steps": 3, "train.save_every": 3, "degradation.depth_p": 1.0}
    run_stage(1, tmp_path / "pixels", **common)
    run_stage(1, tmp_path / "cached", build_cache=True, **common, **{"data.cache_dir": str(tmp_path / "cache")})
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["clips"] == 3 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 3
    run_stage(1, tmp_path / "from_cache", **common, **{"data.cache_dir": str(tmp_path / "cache")})
    everything = ("text_encoder", "image_encoder", "vae")
    assert loaded == [everything, everything, ("vae",)]
    pixels, cached = losses(tmp_path / "pixels"), losses(tmp_path / "cached")
    from_cache = losses(tmp_path / "from_cache")
    for step in (1, 2, 3):
        assert cached[step] == pytest.approx(pixels[step], rel=1e-4), step
        assert from_cache[step] == cached[step], step


def test_unusable_clips_are_skipped_and_counted(tmp_path, tiny_env):
    rows = json.loads(Path(tiny_env["metadata"]).read_text())
    broken = {**rows[0], "video": str(tmp_path / "missing.mp4")}
    metadata = Path(tiny_env["metadata"]).parent / "with_broken.json"
    metadata.write_text(json.dumps(rows + [broken]))
    result = run_stage(1, tmp_path / "skip", **{"data.metadata": str(metadata), "data.skip_bad": True,
                                                "train.max_steps": 4, "train.save_every": 4})
    assert result.skipped >= 1  # one epoch of 4 clips was consumed, the broken one among them
    assert read_metrics(tmp_path / "skip" / "logs" / "metrics.csv")[-1]["skipped"] == result.skipped
    with pytest.raises(Exception, match="missing.mp4"):
        run_stage(1, tmp_path / "strict", **{"data.metadata": str(metadata), "train.max_steps": 4})
