"""Group offload streams the blocks from host slabs pinned once: same output, the root stays on the device, the
copies are counted (and only blocks that run are copied), and nothing in the block loop synchronises the host."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
from tiny_inputs import make_inputs

from longvie.acceleration import offload
from longvie.acceleration.offload import (
    ALIGN,
    apply_group_offload,
    enable_offload,
    group_offload_state,
    stream_units,
)
from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


class StandInStream:
    """CPU stand-in for the copy stream: counts host synchronisations and the events it is asked to wait on."""

    def __init__(self):
        self.synchronizations, self.waits, self.records = 0, 0, 0

    def synchronize(self):
        self.synchronizations += 1

    def wait_event(self, event):
        self.waits += 1

    def wait_stream(self, other):
        pass

    def record_event(self, event=None):
        self.records += 1
        return object()


@pytest.fixture
def traffic(monkeypatch):
    """Counts every host->device copy (bytes per call), every host allocation and every host synchronisation."""
    counts = {"copied": [], "allocations": 0, "syncs": 0}
    real_copy, real_allocate = offload._device_copy, offload._allocate_host

    def copy_(dst, src):
        counts["copied"].append(src.numel() * src.element_size())
        real_copy(dst, src)

    def allocate(nbytes, pin):
        counts["allocations"] += 1
        return real_allocate(nbytes, False)  # pinning needs a CUDA driver

    def sync(*args, **kwargs):
        counts["syncs"] += 1

    monkeypatch.setattr(offload, "_device_copy", copy_)
    monkeypatch.setattr(offload, "_allocate_host", allocate)
    monkeypatch.setattr(torch.cpu, "synchronize", sync)
    compute = StandInStream()
    monkeypatch.setattr(torch.cpu, "current_stream", lambda *a, **k: compute)
    monkeypatch.setattr(torch.cpu, "stream", lambda s: mock.MagicMock())
    counts["compute"] = compute
    return counts


def tiny_denoiser(seed=0):
    torch.manual_seed(seed)
    transformer = build_tiny_transformer(seed)
    return LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()


def unit_bytes_unpadded(denoiser) -> list[int]:
    """Independent count: bytes of every parameter and buffer of each unit's blocks."""
    totals = []
    for unit in stream_units(denoiser):
        tensors = {id(t): t for block in unit for t in [*block.parameters(), *block.buffers()]}
        totals.append(sum(t.numel() * t.element_size() for t in tensors.values()))
    return totals


@torch.no_grad()
def test_streamed_blocks_give_the_exact_output_and_copy_each_block_once_per_call(traffic):
    denoiser, reference = tiny_denoiser(), tiny_denoiser()
    expected_bytes = unit_bytes_unpadded(denoiser)
    tensors_per_unit = [len({id(t) for b in u for t in [*b.parameters(), *b.buffers()]}) for u in stream_units(denoiser)]
    expected = reference(**make_inputs())
    stream = StandInStream()
    streamer = apply_group_offload(denoiser, torch.device("cpu"), stream=stream)
    allocations = traffic["allocations"]
    assert group_offload_state(denoiser) == {"units": 4, "slots": 2, "resident": [], "root_on_device": True}
    # the transformer's and control branch's own forward never runs: nothing may hang on them or on the blocks
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in denoiser.transformer.modules())

    for call in range(3):
        traffic["copied"].clear()
        out = denoiser(**make_inputs())
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        copied = sum(traffic["copied"])
        # every unit once: its tensors plus at most ALIGN bytes of padding between two of them
        assert sum(expected_bytes) <= copied <= sum(expected_bytes) + ALIGN * sum(tensors_per_unit)
        assert streamer.stats()["calls"] == call + 1
    assert streamer.stats()["bytes_per_call"] == copied and streamer.stats()["units_run"] == 12
    # pinned once: no host allocation after set-up, no host synchronisation, every copy ordered by events
    assert traffic["allocations"] == allocations and traffic["syncs"] == 0
    assert stream.synchronizations == 0 and traffic["compute"].synchronizations == 0
    assert traffic["compute"].waits == 12 and stream.waits >= 10  # 4 units x 3 calls; slot reuse after the first
    # between calls the blocks point at their host copies or a device slot, and the root stays on the device
    assert group_offload_state(denoiser)["resident"] == [2, 3] and group_offload_state(denoiser)["root_on_device"]


@torch.no_grad()
def test_only_the_blocks_a_range_runs_are_copied(traffic):
    """A block stack that runs block 0 and then blocks 2..3 (block 1 skipped, as a step cache skips): block 1 is
    never copied (no prefetch outside the range); a call that runs only block 0 while it is still in a slot
    copies nothing."""
    denoiser = tiny_denoiser()
    units = unit_bytes_unpadded(denoiser)
    streamer = apply_group_offload(denoiser, torch.device("cpu"), stream=StandInStream())
    runs = []

    def skip_block_1(run, state, num_blocks):
        runs.append("0-1, 2-4")
        return run(run(state, 0, 1), 2, num_blocks)

    def first_block_only(run, state, num_blocks):
        return run(state, 0, 1)

    inputs, cache = make_inputs(), ClipCache()
    traffic["copied"].clear()
    denoiser(**inputs, clip_cache=cache, block_stack=skip_block_1)
    copied = sum(traffic["copied"])
    assert units[0] + units[2] + units[3] <= copied < units[0] + units[1] + units[2] + units[3]
    assert group_offload_state(denoiser)["resident"] == [2, 3]
    traffic["copied"].clear()
    denoiser(**inputs, clip_cache=cache, block_stack=first_block_only)  # block 0 evicted: copied again
    assert units[0] <= sum(traffic["copied"]) < units[0] + units[1]
    traffic["copied"].clear()
    denoiser(**inputs, clip_cache=cache, block_stack=first_block_only)  # block 0 still in a slot: nothing
    assert traffic["copied"] == []
    assert streamer.stats()["calls"] == 3


@pytest.mark.parametrize("kind", ["weight-only", "gemm"])
@torch.no_grad()
def test_fp8_blocks_stream_at_one_byte_per_weight(traffic, kind):
    """FP8 before offload (the order apply_modes keeps): the streamed blocks hold float8 weights at forward and the
    output equals the FP8 denoiser's (the earlier code applied offload first and ran the blocks in bf16)."""
    from longvie.acceleration.fp8 import apply_fp8

    plain, fp8, reference = tiny_denoiser(), tiny_denoiser(), tiny_denoiser()
    apply_fp8(fp8, kind)
    apply_fp8(reference, kind)
    expected = reference(**make_inputs())
    apply_group_offload(fp8, torch.device("cpu"), stream=StandInStream())
    traffic["copied"].clear()
    out = fp8(**make_inputs())
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert fp8.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert sum(traffic["copied"]) < 0.4 * sum(unit_bytes_unpadded(plain))  # fp32 -> 1 byte + a scale per row


def test_the_block_loop_only_orders_by_events():
    """The streamer's loop calls no synchronize (a static check of the code: every host sync would be one of
    these names)."""
    import inspect

    source = inspect.getsource(offload.BlockStreamer.run) + inspect.getsource(offload.BlockStreamer._load)
    for call in (".synchronize(", ".item(", ".tolist(", ".cpu(", "torch.cuda.synchronize"):
        assert call not in source


def test_enable_offload_refuses_bad_arguments():
    with pytest.raises(ValueError, match="indexed CUDA"):
        enable_offload(mock.Mock(), "group", torch.device("cuda"))
    with pytest.raises(ValueError, match="offload must be one of"):
        enable_offload(mock.Mock(), "leaf", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA onload device"):
        apply_group_offload(tiny_denoiser(), torch.device("cpu"))
    denoiser = tiny_denoiser()
    apply_group_offload(denoiser, torch.device("cpu"), stream=StandInStream())
    with pytest.raises(ValueError, match="already applied"):
        apply_group_offload(denoiser, torch.device("cpu"), stream=StandInStream())


def test_host_slabs_pack_units_contiguously(monkeypatch):
    """Small slabs (as 1 GiB slabs are at real size): each unit is a few contiguous runs, and a slab is allocated
    at a power of two when pinned (the pinned allocator rounds up anyway)."""
    monkeypatch.setattr(offload, "SLAB_BYTES", 64 * 1024)
    sizes = []
    monkeypatch.setattr(offload, "_allocate_host", lambda n, pin: sizes.append(n) or torch.empty(n, dtype=torch.uint8))
    denoiser, reference = tiny_denoiser(), tiny_denoiser()
    streamer = offload.BlockStreamer(denoiser, torch.device("cpu"), stream=StandInStream(), pin=True)
    assert len(sizes) > 1 and all(n & (n - 1) == 0 for n in sizes)
    # one copy per slab a unit touches (its tensors sit back to back inside a slab)
    assert all(len(runs) == len({t.slab for t in placed}) for runs, placed in zip(streamer.runs, streamer.tensors))
    packed, original = denoiser.state_dict(), reference.state_dict()  # blocks: the host copies in the slabs
    assert packed.keys() == original.keys() and all(torch.equal(packed[k].cpu(), original[k]) for k in original)
    with torch.no_grad():
        torch.testing.assert_close(denoiser(**make_inputs()), reference(**make_inputs()), rtol=0, atol=0)
