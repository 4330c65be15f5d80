"""Speed and memory flags of ``python -m longvie.sample``: FP8 and step caching change pixels, so they are
recorded in the run settings and a resume in another mode is refused; compile and offload are same-math
(recorded in the manifest's ``modes``, not compared); ``--max-vram`` picks a mode from the memory estimator
before any model loads."""
from __future__ import annotations

import json

import numpy as np
import pytest

from longvie.longvideo import cli
from longvie.longvideo.sampler import load_run_frames
from longvie.presets.tiny import write_tiny_checkpoints

SHAPE = ["--height", "32", "--width", "48", "--steps", "4", "--no-progress"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from longvie.examples.synthetic import make_synthetic_example

    folder = tmp_path_factory.mktemp("speed_flags_example")
    return make_synthetic_example(folder, clips=2, height=32, width=48, frames_per_clip=9, reference=False)


@pytest.fixture
def env(monkeypatch, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "speed_flags_cache"
    write_tiny_checkpoints(cache / "tiny_checkpoints")
    monkeypatch.setenv("LONGVIE_CACHE", str(cache))


def run(example, out, *flags):
    return cli.main(["--preset", "tiny", "--cond", str(example), "--out", str(out), *SHAPE, *flags])


def test_fp8_and_step_cache_are_recorded_and_a_resume_in_another_mode_is_refused(env, example, tmp_path, capsys):
    out = tmp_path / "fast"
    assert run(example, out, "--clips", "1", "--fp8", "--cache", "firstblock") == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["fp8"] is True and settings["step_cache"] == "firstblock"
    assert run(example, out) == 2  # the plain command would mix modes: refused, naming both settings
    err = capsys.readouterr().err
    assert "setting fp8" in err and "setting step_cache" in err
    assert run(example, out, "--fp8", "--cache", "firstblock") == 0  # the same mode continues
    fast = load_run_frames(out)
    assert fast.shape[0] == 17 and np.isfinite(fast).all()

    exact = tmp_path / "exact"
    assert run(example, exact) == 0
    difference = np.abs(load_run_frames(exact).astype(int) - fast.astype(int))
    assert 0 < difference.mean() < 64  # FP8 rounding and skipped steps move pixels, not the picture


def test_compile_fp8_and_offload_compose_and_the_manifest_records_what_ran(env, example, tmp_path, capsys,
                                                                          monkeypatch):
    """--compile --fp8 --offload group: planned before loading, applied in one order (acceleration.modes), and
    recorded. Compile runs with the "eager" backend here (dynamo still traces every block with fullgraph=True,
    so a hook or graph break inside a block fails); inductor itself runs in the mode-matrix test."""
    from longvie.acceleration import modes
    from longvie.acceleration.compile import CompileConfig

    monkeypatch.setattr(modes, "CompileConfig", lambda: CompileConfig(backend="eager"))
    out = tmp_path / "a"
    assert run(example, out, "--clips", "1", "--compile", "--fp8", "--offload", "group") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["fp8"] is True and manifest["settings"]["fp8_kind"] == "weight-only"
    recorded = manifest["modes"]
    assert recorded["fp8"] == "weight-only" and recorded["fp8_layers"] == 96  # 12 Linears x (4 + 2 x 2) blocks
    assert recorded["compiled"] == {"transformer.blocks": 4, "control.control_blocks_dense": 2,
                                    "control.control_blocks_sparse": 2}
    assert recorded["offload"] == "none" and "nothing to offload" in " ".join(recorded["notes"])  # a CPU run
    assert recorded["attention"] == "native" and recorded["step_cache"] is None
    assert manifest["clips"][0]["modes"] == recorded["summary"]
    # compile and offload are the same math: a resume without them continues ...
    assert run(example, out, "--clips", "2", "--fp8") == 0
    # ... but other FP8 numerics (FP8 GEMMs: the activations are rounded too) are refused
    assert run(example, out, "--fp8-kind", "gemm") == 2
    assert "setting fp8_kind: recorded 'weight-only', now 'gemm'" in capsys.readouterr().err


def test_a_run_made_with_unscaled_fp8_is_not_resumed_with_per_row_scales(env, example, tmp_path, capsys):
    out = tmp_path / "old"
    assert run(example, out, "--clips", "1", "--fp8") == 0
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["fp8_kind"]  # as written before per-row scales existed
    manifest_path.write_text(json.dumps(manifest))
    assert run(example, out, "--fp8") == 2
    assert "setting fp8_kind: recorded 'unscaled" in capsys.readouterr().err


def test_max_vram_picks_a_mode_before_loading_and_refuses_an_impossible_budget(env, example, tmp_path, capsys,
                                                                               monkeypatch):
    loads = []
    real_loader = cli.pipeline_loader

    def counting_loader(config, device, *parallel_degrees):
        loads.append((config["offload"], config["sampling"]["fp8"]))
        return real_loader(config, device, *parallel_degrees)

    monkeypatch.setattr(cli, "pipeline_loader", counting_loader)
    assert run(example, tmp_path / "tight", "--clips", "1", "--max-vram", "0.001") == 2
    assert "no mode fits 0.001 GiB" in capsys.readouterr().err and loads == []
    assert run(example, tmp_path / "roomy", "--clips", "1", "--max-vram", "64") == 0
    assert loads == [("none", False)]  # the tiny model fits anywhere: the fastest mode



def test_config_fp8_takes_a_kind(tmp_path):
    from longvie.longvideo.preflight import check_config_file

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("preset: tiny\nsampling:\n  fp8: weight-only\n")
    bad.write_text("preset: tiny\nsampling:\n  fp8: fast\n")
    assert check_config_file(good) == []
    assert check_config_file(bad) == [f"{bad}:3: fp8 'fast': must be true, false or one of off, auto, gemm, weight-only"]
