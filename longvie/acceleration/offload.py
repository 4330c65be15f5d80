"""Memory modes of the pipeline: all on the GPU, model CPU offload, or streamed block offload.

Offload hooks must sit where the forward runs. The denoiser calls the DiT's and the control
branch's blocks itself (``LongVieDenoiser.forward``), so the transformer's and the control
branch's own ``forward`` never run: diffusers hooks attached to those modules never fire. Applied
there, group offloading never traces the execution order (no prefetch: every layer copied
synchronously), never onloads the modules outside the blocks (patch embedding, condition embedder,
RoPE tables: rebuilt on the CPU at every call) and its lazy tracing hook keeps growing.

``apply_group_offload(denoiser, ...)`` therefore builds the groups on the denoiser itself with
diffusers' group-offloading machinery (``diffusers.hooks.group_offloading``):

* one group per block - 40 main blocks, 12 dense and 12 sparse control blocks - onloaded on a side
  stream one block ahead of the compute (prefetch order traced by diffusers' lazy prefetch hook at
  the first call of the denoiser);
* one root group with everything else (embeddings, head, control adapters, RoPE buffers), onloaded
  when the denoiser's forward starts and offloaded when it ends.

Host memory (``HOST_RAM_NOTES``): diffusers' default pins a second, page-locked copy of every
weight up front, and the pinned allocator rounds each tensor up to a power of two (about 70 GB
for this model with leaf-level groups). With ``low_cpu_mem_usage=True`` (the default here) the
weights stay in ordinary pageable memory and each block is pinned only while it is copied, so
pinned memory stays bounded by about two blocks (the one computing and the one prefetching).
"""
from __future__ import annotations

import torch

MODES = ("none", "model", "group")
HOST_RAM_NOTES = {
    "none": "weights live on the GPU; host RAM is only needed while loading (one shard at a time)",
    "model": "every model not in use waits in host RAM (pageable): host RAM >= all weights",
    "group": "all weights in pageable host RAM + about two pinned blocks in flight (low_cpu_mem_usage)",
}


def _block_lists(denoiser) -> list[tuple[str, torch.nn.ModuleList]]:
    control = denoiser.control
    return [("transformer.blocks", denoiser.transformer.blocks),
            ("control.control_blocks_dense", control.control_blocks_dense),
            ("control.control_blocks_sparse", control.control_blocks_sparse)]


def apply_group_offload(denoiser, onload_device: torch.device, offload_device: torch.device = torch.device("cpu"),
                        stream=None, low_cpu_mem_usage: bool = True, record_stream: bool = False) -> None:
    """Streamed block-level offload of the LongVie denoiser (see the module docstring).

    Args:
        denoiser: a ``LongVieDenoiser`` on ``offload_device``.
        onload_device: the GPU that computes (an indexed device, see ``devices.resolve_device``).
        stream: the side stream for the copies; None makes one on ``onload_device`` (CUDA). Tests
            pass ``torch.cpu.Stream()`` as a stand-in.
        low_cpu_mem_usage: pin each block only while it is copied (bounded pinned memory) instead
            of keeping a pinned copy of every weight.
    """
    from diffusers.hooks.group_offloading import (
        GroupOffloadingConfig,
        GroupOffloadingType,
        ModuleGroup,
        _apply_group_offloading_hook,
        _apply_lazy_group_offloading_hook,
    )

    onload_device = torch.device(onload_device)
    if stream is None:
        if onload_device.type != "cuda":
            raise ValueError(f"streamed group offload needs a CUDA onload device, got {onload_device}")
        stream = torch.cuda.Stream(device=onload_device)
    config = GroupOffloadingConfig(onload_device=onload_device, offload_device=offload_device,
                                   offload_type=GroupOffloadingType.BLOCK_LEVEL, non_blocking=True,
                                   record_stream=record_stream, low_cpu_mem_usage=low_cpu_mem_usage,
                                   num_blocks_per_group=1, stream=stream)
    in_blocks = set()
    groups = []
    for prefix, blocks in _block_lists(denoiser):
        for index, block in enumerate(blocks):
            groups.append(ModuleGroup(modules=[block], offload_device=offload_device, onload_device=onload_device,
                                      offload_leader=block, onload_leader=block, non_blocking=True, stream=stream,
                                      record_stream=record_stream, low_cpu_mem_usage=low_cpu_mem_usage,
                                      onload_self=True, group_id=f"{prefix}.{index}"))
            in_blocks.update(id(t) for t in block.parameters())
            in_blocks.update(id(t) for t in block.buffers())
    for group in groups:
        _apply_group_offloading_hook(group.modules[0], group, config=config)
    root_parameters = [p for p in denoiser.parameters() if id(p) not in in_blocks]
    root_buffers = [b for b in denoiser.buffers() if id(b) not in in_blocks]
    root = ModuleGroup(modules=[], offload_device=offload_device, onload_device=onload_device,
                       offload_leader=denoiser, onload_leader=denoiser, parameters=root_parameters,
                       buffers=root_buffers, non_blocking=False, stream=None, record_stream=False,
                       onload_self=True, group_id="denoiser.root")
    _apply_lazy_group_offloading_hook(denoiser, root, config=config)


def group_offload_state(denoiser) -> dict:
    """What the hooks look like now: ``lazy_hooks`` (modules still waiting for the first call to trace
    the order), ``block_groups`` (number of per-block groups), ``prefetching`` (groups whose hook
    onloads the next group ahead: every group but the last once traced), ``streamed`` (groups with a
    stream)."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING, _LAZY_PREFETCH_GROUP_OFFLOADING

    lazy, block_groups, prefetching, streamed = 0, 0, 0, 0
    for module in denoiser.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        if registry.get_hook(_LAZY_PREFETCH_GROUP_OFFLOADING) is not None:
            lazy += 1
        hook = registry.get_hook(_GROUP_OFFLOADING)
        if hook is None:
            continue
        if module is not denoiser:
            block_groups += 1
            streamed += hook.group.stream is not None
        prefetching += hook.next_group is not None and not hook.next_group.onload_self
    return {"lazy_hooks": lazy, "block_groups": block_groups, "prefetching": prefetching, "streamed": streamed}


def apply_encoder_offload(module: torch.nn.Module, onload_device: torch.device) -> None:
    """Whole-model offload of an encoder (umT5, CLIP) whose own forward runs: onloaded for its call,
    offloaded after; no stream and no pinned copy (it runs once per clip)."""
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(module, onload_device=onload_device, offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=1, use_stream=False)


def enable_offload(pipe, mode: str, device: torch.device) -> None:
    """Place the pipeline's models for ``mode`` ("none", "model", "group"; see ``HOST_RAM_NOTES``).

    ``device`` must be explicit (``cuda:N``): diffusers' model offload sends a bare "cuda" to GPU 0.
    VAE tiling is not changed here (it is a setting of its own).
    """
    if mode not in MODES:
        raise ValueError(f"offload must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        raise ValueError("enable_offload needs an indexed CUDA device (cuda:N); resolve it with resolve_device")
    if mode == "none" or device.type == "cpu":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        apply_group_offload(pipe.denoiser, device)
        for encoder in (pipe.text_encoder, pipe.image_encoder):
            apply_encoder_offload(encoder, device)
        pipe.vae.to(device)
