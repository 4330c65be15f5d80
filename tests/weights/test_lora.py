"""LoRAs: every layout Wan users have, written here, fuses to W + scale * (alpha/r) * B A; scale 0 is the
base model exactly; fused == unfused; a LoRA for another model is refused before anything is sampled."""
from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from tiny_inputs import make_inputs

from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer, tiny_model_config
from longvie.weights.checkpoint_keys import original_to_diffusers_control_key, original_to_diffusers_dit_key
from longvie.weights.lora import (
    LoraError,
    LoraSpec,
    check_lora_files,
    load_loras,
    loaded_loras,
    parse_lora_arg,
    unfuse_loras,
)

RANK = 4
# (original Wan name, alpha or None): the modules our test LoRA changes
DIT_MODULES = [("blocks.0.self_attn.q", 8.0), ("blocks.1.cross_attn.k_img", None), ("blocks.1.cross_attn.v_img", 2.0),
               ("blocks.2.ffn.0", 4.0), ("blocks.3.cross_attn.k", None)]
CONTROL_MODULES = [("control_blocks_dense.0.self_attn.q", None), ("control_blocks_sparse.1.ffn.2", 2.0)]
# full differences (LightX2V / ComfyUI): original name -> our parameter
DIFFS = {"blocks.0.self_attn.q.diff_b": "blocks.0.attn1.to_q.bias", "blocks.1.diff_m": "blocks.1.scale_shift_table",
         "blocks.2.norm3.diff": "blocks.2.norm2.weight"}


def _ours(name: str, control: bool = False) -> str:
    return (original_to_diffusers_control_key if control else original_to_diffusers_dit_key)(name + ".weight")[:-7]


@pytest.fixture(scope="module")
def denoiser():
    transformer = build_tiny_transformer(0)
    model = LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()
    model.base_state = {k: v.clone() for k, v in model.state_dict().items()}
    return model


@pytest.fixture
def fresh(denoiser):
    unfuse_loras(denoiser) if loaded_loras(denoiser) else None
    denoiser.load_state_dict(denoiser.base_state)
    denoiser._longvie_loras = []
    return denoiser


@pytest.fixture(scope="module")
def truth(denoiser):
    """The LoRA all files encode: per module (A, B, alpha) at the model's shapes, and the differences."""
    g = torch.Generator().manual_seed(7)
    linears = dict(denoiser.transformer.named_modules())
    control = dict(denoiser.control.named_modules())
    factors = {}
    for name, alpha in DIT_MODULES + CONTROL_MODULES:
        is_control = name.startswith("control_")
        layer = (control if is_control else linears)[_ours(name, is_control)]
        factors[name] = (torch.randn(RANK, layer.in_features, generator=g) * 0.2,
                         torch.randn(layer.out_features, RANK, generator=g) * 0.2, alpha)
    params = dict(denoiser.transformer.named_parameters())
    diffs = {key: torch.randn(params[ours].shape, generator=g) * 0.05 for key, ours in DIFFS.items()}
    return factors, diffs


def _write(path, tensors, metadata=None):
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def write_format(fmt: str, folder, truth) -> tuple:
    """Write the truth LoRA in one layout; returns (path, whether it holds the differences / control keys)."""
    factors, diffs = truth
    out, dit_only = {}, [(n, f) for n, f in factors.items() if not n.startswith("control_")]
    if fmt == "diffusers":  # transformer.* diffusers names, alpha folded into A (diffusers' own save layout)
        for name, (a, b, alpha) in dit_only:
            scale = (alpha or RANK) / RANK
            out[f"transformer.{_ours(name)}.lora_A.weight"] = a * scale
            out[f"transformer.{_ours(name)}.lora_B.weight"] = b
    elif fmt == "peft":  # PEFT's get_peft_model_state_dict names on the bare transformer, adapter name kept
        for name, (a, b, alpha) in dit_only:
            scale = (alpha or RANK) / RANK
            out[f"base_model.model.{_ours(name)}.lora_A.default.weight"] = a * scale
            out[f"base_model.model.{_ours(name)}.lora_B.default.weight"] = b
    elif fmt in ("comfyui", "lightx2v"):  # diffusion_model.* original names
        down, up = ("lora_down", "lora_up") if fmt == "comfyui" else ("lora_A", "lora_B")
        for name, (a, b, alpha) in dit_only:
            out[f"diffusion_model.{name}.{down}.weight"] = a
            out[f"diffusion_model.{name}.{up}.weight"] = b
            if alpha is not None:
                out[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
        out.update({f"diffusion_model.{k}": v for k, v in diffs.items()})
    elif fmt == "diffsynth":  # DiffSynth-Studio: original names, no prefix, PEFT adapter name
        for name, (a, b, alpha) in dit_only:
            out[f"{name}.lora_A.default.weight"] = a * ((alpha or RANK) / RANK)
            out[f"{name}.lora_B.default.weight"] = b
    elif fmt == "control":  # LongVie's own trainer: control-branch keys beside DiT keys
        for name, (a, b, alpha) in factors.items():
            prefix = "pipe.dual_controller." if name.startswith("control_") else "pipe.dit."
            out[f"{prefix}{name}.lora_A.default.weight"] = a * ((alpha or RANK) / RANK)
            out[f"{prefix}{name}.lora_B.default.weight"] = b
    return _write(folder / f"{fmt}.safetensors", out), fmt in ("comfyui", "lightx2v"), fmt == "control"


def write_musubi(folder, model, scale_seed=3):
    """kohya / musubi-tuner layout: lora_unet_blocks_N_<module> with lora_down/lora_up/alpha for every Linear of
    every block (diffusers' musubi converter expects that). Returns (path, {our module: B @ A * alpha/r})."""
    g = torch.Generator().manual_seed(scale_seed)
    out, deltas = {}, {}
    modules = [f"{att}_{p}" for att in ("self_attn", "cross_attn") for p in "qkvo"] + ["cross_attn_k_img",
                                                                                      "cross_attn_v_img", "ffn_0",
                                                                                      "ffn_2"]
    layers = dict(model.transformer.named_modules())
    for i in range(len(model.transformer.blocks)):
        for m in modules:
            dotted = m.replace("self_attn_", "self_attn.").replace("cross_attn_", "cross_attn.").replace("ffn_", "ffn.")
            original = f"blocks.{i}.{dotted}"
            layer = layers[_ours(original)]
            a = torch.randn(RANK, layer.in_features, generator=g) * 0.1
            b = torch.randn(layer.out_features, RANK, generator=g) * 0.1
            out[f"lora_unet_blocks_{i}_{m}.lora_down.weight"] = a
            out[f"lora_unet_blocks_{i}_{m}.lora_up.weight"] = b
            out[f"lora_unet_blocks_{i}_{m}.alpha"] = torch.tensor(2.0)
            deltas[_ours(original)] = b @ a * (2.0 / RANK)
    return _write(folder / "musubi.safetensors", out), deltas


def expected_weights(model, truth, scale, with_diffs, with_control):
    factors, diffs = truth
    base = model.base_state
    expected = {}
    for name, (a, b, alpha) in factors.items():
        is_control = name.startswith("control_")
        if is_control and not with_control:
            continue
        key = ("control." if is_control else "transformer.") + _ours(name, is_control) + ".weight"
        expected[key] = base[key] + scale * ((alpha or RANK) / RANK) * (b @ a)
    if with_diffs:
        for original, ours in DIFFS.items():
            key = "transformer." + ours
            expected[key] = base[key] + scale * diffs[original].reshape(base[key].shape)
    return expected


FORMATS = ["diffusers", "peft", "comfyui", "lightx2v", "diffsynth", "control"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_layout_fuses_to_w_plus_scale_ba_and_unfuses(fresh, truth, tmp_path, fmt):
    path, with_diffs, with_control = write_format(fmt, tmp_path, truth)
    assert check_lora_files([path], tiny_model_config()) == []       # header only: fits the tiny model
    records = load_loras(fresh, [LoraSpec(path, 0.7)])
    assert records[0]["targets"] == (["dit", "control"] if with_control else ["dit"]) and records[0]["fused"]
    state = fresh.state_dict()
    for key, value in expected_weights(fresh, truth, 0.7, with_diffs, with_control).items():
        assert torch.allclose(state[key], value, atol=1e-5), key
    changed = {k for k in state if not torch.equal(state[k], fresh.base_state[k])}
    assert changed == set(expected_weights(fresh, truth, 0.7, with_diffs, with_control))  # nothing else moved
    assert all(type(m) is torch.nn.Linear for m in fresh.modules() if "Linear" in type(m).__name__)  # no PEFT left
    unfuse_loras(fresh)
    for key, value in fresh.state_dict().items():
        assert torch.allclose(value, fresh.base_state[key], atol=1e-6), key


def test_kohya_musubi_layout(fresh, tmp_path):
    path, deltas = write_musubi(tmp_path, fresh)
    assert check_lora_files([f"{path}:0.5"], tiny_model_config()) == []
    record = load_loras(fresh, [f"{path}:0.5"])[0]
    assert record["format"].startswith("kohya") and record["matched_keys"] == 3 * len(deltas)
    state = fresh.state_dict()
    for module, delta in deltas.items():
        key = f"transformer.{module}.weight"
        assert torch.allclose(state[key], fresh.base_state[key] + 0.5 * delta, atol=1e-5), key


@torch.no_grad()
def test_scale_zero_is_exactly_the_base_model_and_fused_equals_unfused(fresh, truth, tmp_path):
    x = make_inputs()
    base = fresh(**x)
    path, _, _ = write_format("control", tmp_path, truth)
    comfy, _, _ = write_format("comfyui", tmp_path, truth)
    for fuse in (True, False):
        load_loras(fresh, [LoraSpec(path, 0.0), LoraSpec(comfy, 0.0)], fuse=fuse)
        assert torch.equal(fresh(**x), base)  # W + 0 * BA, differences * 0: bit for bit
        unfuse_loras(fresh)
        fresh.load_state_dict(fresh.base_state)

    load_loras(fresh, [LoraSpec(path, 0.6), LoraSpec(comfy, -0.4)], fuse=True)
    fused = fresh(**x)
    unfuse_loras(fresh)
    fresh.load_state_dict(fresh.base_state)
    load_loras(fresh, [LoraSpec(path, 0.6), LoraSpec(comfy, -0.4)], fuse=False)  # PEFT layers, computed per call
    assert any("lora" in type(m).__module__ for m in fresh.modules())
    unfused = fresh(**x)
    unfuse_loras(fresh)
    assert torch.equal(fresh(**x), base)  # unfused LoRA layers deleted, differences restored: the base model exactly
    fresh.load_state_dict(fresh.base_state)
    # by hand: W + sum of scale * BA, and the differences
    by_hand = {**fresh.base_state}
    for scale, with_diffs, with_control in ((0.6, False, True), (-0.4, True, False)):
        for key, value in expected_weights(fresh, truth, scale, with_diffs, with_control).items():
            by_hand[key] = by_hand[key] + (value - fresh.base_state[key])
    fresh.load_state_dict(by_hand)
    manual = fresh(**x)
    assert (fused - base).abs().max() > 1e-3  # the LoRAs matter
    assert torch.allclose(fused, manual, atol=1e-5) and torch.allclose(unfused, manual, atol=1e-5)


def _bad_files(folder, truth):
    factors, _ = truth
    a, b, _ = factors["blocks.0.self_attn.q"]
    files = {
        "wan13b": {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(RANK, 1536),
                   "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(1536, RANK)},
        "unknown": {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": a,
                    "diffusion_model.blocks.0.self_attn.q.lora_up.weight": b,
                    "diffusion_model.blocks.99.self_attn.q.lora_down.weight": a,
                    "diffusion_model.blocks.99.self_attn.q.lora_up.weight": b},
        "rank": {"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
                 "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(64, RANK + 1)},
        "t2v_whole_model": {"diffusion_model.blocks.0.cross_attn.k.lora_down.weight": a,
                            "diffusion_model.blocks.0.cross_attn.k.lora_up.weight": b,
                            "diffusion_model.blocks.0.cross_attn.k.diff_b": torch.zeros(64)},
        "dora": {"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
                 "transformer.blocks.0.attn1.to_q.lora_B.weight": b,
                 "transformer.blocks.0.attn1.to_q.dora_scale": torch.ones(64)},
    }
    paths = {name: _write(folder / f"{name}.safetensors", tensors) for name, tensors in files.items()}
    paths["t2v_metadata"] = _write(folder / "t2v_metadata.safetensors",
                                   {"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
                                    "transformer.blocks.0.attn1.to_q.lora_B.weight": b},
                                   metadata={"ss_base_model_version": "wan2.1_t2v_14B"})
    paths["pickle"] = folder / "old.pt"
    torch.save({"x": a}, paths["pickle"])
    paths["missing"] = folder / "missing.safetensors"
    return paths


EXPECTED_PROBLEM = {"wan13b": "Wan2.1 1.3B (width 1536)", "unknown": "match nothing", "rank": "wrong shape",
                    "t2v_whole_model": "Wan2.1 T2V", "dora": "DoRA", "t2v_metadata": "ss_base_model_version",
                    "pickle": "only .safetensors", "missing": "not found"}


def test_wrong_files_are_refused_from_the_header_and_before_any_change(fresh, truth, tmp_path):
    paths = _bad_files(tmp_path, truth)
    for name, path in paths.items():
        problems = check_lora_files([path], tiny_model_config())
        assert len(problems) >= 1 and str(path) in problems[0] and EXPECTED_PROBLEM[name] in " ".join(problems), \
            (name, problems)
        with pytest.raises(LoraError, match=re.escape(EXPECTED_PROBLEM[name])):
            load_loras(fresh, [path])
        assert all(torch.equal(v, fresh.base_state[k]) for k, v in fresh.state_dict().items())
    # a LoRA of the attention/FFN layers alone without k_img/v_img is accepted (DiffSynth's default targets)
    good, _, _ = write_format("diffsynth", tmp_path, truth)
    assert check_lora_files([good], tiny_model_config()) == []


def test_release_shapes_from_the_header(tmp_path):
    """Against Wan2.1-I2V-14B-480P (built on the meta device): a 14B-wide LoRA fits, a 1.3B one is refused."""
    g = torch.Generator().manual_seed(0)
    fits = _write(tmp_path / "i2v14b.safetensors", {
        "diffusion_model.blocks.39.cross_attn.k_img.lora_down.weight": torch.randn(2, 5120, generator=g),
        "diffusion_model.blocks.39.cross_attn.k_img.lora_up.weight": torch.randn(5120, 2, generator=g),
        "diffusion_model.blocks.39.cross_attn.v_img.lora_down.weight": torch.randn(2, 5120, generator=g),
        "diffusion_model.blocks.39.cross_attn.v_img.lora_up.weight": torch.randn(5120, 2, generator=g),
        "pipe.dual_controller.control_blocks_sparse.11.ffn.0.lora_A.weight": torch.randn(2, 2560, generator=g),
        "pipe.dual_controller.control_blocks_sparse.11.ffn.0.lora_B.weight": torch.randn(6912, 2, generator=g)})
    small = _write(tmp_path / "t2v13b.safetensors", {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(2, 1536, generator=g),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(1536, 2, generator=g)})
    assert check_lora_files([fits], None) == []
    problems = check_lora_files([fits, small], None)
    assert len(problems) == 1 and "t2v13b.safetensors: made for Wan2.1 1.3B (width 1536)" in problems[0]


def test_diffusers_metadata_alpha_is_honoured(fresh, truth, tmp_path):
    factors, _ = truth
    a, b, _ = factors["blocks.0.self_attn.q"]
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": RANK, "transformer.lora_alpha": 2 * RANK,
                                                     "transformer.target_modules": ["blocks.0.attn1.to_q"]})}
    path = _write(tmp_path / "meta.safetensors", {"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
                                                   "transformer.blocks.0.attn1.to_q.lora_B.weight": b}, metadata)
    load_loras(fresh, [path])
    key = "transformer.blocks.0.attn1.to_q.weight"
    assert torch.allclose(fresh.state_dict()[key], fresh.base_state[key] + 2.0 * b @ a, atol=1e-5)


def test_fp8_after_the_fused_lora_and_not_before(fresh, truth, tmp_path):
    from longvie.acceleration.fp8 import apply_fp8_storage

    path, _, _ = write_format("comfyui", tmp_path, truth)
    transformer = build_tiny_transformer(0)
    model = LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()
    load_loras(model, [path])          # fuse first ...
    apply_fp8_storage(model, compute_dtype=torch.float32)  # ... then quantise: FP8 sees the fused weights
    assert model.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    with torch.no_grad():
        assert torch.isfinite(model(**make_inputs())).all()
    with pytest.raises(LoraError, match="before FP8"):
        load_loras(model, [path])


def test_parse_lora_arg(tmp_path):
    assert parse_lora_arg("a.safetensors") == LoraSpec("a.safetensors", 1.0)
    assert parse_lora_arg("a.safetensors:0.75") == LoraSpec("a.safetensors", 0.75)
    assert parse_lora_arg("dir:with:colons/a.safetensors:-0.5") == LoraSpec("dir:with:colons/a.safetensors", -0.5)
    assert parse_lora_arg(r"C:\loras\a.safetensors") == LoraSpec(r"C:\loras\a.safetensors", 1.0)
    assert parse_lora_arg(r"C:\loras\a.safetensors:2") == LoraSpec(r"C:\loras\a.safetensors", 2.0)
    assert parse_lora_arg("my:lora.safetensors") == LoraSpec("my:lora.safetensors", 1.0)
    odd = tmp_path / "odd:1"
    odd.write_bytes(b"")
    assert parse_lora_arg(str(odd)) == LoraSpec(odd, 1.0)  # an existing file is taken whole
    with pytest.raises(ValueError, match="finite"):
        parse_lora_arg("a.safetensors:nan")
    with pytest.raises(ValueError, match="empty"):
        parse_lora_arg("  ")


class _StandInStream:  # CPU stand-in for a CUDA stream (as tests/acceleration/test_offload.py)
    def synchronize(self):
        pass

    def wait_stream(self, other):
        pass

    def wait_event(self, event):  # the group-offload streamer orders copies by events
        pass

    def record_event(self, event=None):
        return None


@torch.no_grad()
def test_fused_lora_then_group_offload_and_not_after(truth, tmp_path, monkeypatch):
    from longvie.acceleration.offload import apply_group_offload

    stream = _StandInStream()
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self.clone())
    monkeypatch.setattr(torch.cpu, "current_stream", lambda *a: stream)
    path, _, _ = write_format("control", tmp_path, truth)
    transformer = build_tiny_transformer(0)
    model = LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()
    load_loras(model, [LoraSpec(path, 0.9)])
    expected = model(**make_inputs())
    apply_group_offload(model, torch.device("cpu"), stream=stream)  # the pipeline's order: LoRA, then offload
    torch.testing.assert_close(model(**make_inputs()), expected, rtol=0, atol=0)
    with pytest.raises(LoraError, match="before enabling offload"):
        load_loras(model, [path])
