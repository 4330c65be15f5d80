"""DeepSpeed-side training helpers, checked without DeepSpeed: release-only saves, float32 modules kept,
one clipping setting, the CPU Adam check and ranks loading in turns."""
from __future__ import annotations

import types

import pytest
import torch

from longvie.acceleration.memory import cast_as_loaded
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer
from longvie.train import runtime, zero


def tiny_denoiser():
    transformer = build_tiny_transformer()
    return LongVieDenoiser(transformer, build_tiny_control(transformer))


class FakeAccelerator:
    """What the helpers read from accelerate: process layout, distributed type, DeepSpeed config."""

    def __init__(self, main=True, processes=1, local_index=0, deepspeed=None):
        from accelerate.utils import DistributedType

        self.is_main_process = main
        self.num_processes = processes
        self.local_process_index = local_index
        self.process_index = local_index
        self.distributed_type = DistributedType.DEEPSPEED if deepspeed is not None else DistributedType.NO
        self.state = types.SimpleNamespace(deepspeed_plugin=types.SimpleNamespace(deepspeed_config=deepspeed))
        self.barriers = 0

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self):
        self.barriers += 1


def test_release_tensors_copy_only_what_the_release_files_hold():
    denoiser = tiny_denoiser()
    trainable = {"transformer.blocks.0.attn1.to_q.weight"}
    saved = zero.release_tensors(FakeAccelerator(), denoiser, trainable)
    expected = {n for n, _ in denoiser.named_parameters() if n.startswith("control.")} | trainable
    assert set(saved) == expected
    params = dict(denoiser.named_parameters())
    for name, value in saved.items():
        assert value.device.type == "cpu" and value.data_ptr() != params[name].data_ptr()  # a copy
        torch.testing.assert_close(value, params[name].detach())
    assert zero.release_tensors(FakeAccelerator(main=False), denoiser, trainable) is None


def test_frozen_fp32_modules_survive_a_bf16_cast():
    """DeepSpeed's bf16 mode casts every module: frozen float32 modules are put back exactly."""
    denoiser = tiny_denoiser().requires_grad_(False)
    denoiser.control.requires_grad_(True)
    cast_as_loaded(denoiser.transformer, torch.bfloat16)  # as loaded: bf16 with fp32 exceptions

    def tensors():
        return {**dict(denoiser.named_parameters()), **dict(denoiser.named_buffers())}

    names = zero.fp32_module_names(denoiser)
    assert any(".time_embedder." in n for n in names) and any("scale_shift_table" in n for n in names)
    before = {n: t.detach().clone() for n, t in tensors().items()}
    with zero.keep_frozen_fp32(denoiser):
        denoiser.to(torch.bfloat16)  # what DeepSpeed's engine does in bf16 mode
    state = tensors()
    for name in names:
        if name.startswith("transformer."):  # frozen: restored bit for bit
            assert state[name].dtype == torch.float32
            assert torch.equal(state[name], before[name])
        else:  # trainable: DeepSpeed keeps the fp32 master copy; the module holds bf16
            assert state[name].dtype == torch.bfloat16


def test_one_clipping_setting_goes_to_deepspeed():
    accelerator = FakeAccelerator(deepspeed={"gradient_clipping": 1.0})
    zero.configure_deepspeed(accelerator, {"max_grad_norm": 0.5})
    assert accelerator.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] == 0.5
    zero.configure_deepspeed(accelerator, {"max_grad_norm": None})
    assert accelerator.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] == 0.0


def test_cpu_adam_needs_a_prebuilt_op_or_a_compiler(monkeypatch):
    assert zero.cpu_adam_problem({"cpu_adam": True}, which=lambda name: None) is None
    assert "C++ compiler" in zero.cpu_adam_problem({"cpu_adam": False}, which=lambda name: None)
    monkeypatch.setattr(zero.importlib.util, "find_spec", lambda name: None)
    assert "ninja" in zero.cpu_adam_problem({}, which=lambda name: "/usr/bin/c++" if name == "c++" else None)
    assert zero.cpu_adam_problem({}, which=lambda name: f"/usr/bin/{name}") is None
    offload = FakeAccelerator(deepspeed={"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    monkeypatch.setattr(zero, "cpu_adam_problem", lambda: "no C++ compiler ('c++' not found on PATH)")
    with pytest.raises(RuntimeError, match="DS_BUILD_CPU_ADAM=1"):
        zero.check_cpu_adam(offload)
    zero.check_cpu_adam(FakeAccelerator(deepspeed={"zero_optimization": {}}))  # no offload: nothing needed


def test_ranks_of_a_node_load_in_turns(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    order = []
    for rank in range(4):
        accelerator = FakeAccelerator(processes=4, local_index=rank)
        result = runtime.load_in_turns(accelerator, lambda: order.append(rank) or rank, at_once=2)
        assert result == rank
        assert accelerator.barriers == 2  # two turns of two ranks, a barrier after each
    assert order == [0, 1, 2, 3]
    single = FakeAccelerator()
    assert runtime.load_in_turns(single, lambda: "loaded") == "loaded" and single.barriers == 0


def test_keep_frozen_fp32_is_refused_under_zero3_before_loading(monkeypatch):
    """ZeRO-3 partitions the parameters keep_frozen_fp32 would put back whole: refused in make_accelerator
    (before any model loads), with the config key and the fix; allowed with the key off, and under ZeRO-2."""
    zero3 = FakeAccelerator(deepspeed={"zero_optimization": {"stage": 3}})
    with pytest.raises(ValueError, match=r"train\.keep_frozen_fp32.*ZeRO-3.*deepspeed_zero2_8gpu\.yaml.*"
                                         r"--set train\.keep_frozen_fp32=false"):
        zero.check_keep_frozen_fp32(zero3, {"keep_frozen_fp32": True})
    zero.check_keep_frozen_fp32(zero3, {"keep_frozen_fp32": False})
    zero.check_keep_frozen_fp32(FakeAccelerator(deepspeed={"zero_optimization": {"stage": 2}}), {})
    zero.check_keep_frozen_fp32(FakeAccelerator(), {"keep_frozen_fp32": True})

    import accelerate

    from longvie.train import trainer
    from longvie.train.config import load_train_config

    class ZeRO3Accelerator(FakeAccelerator):
        def __init__(self, gradient_accumulation_steps=1, **_):
            super().__init__(deepspeed={"zero_optimization": {"stage": 3}})
            self.gradient_accumulation_steps = gradient_accumulation_steps

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(accelerate, "Accelerator", ZeRO3Accelerator)
    monkeypatch.setattr(trainer, "build_denoiser", loaded)
    monkeypatch.setattr(runtime, "build_encoder", loaded)
    config = load_train_config(stage=1)
    assert config["train"]["keep_frozen_fp32"] is True
    with pytest.raises(ValueError, match="ZeRO-3"):
        trainer.train(config)


def test_float32_buffers_survive_a_bf16_cast_too():
    """DeepSpeed before 0.18 casts buffers as well: the RoPE tables come back in float32."""
    denoiser = tiny_denoiser().requires_grad_(False)
    buffers = {n: b.detach().clone() for n, b in denoiser.named_buffers() if b.dtype == torch.float32}
    assert any("rope" in n for n in buffers)
    with zero.keep_frozen_fp32(denoiser):
        denoiser.to(torch.bfloat16)
    for name, buffer in denoiser.named_buffers():
        if name in buffers:
            assert buffer.dtype == torch.float32 and torch.equal(buffer, buffers[name]), name


def test_keep_frozen_fp32_must_be_a_boolean():
    from longvie.train.config import load_train_config

    with pytest.raises(ValueError, match="train.keep_frozen_fp32"):
        load_train_config(stage=1, overrides={"train.keep_frozen_fp32": "yes"})
