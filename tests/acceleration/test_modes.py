"""acceleration.modes: every request is planned against the device before loading (refusals are one sentence), and
apply_modes applies LoRA -> FP8 -> offload -> compile -> step cache -> attention and records what ran."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_inputs import make_inputs
from torch import nn

from longvie.acceleration.modes import DeviceInfo, ModeError, ModeRequest, apply_modes, plan_modes
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


@pytest.fixture(scope="module")
def cpu():
    return DeviceInfo.probe("cpu", torch.float32)


def tiny_denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()


@pytest.mark.parametrize("request_, message", [
    (ModeRequest(offload="leaf"), "offload must be one of none, model, group"),
    (ModeRequest(fp8="int4"), "fp8 must be one of"),
    (ModeRequest(step_cache="sometimes"), "step cache kind"),
    (ModeRequest(attention="flash"), "attention backend 'flash'"),
    (ModeRequest(attention="nonsense"), "no attention backend"),
])
def test_impossible_requests_are_refused_with_one_sentence(cpu, request_, message):
    with pytest.raises(ModeError, match=message) as error:
        plan_modes(request_, cpu)
    assert "\n" not in str(error.value)


def test_compile_without_a_code_generator_is_refused(cpu):
    no_compiler = dataclasses.replace(cpu, inductor="no C++ compiler (g++/clang++) on PATH")
    with pytest.raises(ModeError, match=r"inductor cannot generate code for cpu here \(no C\+\+ compiler"):
        plan_modes(ModeRequest(compile=True), no_compiler)
    from longvie.acceleration.compile import CompileConfig

    assert plan_modes(ModeRequest(compile=True, compile_config=CompileConfig(backend="eager")), no_compiler).compile
    graphs = ModeRequest(offload="group", compile=True, compile_config=CompileConfig(mode="reduce-overhead"),
                         offload_stream=torch.cpu.Stream())
    with pytest.raises(ModeError, match="records CUDA graphs, which keep the weights' addresses"):
        plan_modes(graphs, cpu)


def test_fp8_auto_picks_gemm_only_where_the_device_runs_it(cpu):
    assert plan_modes(ModeRequest(fp8=True), cpu).fp8 == "weight-only"  # the CPU twin
    assert cpu.fp8_gemm and plan_modes(ModeRequest(fp8="gemm"), cpu).fp8 == "gemm"  # runs there when asked
    old_gpu = dataclasses.replace(cpu, fp8_gemm=False, fp8_gemm_reason="FP8 GEMMs need compute capability >= 8.9",
                                  name="Tesla T4", device=torch.device("cuda", 0))
    with pytest.raises(ModeError, match=r"fp8 'gemm' cannot run on Tesla T4 \(cuda:0\): FP8 GEMMs need"):
        plan_modes(ModeRequest(fp8="gemm", attention="native"), old_gpu)
    hopper = dataclasses.replace(cpu, device=torch.device("cuda", 0), dtype=torch.bfloat16, fp8_gemm=True,
                                 fp8_gemm_reason="", capability=(9, 0), name="H100")
    plan = plan_modes(ModeRequest(fp8="on", attention="native"), hopper)
    assert plan.fp8 == "gemm" and plan.settings() == {"fp8": True, "fp8_kind": "gemm", "step_cache": None,
                                                      "step_cache_threshold": None}
    ampere = dataclasses.replace(hopper, fp8_gemm=False, fp8_gemm_reason="FP8 GEMMs need compute capability >= 8.9")
    plan = plan_modes(ModeRequest(fp8=True, attention="native"), ampere)
    assert plan.fp8 == "weight-only" and "8.9" in plan.fp8_reason
    assert plan_modes(ModeRequest(fp8=False), cpu).fp8 is None


def test_offload_on_a_cpu_runs_in_place_unless_a_stand_in_stream_is_given(cpu):
    plan = plan_modes(ModeRequest(offload="group"), cpu)
    assert plan.offload == "none" and "nothing to offload" in plan.describe()
    assert plan_modes(ModeRequest(offload="group", offload_stream=torch.cpu.Stream()), cpu).offload == "group"


@torch.no_grad()
def test_apply_modes_quantises_before_streaming_and_records_what_ran(cpu):
    from longvie.acceleration.fp8 import apply_fp8

    reference = tiny_denoiser()
    apply_fp8(reference, "weight-only")
    denoiser = tiny_denoiser()
    plan = plan_modes(ModeRequest(offload="group", fp8=True, step_cache="firstblock",
                                  offload_stream=torch.cpu.Stream()), cpu)
    record = apply_modes(denoiser, plan)
    assert denoiser.mode_record is record
    assert record.offload == "group" and record.offload_detail["units"] == 4 and record.fp8 == "weight-only"
    assert record.fp8_layers == 96 and record.fp8_modules["transformer.blocks.*"]["layers"] == 48
    assert record.step_cache == {"kind": "firstblock", "threshold": 0.05} and record.attention == "native"
    assert record.compiled == {}
    assert denoiser.transformer.blocks[1].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(denoiser(**make_inputs()), reference(**make_inputs()), rtol=0, atol=0)
    assert set(record.as_dict()) >= {"offload", "fp8", "fp8_modules", "compiled", "attention", "step_cache", "loras"}


@torch.no_grad()
def test_fp8_is_quantised_layer_by_layer_on_the_device_before_anything_else_moves(cpu, monkeypatch):
    """Loading straight into FP8: with offload "none" each block Linear is quantised on the compute device and
    kept there, while every not-yet-converted weight is still on the host (the meta device stands in for the
    GPU: its tensors hold shapes only)."""
    from longvie.acceleration.fp8 import FP8Linear

    gpu = dataclasses.replace(cpu, device=torch.device("meta"), name="stand-in GPU")
    denoiser = tiny_denoiser()
    seen, real = [], FP8Linear.from_linear

    def spy(linear, kind="weight-only", work_device=None, keep_device=None):
        plain_on_device = [m for m in denoiser.modules() if type(m) is nn.Linear and m.weight.device.type == "meta"]
        seen.append((len(plain_on_device), linear.weight.device.type, str(work_device), str(keep_device)))
        return real(linear, kind, work_device, keep_device)

    monkeypatch.setattr(FP8Linear, "from_linear", spy)
    record = apply_modes(denoiser, plan_modes(ModeRequest(fp8="weight-only", attention="native"), gpu))
    assert len(seen) == record.fp8_layers == 96
    assert all(entry == (0, "cpu", "meta", "meta") for entry in seen)
    assert {t.device.type for t in [*denoiser.parameters(), *denoiser.buffers()]} == {"meta"}  # then placed


def test_loras_are_fused_before_fp8(cpu, tmp_path, monkeypatch):
    """Runs once longvie.weights.lora exists (helper "speed"): load_loras is called first, on plain Linear
    weights, and its records go into the ModeRecord."""
    lora = pytest.importorskip("longvie.weights.lora")
    calls = []

    def fake_load_loras(denoiser, specs, fuse=True):
        calls.append((type(denoiser.transformer.blocks[0].attn1.to_q), list(specs), fuse))
        return [{"path": str(s.path), "sha256": "0" * 64, "scale": s.scale} for s in specs]

    monkeypatch.setattr(lora, "load_loras", fake_load_loras)
    path = tmp_path / "distill.safetensors"
    path.write_bytes(b"not read by the fake")
    spec = lora.LoraSpec(path, 0.5)
    plan = plan_modes(ModeRequest(fp8=True, loras=(spec,)), cpu)
    record = apply_modes(tiny_denoiser(), plan)
    assert calls == [(nn.Linear, [spec], True)]
    assert record.loras == [{"path": str(path), "sha256": "0" * 64, "scale": 0.5}] and record.fp8 == "weight-only"
    with pytest.raises(ModeError, match="unfused LoRAs cannot run on FP8"):
        plan_modes(ModeRequest(fp8=True, loras=(spec,), fuse_loras=False), cpu)
    with pytest.raises(ModeError, match="not found"):
        plan_modes(ModeRequest(loras=(lora.LoraSpec(tmp_path / "missing.safetensors", 1.0),)), cpu)


def test_the_python_api_plans_before_loading_and_applies_the_modes(tiny_checkpoints, tmp_path):
    from longvie.sampling.pipeline import LongViePipeline

    with pytest.raises(ModeError, match="step cache kind"):  # refused before the (missing) weights are read
        LongViePipeline.from_pretrained(tmp_path / "nothing", tmp_path / "nothing", torch_dtype=torch.float32,
                                        device="cpu", modes=ModeRequest(step_cache="sometimes"))
    pipe = LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.float32, device="cpu",
                                           modes=ModeRequest(fp8=True, step_cache="firstblock"))
    assert pipe.mode_record.fp8 == "weight-only" and pipe.mode_record.fp8_layers == 96
    assert pipe.default_step_cache.kind == "firstblock" and pipe.attention_choice.backend == "native"
    rng = torch.Generator().manual_seed(0)
    video = (torch.rand(5, 32, 48, 3, generator=rng) * 255).to(torch.uint8).numpy()
    kwargs = dict(num_frames=5, height=32, width=48, num_inference_steps=4, progress=False)
    cached, _ = pipe(video[0], "a test", video, video, **kwargs)
    calls = []
    pipe.denoiser.register_forward_pre_hook(lambda m, a: calls.append(1))
    plain, _ = pipe(video[0], "a test", video, video, step_cache=False, **kwargs)
    assert cached.shape == plain.shape == (5, 32, 48, 3) and len(calls) == 8  # 4 steps x 2 guidance branches
