"""Group offload sits on the denoiser: every block is its own streamed group and prefetch is active."""
from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from tiny_inputs import make_inputs

from longvie.acceleration.offload import apply_group_offload, enable_offload, group_offload_state
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


class StandInStream:
    """CPU stand-in for a CUDA stream: counts the synchronisations the hooks ask for."""

    def __init__(self):
        self.synchronizations = 0

    def synchronize(self):
        self.synchronizations += 1

    def wait_stream(self, other):
        pass


@pytest.fixture
def cpu_stream(monkeypatch):
    stream = StandInStream()
    # Pinning needs a GPU driver: a copy stands in. The hooks' "current stream" is the stand-in too.
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self.clone())
    monkeypatch.setattr(torch.cpu, "current_stream", lambda *a: stream)
    return stream


def test_prefetch_active_on_the_tiny_denoiser(cpu_stream):
    transformer = build_tiny_transformer()
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()
    reference = copy.deepcopy(denoiser)
    blocks = len(transformer.blocks) + 2 * denoiser.control.depth
    with torch.no_grad():
        expected = reference(**make_inputs())
        apply_group_offload(denoiser, torch.device("cpu"), stream=cpu_stream)
        before = group_offload_state(denoiser)
        first = denoiser(**make_inputs())
        after = group_offload_state(denoiser)
        second = denoiser(**make_inputs())
    assert before == {"lazy_hooks": 1, "block_groups": blocks, "prefetching": 0, "streamed": blocks}
    # Traced at the first call: no lazy hook left, the root and every block but the last prefetch the next one.
    assert after == {"lazy_hooks": 0, "block_groups": blocks, "prefetching": blocks, "streamed": blocks}
    assert cpu_stream.synchronizations > 0
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)


def test_hooks_are_on_the_modules_whose_forward_runs(cpu_stream):
    transformer = build_tiny_transformer()
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer))
    apply_group_offload(denoiser, torch.device("cpu"), stream=cpu_stream)
    # The transformer's and control branch's own forward never runs: nothing may hang on them.
    assert getattr(denoiser.transformer, "_diffusers_hook", None) is None
    assert getattr(denoiser.control, "_diffusers_hook", None) is None
    assert denoiser._diffusers_hook.get_hook("group_offloading") is not None


def test_enable_offload_refuses_an_unindexed_cuda_device():
    with pytest.raises(ValueError, match="indexed CUDA"):
        enable_offload(mock.Mock(), "group", torch.device("cuda"))
    with pytest.raises(ValueError, match="offload must be one of"):
        enable_offload(mock.Mock(), "leaf", torch.device("cpu"))


def test_fp8_storage_streams_under_group_offload(cpu_stream):
    """The 24 GB mode (FP8 storage + block-level group offload) composes: the offloaded FP8 denoiser gives
    exactly the FP8 denoiser's output, and the blocks it streams hold FP8 weights. (The reference is built
    again from the same seed: a deepcopy of a module carrying diffusers hooks keeps hooks bound to the
    original's modules.)"""
    from longvie.acceleration.fp8 import apply_fp8_storage

    def fp8_denoiser():
        torch.manual_seed(0)
        transformer = build_tiny_transformer()
        denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()
        apply_fp8_storage(denoiser, compute_dtype=torch.float32)
        return denoiser

    reference, denoiser = fp8_denoiser(), fp8_denoiser()
    with torch.no_grad():
        expected = reference(**make_inputs())
        apply_group_offload(denoiser, torch.device("cpu"), stream=cpu_stream)
        first = denoiser(**make_inputs())
        second = denoiser(**make_inputs())
    assert group_offload_state(denoiser)["prefetching"] > 0
    assert denoiser.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
