"""Memory modes of the pipeline: all on the GPU, model CPU offload, or streamed block offload ("group").

**Group offload** (:class:`BlockStreamer`, :func:`apply_group_offload`) keeps the denoiser's repeated
blocks in host memory and streams them through a few GPU slots while the blocks run:

* units: one per main block index i: main block i plus, for i < control depth, dense and sparse
  control block i (they run together: ``LongVieDenoiser.run_blocks`` runs them for index i). 40 units
  at real size; ``unit_bytes`` gives their sizes;
* host side, pinned once: at set-up every block tensor is packed into page-locked slabs of
  ``SLAB_BYTES`` (a power of two, so the pinned allocator's power-of-two rounding wastes nothing but
  the last slab's tail), each unit contiguous where it fits; the pageable originals are released.
  No pinning per call;
* device side: ``num_slots`` flat buffers of the largest unit's size (2 by default: the unit computing
  and the unit being copied); a unit is one or two ``copy_(non_blocking=True)`` of a contiguous range
  on a side stream;
* the root (everything outside the blocks: embeddings, head, adapters, RoPE tables: 0.89 GiB at real
  size) moves to the GPU once and stays;
* ordering by events only, never by host synchronisation: the compute stream waits for the copy of
  the unit it runs (``wait_event``), and the copy stream waits until the slot it overwrites is free
  (an event recorded after that slot's last use). The block loop never blocks the host;
* it follows the ranges the denoiser runs: ``run_blocks(state, start, stop)`` is wrapped, so a step
  cache that runs block 0 and skips the rest copies block 0 only (and nothing at all when block 0
  is still in a slot), and nothing outside ``start..stop-1`` is prefetched;
* ``stats()`` counts the host->device bytes and copies (per denoiser call: ``bytes_per_call``).

Why not diffusers' group offloading (used here before): its hooks synchronise the host with the copy
stream before every block, prefetch the next group in the traced order whether it will run or not,
pin each block again on every call with ``low_cpu_mem_usage`` (or pin every tensor separately,
rounded up to a power of two, without it), offload the root group after every call, and hang on the
blocks (so a compiled block would trace the hooks). The streamer above does none of these. The
encoders (umT5, CLIP) still use diffusers' whole-model offload (:func:`apply_encoder_offload`): they
run once per clip.
"""
from __future__ import annotations

import torch
from torch import nn

MODES = ("none", "model", "group")
HOST_RAM_NOTES = {
    "none": "weights live on the GPU; host RAM is only needed while loading (one shard at a time)",
    "model": "every model not in use waits in host RAM (pageable): host RAM >= all weights",
    "group": "the denoiser's blocks in pinned host RAM (packed once, ~1 GiB slabs) + the other models in "
             "pageable host RAM",
}
SLAB_BYTES = 1 << 30   # pinned slab size (a power of two)
ALIGN = 256            # byte alignment of every tensor inside a slab and a slot
DEFAULT_SLOTS = 2      # device slots: the unit computing + the unit being copied


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _allocate_host(nbytes: int, pin: bool) -> torch.Tensor:
    """One host slab (the only place host memory is allocated; tests count the calls)."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)


def _device_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """One host->device copy (the only one the streamer issues; tests count the bytes)."""
    dst.copy_(src, non_blocking=True)


def stream_units(denoiser) -> list[list[nn.Module]]:
    """The streamed units: [main block i, dense block i, sparse block i] (control blocks only for i < depth)."""
    control = denoiser.control
    units = []
    for index, block in enumerate(denoiser.transformer.blocks):
        unit = [block]
        if index < control.depth:
            unit += [control.control_blocks_dense[index], control.control_blocks_sparse[index]]
        units.append(unit)
    return units


def _unit_modules(unit: list[nn.Module]) -> list[nn.Module]:
    seen, modules = set(), []
    for top in unit:
        for module in top.modules():
            if id(module) not in seen:
                seen.add(id(module))
                modules.append(module)
    return modules


def _unit_tensors(unit: list[nn.Module]) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """(owner module, "param" | "buffer", name, tensor) of every tensor of a unit, each once."""
    seen, entries = set(), []
    for module in _unit_modules(unit):
        for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
            for name, tensor in table.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    entries.append((module, kind, name, tensor))
    return entries


def unit_bytes(denoiser) -> list[int]:
    """Bytes of each streamed unit as laid out in a device slot (works on the meta device)."""
    return [sum(_align(t.numel() * t.element_size()) for *_, t in _unit_tensors(unit)) for unit in stream_units(denoiser)]


def pack_slabs(unit_entries) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """The host layout of the streamed units: units in order, each tensor at a ``ALIGN``-aligned start,
    a new slab when the tensor does not fit in ``SLAB_BYTES`` (a tensor larger than a slab gets a slab of
    its own size). ``unit_entries``: per unit, its ``_unit_tensors``. Returns ((slab, start) of every
    tensor per unit, the bytes used in each slab)."""
    where, used = [], [0]
    for entries in unit_entries:
        placed = []
        for *_, tensor in entries:
            nbytes = tensor.numel() * tensor.element_size()
            start = _align(used[-1])
            if used[-1] and start + nbytes > max(SLAB_BYTES, nbytes):
                used.append(0)
                start = 0
            placed.append((len(used) - 1, start))
            used[-1] = start + nbytes
        where.append(placed)
    return where, used


def slab_sizes(used: list[int], pin: bool) -> list[int]:
    """Host bytes of each slab allocated for ``used`` bytes: pinned slabs are rounded up to a power of two
    (as torch's pinned host allocator rounds every allocation), pageable ones are exact."""
    return [_next_power_of_two(u) if pin else u for u in used]


def host_slab_bytes(denoiser, pin: bool = True) -> list[int]:
    """The host slabs :class:`BlockStreamer` allocates for ``denoiser`` (bytes each, in allocation order);
    works on the meta device (the memory estimator reads it)."""
    return slab_sizes(pack_slabs([_unit_tensors(unit) for unit in stream_units(denoiser)])[1], pin)


def root_bytes(denoiser) -> int:
    """Bytes of the root (every tensor outside the streamed units), which stays on the compute device."""
    return sum(t.numel() * t.element_size() for *_, t in root_tensors(denoiser))


def root_tensors(denoiser) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """Every tensor of the denoiser outside the streamed units (embeddings, head, adapters, RoPE tables)."""
    in_units = {id(m) for unit in stream_units(denoiser) for m in _unit_modules(unit)}
    entries = []
    for module in denoiser.modules():
        if id(module) in in_units:
            continue
        for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
            entries += [(module, kind, name, t) for name, t in table.items() if t is not None]
    return entries


def _bind(module: nn.Module, kind: str, name: str, tensor: torch.Tensor) -> None:
    if kind == "param":
        module._parameters[name].data = tensor
    else:
        module._buffers[name] = tensor


class _Tensor:
    """Where one block tensor lives: its owner, its host copy (slab, start) and its offset in a unit's slot."""

    __slots__ = ("module", "kind", "name", "dtype", "shape", "nbytes", "slab", "start", "offset")

    def __init__(self, module, kind, name, tensor, slab, start):
        self.module, self.kind, self.name = module, kind, name
        self.dtype, self.shape, self.nbytes = tensor.dtype, tensor.shape, tensor.numel() * tensor.element_size()
        self.slab, self.start, self.offset = slab, start, 0

    def view_of(self, buffer: torch.Tensor, at: int) -> torch.Tensor:
        return buffer[at:at + self.nbytes].view(self.dtype).view(self.shape)


class BlockStreamer:
    """Streams the denoiser's blocks from pinned host slabs through ``num_slots`` device slots (see the
    module docstring). Built by :func:`apply_group_offload`.

    Args:
        denoiser: a ``LongVieDenoiser`` (anywhere; its blocks are packed into host slabs, the rest is
            moved to ``device``).
        device: the device that computes (``cuda:N``; ``cpu`` with a stand-in stream in tests).
        stream: the copy stream; None makes one on ``device``.
        num_slots: device slots (>= 2).
        pin: page-locked host slabs; None = pin when ``device`` is CUDA.
    """

    def __init__(self, denoiser, device: torch.device, stream=None, num_slots: int = DEFAULT_SLOTS,
                 pin: bool | None = None):
        if num_slots < 2:
            raise ValueError(f"group offload needs at least 2 device slots (one computing, one copying), got {num_slots}")
        self.device = torch.device(device)
        self._streams = torch.get_device_module(self.device)
        self.copy_stream = stream if stream is not None else self._streams.Stream(device=self.device)
        self.pin = self.device.type == "cuda" if pin is None else pin
        self.units = stream_units(denoiser)

        # 1. the root: everything outside the units moves to the device once and stays
        self.root_bytes = 0
        for module, kind, name, tensor in root_tensors(denoiser):
            self.root_bytes += tensor.numel() * tensor.element_size()
            if tensor.device != self.device:
                _bind(module, kind, name, tensor.to(self.device))

        # 2. host layout (pack_slabs): units in order, each tensor aligned; a new slab when the current one is full
        unit_entries = [_unit_tensors(unit) for unit in self.units]
        layout, used = pack_slabs(unit_entries)
        self.tensors: list[list[_Tensor]] = [
            [_Tensor(module, kind, name, tensor, slab, start)
             for (module, kind, name, tensor), (slab, start) in zip(entries, placed)]
            for entries, placed in zip(unit_entries, layout)]
        sizes = slab_sizes(used, self.pin)
        self.slabs: list[torch.Tensor | None] = [None] * len(sizes)  # allocated as packing reaches them
        self.pinned_bytes = sum(sizes) if self.pin else 0
        self.host_bytes = sum(sizes)

        # 3. pack: copy each block tensor into its slab, point the module at the host copy (the pageable
        #    original is released at once, so host RAM holds the originals not yet packed + the slabs filled);
        #    a unit is a few contiguous runs (slab, slab start, unit offset, bytes)
        self.runs: list[list[list[int]]] = []
        self.unit_sizes = []
        for entries, placed in zip(unit_entries, self.tensors):
            runs = []
            for (module, kind, name, tensor), where in zip(entries, placed):
                if self.slabs[where.slab] is None:
                    self.slabs[where.slab] = _allocate_host(max(sizes[where.slab], 1), self.pin)
                host = where.view_of(self.slabs[where.slab], where.start)
                host.copy_(tensor.detach())
                _bind(module, kind, name, host)
                if not runs or runs[-1][0] != where.slab:
                    runs.append([where.slab, where.start, _align(runs[-1][2] + runs[-1][3]) if runs else 0, 0])
                run = runs[-1]
                where.offset = run[2] + where.start - run[1]
                run[3] = where.start + where.nbytes - run[1]
            self.runs.append(runs)
            self.unit_sizes.append(runs[-1][2] + runs[-1][3] if runs else 0)
        del unit_entries

        # 4. device slots
        self.slot_bytes = _align(max(self.unit_sizes, default=0))
        self.slots = [torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(num_slots)]
        self.holder: list[int | None] = [None] * num_slots   # unit held by each slot
        self.loaded = [None] * num_slots                      # event: the slot's copy finished
        self.free = [None] * num_slots                        # event: the slot's last use finished
        self.last_use = [0] * num_slots
        self._clock = 0
        self._views: dict[tuple[int, int], list[torch.Tensor]] = {}
        self.block_bytes = sum(t.nbytes for placed in self.tensors for t in placed)
        self.reset_stats()

    # ------------------------------------------------------------------ accounting
    def reset_stats(self) -> None:
        self.calls, self.bytes_copied, self.copies, self.units_run = 0, 0, 0, 0

    def begin_call(self) -> None:
        self.calls += 1

    def stats(self) -> dict:
        """Host->device traffic since the last :meth:`reset_stats`."""
        return {"calls": self.calls, "bytes": self.bytes_copied, "copies": self.copies, "units_run": self.units_run,
                "bytes_per_call": self.bytes_copied / self.calls if self.calls else 0.0}

    def describe(self) -> dict:
        return {"units": len(self.units), "slots": len(self.slots), "slot_bytes": self.slot_bytes,
                "block_bytes": self.block_bytes, "root_bytes": self.root_bytes, "pinned_bytes": self.pinned_bytes,
                "host_slab_bytes": self.host_bytes}

    # ------------------------------------------------------------------ streaming
    def _release(self, slot: int) -> None:
        """Point the previous holder's tensors back at their host copies (the slot is about to be reused)."""
        unit = self.holder[slot]
        if unit is not None:
            for t in self.tensors[unit]:
                _bind(t.module, t.kind, t.name, t.view_of(self.slabs[t.slab], t.start))
            self.holder[slot] = None

    def _load(self, unit: int, keep: int | None) -> int:
        """Make ``unit`` resident (a hit costs nothing); never evicts slot ``keep``. Returns its slot."""
        slot = next((s for s, held in enumerate(self.holder) if held == unit), None)
        if slot is None:
            candidates = [s for s in range(len(self.slots)) if s != keep]
            slot = min(candidates, key=lambda s: (self.holder[s] is not None, self.last_use[s]))
            self._release(slot)
            with self._streams.stream(self.copy_stream):
                if self.free[slot] is not None:
                    self.copy_stream.wait_event(self.free[slot])
                buffer = self.slots[slot]
                for slab, start, offset, nbytes in self.runs[unit]:
                    _device_copy(buffer[offset:offset + nbytes], self.slabs[slab][start:start + nbytes])
                    self.bytes_copied += nbytes
                    self.copies += 1
                self.loaded[slot] = self.copy_stream.record_event()
            self.holder[slot] = unit
        self._clock += 1
        self.last_use[slot] = self._clock
        return slot

    def _views_for(self, unit: int, slot: int) -> list[torch.Tensor]:
        key = (unit, slot)
        if key not in self._views:
            self._views[key] = [t.view_of(self.slots[slot], t.offset) for t in self.tensors[unit]]
        return self._views[key]

    def run(self, run_blocks, state, start: int, stop: int, *args, **kwargs):
        """``run_blocks(state, start, stop, ...)`` one unit at a time: each made resident first, the next
        one of this range (never one outside it) prefetched on the copy stream while it runs."""
        compute = self._streams.current_stream(self.device)
        depth = len(self.slots) - 1
        for index in range(start, stop):
            slot = self._load(index, keep=None)
            for ahead in range(index + 1, min(index + 1 + depth, stop)):
                self._load(ahead, keep=slot)
            if self.loaded[slot] is not None:
                compute.wait_event(self.loaded[slot])
            for t, view in zip(self.tensors[index], self._views_for(index, slot)):
                _bind(t.module, t.kind, t.name, view)
            state = run_blocks(state, index, index + 1, *args, **kwargs)
            self.free[slot] = compute.record_event()
            self.units_run += 1
        return state


class _StreamedRunBlocks:
    """Replaces ``denoiser.run_blocks`` (an instance attribute): the same call, streamed by ``streamer``."""

    def __init__(self, inner, streamer: BlockStreamer):
        self.inner, self.streamer = inner, streamer

    def __call__(self, state, start, stop, *args, **kwargs):
        return self.streamer.run(self.inner, state, start, stop, *args, **kwargs)


def apply_group_offload(denoiser, onload_device: torch.device, stream=None, num_slots: int = DEFAULT_SLOTS,
                        pin: bool | None = None) -> BlockStreamer:
    """Streamed block offload of a ``LongVieDenoiser`` (see the module docstring). Returns the streamer
    (also at ``denoiser.block_streamer``).

    Args:
        onload_device: the GPU that computes (an indexed device, see ``devices.resolve_device``).
        stream: the copy stream; None makes one on ``onload_device``. Tests pass ``torch.cpu.Stream()``
            with a CPU device as a stand-in.
        num_slots: device slots (2: one computing, one copying).
        pin: page-locked host slabs (default: on CUDA).
    """
    onload_device = torch.device(onload_device)
    if getattr(denoiser, "block_streamer", None) is not None:
        raise ValueError("group offload is already applied to this denoiser")
    if onload_device.type == "cuda" and onload_device.index is None:
        raise ValueError("group offload needs an indexed CUDA device (cuda:N); resolve it with resolve_device")
    if onload_device.type != "cuda" and stream is None:
        raise ValueError(f"streamed group offload needs a CUDA onload device, got {onload_device} (tests pass a "
                         "stand-in stream)")
    streamer = BlockStreamer(denoiser, onload_device, stream=stream, num_slots=num_slots, pin=pin)
    denoiser.block_streamer = streamer
    denoiser.run_blocks = _StreamedRunBlocks(denoiser.run_blocks, streamer)
    denoiser.register_forward_pre_hook(lambda module, args: streamer.begin_call())
    return streamer


def group_offload_state(denoiser) -> dict:
    """What the streamer looks like now: ``units`` streamed, device ``slots``, ``resident`` units (held by a
    slot), ``root_on_device`` (every tensor outside the blocks is on the compute device)."""
    streamer = getattr(denoiser, "block_streamer", None)
    if streamer is None:
        return {"units": 0, "slots": 0, "resident": [], "root_on_device": False}
    return {"units": len(streamer.units), "slots": len(streamer.slots),
            "resident": sorted(u for u in streamer.holder if u is not None),
            "root_on_device": all(t.device == streamer.device for *_, t in root_tensors(denoiser))}


def apply_encoder_offload(module: nn.Module, onload_device: torch.device) -> None:
    """Whole-model offload of an encoder (umT5, CLIP) whose own forward runs: onloaded for its call,
    offloaded after; no stream and no pinned copy (it runs once per clip)."""
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(module, onload_device=onload_device, offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=1, use_stream=False)


def enable_offload(pipe, mode: str, device: torch.device, stream=None) -> BlockStreamer | None:
    """Place the pipeline's models for ``mode`` ("none", "model", "group"; see ``HOST_RAM_NOTES``).

    ``device`` must be explicit (``cuda:N``): diffusers' model offload sends a bare "cuda" to GPU 0.
    On a CPU device every mode is "all in place" (nothing to offload to). VAE tiling is not changed
    here (it is a setting of its own). Returns the denoiser's streamer for "group" on CUDA.
    """
    if mode not in MODES:
        raise ValueError(f"offload must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        raise ValueError("enable_offload needs an indexed CUDA device (cuda:N); resolve it with resolve_device")
    if mode == "none" or (device.type == "cpu" and (stream is None or mode == "model")):
        pipe.to(device)
        return None
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
        return None
    streamer = apply_group_offload(pipe.denoiser, device, stream=stream)
    if device.type == "cuda":
        for encoder in (pipe.text_encoder, pipe.image_encoder):
            if encoder is not None:  # umT5 may be left on disk (load_text_encoder=False)
                apply_encoder_offload(encoder, device)
    pipe.vae.to(device)
    return streamer
