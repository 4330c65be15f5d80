"""``--lora``, ``--fast`` and ``--cache teacache|magcache`` on ``python -m longvie.sample``: checked before any
model loads, recorded in the run, and a resume with another LoRA set is refused."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from longvie.longvideo import cli
from longvie.presets.tiny import write_tiny_checkpoints

SHAPE = ["--height", "32", "--width", "48", "--no-progress", "--clips", "1"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from longvie.examples.synthetic import make_synthetic_example

    folder = tmp_path_factory.mktemp("lora_cli_example")
    return make_synthetic_example(folder, clips=2, height=32, width=48, frames_per_clip=9, reference=False)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """A LoRA for the tiny model (ComfyUI layout, one control-branch module too) and one for Wan2.1 1.3B."""
    folder = tmp_path_factory.mktemp("lora_files")
    g = torch.Generator().manual_seed(0)
    good = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 64, generator=g) * 0.3,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(64, 4, generator=g) * 0.3,
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(4.0),
            "control_blocks_dense.0.ffn.0.lora_A.weight": torch.randn(4, 32, generator=g) * 0.3,
            "control_blocks_dense.0.ffn.0.lora_B.weight": torch.randn(64, 4, generator=g) * 0.3}
    wrong = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 1536, generator=g),
             "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(1536, 4, generator=g)}
    save_file(good, str(folder / "style.safetensors"))
    save_file(wrong, str(folder / "wan13b.safetensors"))
    return folder / "style.safetensors", folder / "wan13b.safetensors"


@pytest.fixture
def env(monkeypatch, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "lora_cli_cache"
    write_tiny_checkpoints(cache / "tiny_checkpoints")
    monkeypatch.setenv("LONGVIE_CACHE", str(cache))


@pytest.fixture
def loads(monkeypatch):
    calls = []
    real_loader = cli.pipeline_loader

    def counting_loader(config, *args):
        calls.append(config)
        return real_loader(config, *args)

    monkeypatch.setattr(cli, "pipeline_loader", counting_loader)
    return calls


def run(example, out, *flags):
    return cli.main(["--preset", "tiny", "--cond", str(example), "--out", str(out), "--steps", "2", *SHAPE, *flags])


def test_lora_is_recorded_and_a_resume_with_another_set_is_refused(env, example, loras, tmp_path, capsys):
    good, _ = loras
    out = tmp_path / "styled"
    assert run(example, out, "--lora", f"{good}:0.8") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    from longvie.weights.lora import file_sha256

    sha = file_sha256(good)
    assert manifest["settings"]["loras"] == [{"sha256": sha, "scale": 0.8}]
    assert manifest["config"]["loras"] == [{"path": str(good.resolve()), "sha256": sha, "scale": 0.8}]
    assert run(example, out, "--lora", f"{good}:0.5") == 2
    assert "setting loras" in capsys.readouterr().err
    assert run(example, out) == 2                              # without the LoRA: refused as well
    assert run(example, out, "--lora", f"{good}:0.8") == 0     # the same set continues


def test_wrong_model_lora_is_refused_before_loading(env, example, loras, tmp_path, capsys, loads):
    _, wrong = loras
    assert run(example, tmp_path / "x", "--lora", str(wrong), "--lora", str(tmp_path / "nope.safetensors")) == 2
    err = capsys.readouterr().err
    assert loads == [] and not (tmp_path / "x" / "manifest.json").exists()
    assert "nope.safetensors: file not found" in err
    assert run(example, tmp_path / "x", "--lora", str(wrong)) == 2
    err = capsys.readouterr().err
    assert f"{wrong}: made for Wan2.1 1.3B (width 1536)" in err and loads == []


def test_fast_on_the_tiny_preset_records_the_distilled_schedule(env, example, tmp_path, capsys):
    out = tmp_path / "fast"
    assert cli.main(["--preset", "tiny", "--cond", str(example), "--out", str(out), *SHAPE, "--fast"]) == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["steps"] == 4 and settings["cfg"] == 1.0 and settings["timesteps"] == [1000, 750, 500, 250]
    assert settings["loras"] == []  # the distill LoRA is for the 14B model: not on the tiny preset
    assert "distill LoRA is for" in capsys.readouterr().err
    assert cli.main(["--preset", "tiny", "--cond", str(example), "--out", str(tmp_path / "bad"), *SHAPE, "--fast",
                     "--steps", "6"]) == 2
    assert "the schedule names 4 timesteps" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["teacache", "magcache"])
def test_cache_kinds_run_and_are_recorded(env, example, tmp_path, kind, capsys):
    out = tmp_path / kind
    assert run(example, out, "--cache", kind, "--cache-threshold", "0.3") == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["step_cache"] == kind and settings["step_cache_threshold"] == 0.3
    assert run(example, tmp_path / "r", "--cache", "firstblock", "--cache-ratios", str(tmp_path / "r.json")) == 2
    assert "--cache-ratios" in capsys.readouterr().err


def test_fast_release_config_names_the_lightx2v_lora_and_reports_it_missing(tmp_path, capsys, loads, monkeypatch):
    """On the release config --fast adds the distill LoRA; without it downloaded, the error says how to get it."""
    from longvie.presets.config import load_config

    fast = load_config("longvie2_i2v_14b_fast")
    assert fast["loras"][0]["path"].endswith("Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    from longvie.longvideo import loras as lora_module

    monkeypatch.setattr(lora_module, "REPO_ROOT", tmp_path)
    assert cli.main(["--fast", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "python download_wan2.1.py --fast-lora" in err and loads == []
