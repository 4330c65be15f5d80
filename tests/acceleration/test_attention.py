"""Attention backend selection never picks a kernel that cannot run; SDPA is held to fused kernels on CUDA."""
from __future__ import annotations

import pytest
import torch

from longvie.acceleration import attention
from longvie.acceleration.attention import (
    AttentionChoice,
    apply_attention,
    install_fused_sdpa_guard,
    remove_fused_sdpa_guard,
    select_attention_backend,
)

CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, and a flash-attn that diffusers does or does not accept."""
    state = {"capability": (8, 0), "flash_usable": True, "flash3_usable": False, "cudnn_runs": False}
    monkeypatch.setattr(attention, "_capability", lambda device: state["capability"])
    monkeypatch.setattr(attention, "_cudnn_attention_runs",
                        lambda device, dtype: (True, "") if state["cudnn_runs"] else (False, "cuDNN attention fails"))
    real = attention.diffusers_backend_usable

    def usable(backend):
        if backend == "flash":
            return (True, "") if state["flash_usable"] else (False, "flash-attn 2.5.0 is older than 2.6.3")
        if backend == "_flash_3":
            return (True, "") if state["flash3_usable"] else (False, "please build FA3 from source")
        return real(backend)

    monkeypatch.setattr(attention, "diffusers_backend_usable", usable)
    return state


def test_auto_picks_flash_only_when_everything_allows_it(fake_gpu):
    choice = select_attention_backend("auto", CUDA, torch.bfloat16)
    assert choice.backend == "flash" and not choice.fused_sdpa_only


@pytest.mark.parametrize("case, expected_reason", [
    ("flash unusable", "diffusers reports flash-attn unusable"),
    ("old GPU", "compute capability >= 8.0"),
    ("float32", "float16/bfloat16"),
])
def test_auto_falls_back_to_guarded_sdpa(fake_gpu, case, expected_reason):
    dtype = torch.bfloat16
    if case == "flash unusable":
        fake_gpu["flash_usable"] = False
    elif case == "old GPU":
        fake_gpu["capability"] = (7, 5)  # Turing (T4)
    else:
        dtype = torch.float32
    choice = select_attention_backend("auto", CUDA, dtype)
    assert choice.backend == "native"
    assert expected_reason in choice.reason
    assert choice.fused_sdpa_only  # on CUDA the math kernel is never allowed
    assert "native" in choice.describe()


def test_cpu_uses_sdpa_without_guard():
    choice = select_attention_backend("auto", "cpu", torch.bfloat16)
    assert choice == AttentionChoice("native", choice.reason, False)
    assert "CUDA" in choice.reason


def test_explicit_backend_that_cannot_run_fails_before_loading(fake_gpu):
    fake_gpu["flash_usable"] = False
    with pytest.raises(ValueError, match="cannot run here"):
        select_attention_backend("flash", CUDA, torch.bfloat16)
    fake_gpu["flash_usable"] = True
    with pytest.raises(ValueError, match="float16/bfloat16"):
        select_attention_backend("flash", CUDA, torch.float32)
    fake_gpu["capability"] = (7, 0)
    with pytest.raises(ValueError, match="compute capability"):
        select_attention_backend("flash", CUDA, torch.float16)
    with pytest.raises(ValueError, match="no attention backend"):
        select_attention_backend("flashy", CUDA, torch.float16)


def test_diffusers_reports_flash_from_its_own_check(monkeypatch):
    from diffusers.models import attention_dispatch

    monkeypatch.setattr(attention_dispatch, "_CAN_USE_FLASH_ATTN", False)
    usable, why = attention.diffusers_backend_usable("flash")
    assert not usable and "2.6.3" in why
    monkeypatch.setattr(attention_dispatch, "_CAN_USE_FLASH_ATTN", True)
    assert attention.diffusers_backend_usable("flash") == (True, "")


class _Attend(torch.nn.Module):
    def forward(self, q):
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_fused_guard_refuses_a_kernel_that_cannot_run():
    """With the guard installed, SDPA raises instead of falling back; removed, it runs again.

    On this CPU only the math kernel and the CPU flash kernel exist, so restricting to the
    memory-efficient kernel (CUDA-only) stands in for "no fused kernel accepts these inputs"."""
    module, q = _Attend(), torch.randn(1, 2, 8, 4)
    expected = module(q)
    install_fused_sdpa_guard(module, kernels=("EFFICIENT_ATTENTION",))
    with pytest.raises(RuntimeError):
        module(q)
    remove_fused_sdpa_guard(module)
    torch.testing.assert_close(module(q), expected)


def test_apply_attention_on_the_tiny_denoiser(tiny_pipeline):
    denoiser = tiny_pipeline.denoiser
    try:
        apply_attention(denoiser, AttentionChoice("native", "test", fused_sdpa_only=True))
        assert isinstance(denoiser.forward, attention._FusedSdpaHook)
    finally:
        apply_attention(denoiser, AttentionChoice("native", "test", fused_sdpa_only=False))
    assert not isinstance(denoiser.forward, attention._FusedSdpaHook)
    assert tiny_pipeline.attention_choice.backend == "native"


@pytest.mark.parametrize("flash3, cudnn, expected", [
    (True, True, "_flash_3"),
    (False, True, "_native_cudnn"),
    (False, False, "flash"),        # neither runs: flash-attn 2 as on other GPUs
])
def test_hopper_prefers_flash_attention_3_then_cudnn(fake_gpu, flash3, cudnn, expected):
    fake_gpu.update(capability=(9, 0), flash3_usable=flash3, cudnn_runs=cudnn)
    for sequence_parallel in (False, True):  # both run under LongVie's sequence parallelism
        choice = select_attention_backend("auto", CUDA, torch.bfloat16, sequence_parallel=sequence_parallel)
        assert choice.backend == expected and not choice.fused_sdpa_only
    fake_gpu["capability"] = (8, 0)  # an A100 keeps flash-attn 2
    assert select_attention_backend("auto", CUDA, torch.bfloat16).backend == "flash"


def test_sequence_parallelism_refuses_only_backends_that_cannot_run_there(fake_gpu, monkeypatch):
    """The answer is parallel.py's (one place knows how each backend runs sequence-parallel)."""
    from longvie.acceleration import parallel

    assert attention.supports_sequence_parallel("native") == (True, "")
    assert attention.supports_sequence_parallel("_flash_3") == (True, "")
    ok, why = attention.supports_sequence_parallel("_native_npu")
    assert not ok and why == parallel.sequence_parallel_backend_support("_native_npu")[1]
    monkeypatch.setattr(parallel, "sequence_parallel_backend_support",
                        lambda backend: (backend != "_flash_3", "no sequence-parallel path for _flash_3"))
    fake_gpu.update(capability=(9, 0), flash3_usable=True, cudnn_runs=True)
    assert select_attention_backend("auto", CUDA, torch.bfloat16, sequence_parallel=True).backend == "_native_cudnn"
    assert select_attention_backend("_flash_3", CUDA, torch.bfloat16).backend == "_flash_3"
    with pytest.raises(ValueError, match="no sequence-parallel path"):
        select_attention_backend("_flash_3", CUDA, torch.bfloat16, sequence_parallel=True)


def test_benchmark_backends_on_the_cpu():
    rows = dict(attention.benchmark_backends("cpu", torch.float32))
    assert rows["native"] == "" and rows["flash"] and rows["_native_cudnn"]
