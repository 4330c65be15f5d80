"""Several GPUs on one video: sequence parallelism (Ulysses) and CFG-parallelism, combinable.

Started by ``torchrun --nproc_per_node N``; world size = ``sequence_degree * cfg_degree``.

* **CFG-parallel** (``cfg_degree=2``): the ranks of the first half compute the prompt branch, the
  others the negative-prompt branch; an all-gather over the pair gives every rank both velocities.
* **Sequence parallel** (``sequence_degree=P``): every token stream is split in P contiguous shards,
  one per rank: the main stream's history tokens and clip tokens *separately* (so a rank's clip
  shard lines up with its shard of both control streams, which add their residual to exactly those
  tokens), each with its own slice of the RoPE tables (history frames 0..Fh-1, clip Fh..), and the
  dense and sparse streams with the clip's own RoPE. Norms, FFNs and cross-attention (the context is
  replicated) are token-local; self-attention runs on diffusers' context-parallel attention
  (``ContextParallelConfig``, Ulysses all-to-all over heads: each rank attends all tokens with H/P
  heads). The rank order of the tokens inside attention is [history shard r, clip shard r] for r =
  0..P-1: a permutation of the full sequence, which attention without a mask does not see. The head's
  output shards are all-gathered before unpatchify.
  Where a stream's head count does not divide by P (the control streams' 20 heads on 8 GPUs), that
  stream's self-attention gathers keys and values instead (:class:`KVGatherSelfAttention`: local
  queries, all heads, keys/values of all ranks; exact, more traffic than all-to-all). Not used: ring
  attention (its native SDPA op gives no log-sum-exp in diffusers 0.42) and diffusers' "Ulysses
  anything" (it pads heads only up to fewer than H/P per rank: 20 heads on 8 ranks fail).

diffusers' own ``apply_context_parallel`` splits a model's inputs by a plan over submodule calls; the
LongVie denoiser calls its blocks directly and needs the history/clip split above, so the split is
done here on the :class:`~longvie.models.denoiser.PreparedClip` and only the attention comes from
diffusers. Equivalence with one process (gloo, CPU): tests/acceleration/test_parallel.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..models.denoiser import LongVieDenoiser, PreparedClip


@dataclass(frozen=True)
class ParallelConfig:
    """sequence_degree: ranks sharing one denoiser call's tokens; cfg_degree: 1, or 2 = guidance branches
    on different ranks."""

    sequence_degree: int = 1
    cfg_degree: int = 1

    def __post_init__(self):
        if self.sequence_degree < 1 or self.cfg_degree not in (1, 2):
            raise ValueError(f"sequence_degree must be >= 1 and cfg_degree 1 or 2, got {self.sequence_degree}, "
                             f"{self.cfg_degree}")

    @property
    def world_size(self) -> int:
        return self.sequence_degree * self.cfg_degree


def _shard(tensor: torch.Tensor, rank: int, parts: int, dim: int, what: str) -> torch.Tensor:
    size = tensor.shape[dim]
    if size % parts:
        raise ValueError(f"sequence parallelism over {parts} ranks needs the {what} ({size} tokens) to divide by "
                         f"{parts}")
    return tensor.narrow(dim, rank * (size // parts), size // parts)


class ParallelState:
    """This rank's place in the (cfg, sequence) grid and the collectives the sampler needs."""

    def __init__(self, config: ParallelConfig, mesh):
        self.config = config
        self.mesh = mesh
        self.cfg_degree = config.cfg_degree
        self.sequence_degree = config.sequence_degree
        coordinate = mesh.get_coordinate()
        self.cfg_rank, self.sequence_rank = coordinate[0], coordinate[-1]
        self.cfg_group = mesh["cfg"].get_group() if config.cfg_degree > 1 else None
        self.sequence_group = mesh["ulysses"].get_group() if config.sequence_degree > 1 else None

    # ------------------------------------------------------------------ sequence parallel
    def shard_clip(self, clip: PreparedClip) -> PreparedClip:
        """Keep this rank's shard of every token stream of ``clip`` (see the module docstring)."""
        parts, rank = self.sequence_degree, self.sequence_rank
        if parts == 1:
            return clip
        num_clip = clip.dense.shape[1]
        num_history = clip.num_history
        shard = num_clip // parts
        if num_clip % parts:
            raise ValueError(f"sequence parallelism over {parts} ranks needs the clip tokens ({num_clip}) to divide "
                             f"by {parts}")
        history_tokens, main_rope = None, _shard_pair(clip.main_rope, rank, parts, 0, num_clip)
        if num_history:
            history_tokens = _shard(clip.history_tokens, rank, parts, 1, "history tokens")
            main_rope = tuple(torch.cat([_shard(table[:, :num_history], rank, parts, 1, "history tokens"),
                                         _shard(table[:, num_history:], rank, parts, 1, "clip tokens")], dim=1)
                              for table in clip.main_rope)
        return clip.replace(
            image_tokens=None if clip.image_tokens is None else _shard(clip.image_tokens, rank, parts, 1, "clip tokens"),
            history_tokens=history_tokens,
            dense=_shard(clip.dense, rank, parts, 1, "clip tokens"),
            sparse=_shard(clip.sparse, rank, parts, 1, "clip tokens"),
            main_rope=main_rope,
            control_rope=tuple(_shard(t, rank, parts, 1, "clip tokens") for t in clip.control_rope),
            clip_tokens=slice(rank * shard, (rank + 1) * shard),
            gather_tokens=self.gather_tokens)

    def gather_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N/P, C) shards of the sequence group -> (B, N, C) on every rank, in rank order."""
        parts = [torch.empty_like(tokens) for _ in range(self.sequence_degree)]
        dist.all_gather(parts, tokens.contiguous(), group=self.sequence_group)
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ CFG parallel
    def gather_guidance(self, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's branch velocity -> (prompt velocity, negative velocity) on every rank."""
        parts = [torch.empty_like(velocity) for _ in range(2)]
        dist.all_gather(parts, velocity.contiguous(), group=self.cfg_group)
        return parts[0], parts[1]


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan RoPE on (B, S, H, D): channels (2i, 2i+1) form a complex pair rotated by the angle whose cosine
    is ``cos[..., 2i]`` and sine ``sin[..., 2i+1]`` (tables laid out as
    :func:`~longvie.models.denoiser.rotary_embedding` returns them, (1, S, 1, D))."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


class KVGatherSelfAttention:
    """Attention processor for a Wan block's self-attention under sequence parallelism when its heads do
    not divide by the ranks: the rank's queries attend the keys/values of every rank (all-gathered in
    rank order). Projections, q/k RMSNorm and RoPE as in diffusers' ``WanAttnProcessor``; the attention
    itself goes through diffusers' dispatcher with the block's backend."""

    _parallel_config = None

    def __init__(self, group, attention_backend=None):
        self.group = group
        self._attention_backend = attention_backend

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("KVGatherSelfAttention serves unmasked self-attention only")
        query, key, value = _get_qkv_projections(attn, hidden_states, None)             # (B, n, dim)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))  # (B, n, H, d)
        if rotary_emb is not None:
            query, key = rotate_pairs(query, *rotary_emb), rotate_pairs(key, *rotary_emb)
        key, value = self._gather(key), self._gather(value)                              # (B, N, H, d)
        out = dispatch_attention_fn(query, key, value, backend=self._attention_backend)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _shard_pair(pair, rank, parts, start, count):
    return tuple(_shard(t[:, start:start + count], rank, parts, 1, "clip tokens") for t in pair)


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group (NCCL with CUDA, gloo otherwise) if not done yet; (rank, world size)."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            return 0, 1
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def apply_parallelism(denoiser: LongVieDenoiser, config: ParallelConfig) -> ParallelState:
    """Set diffusers' context-parallel attention on every self-attention of ``denoiser`` and return the
    state that :class:`~longvie.sampling.guidance.GuidedVelocity` uses to shard clips and gather results.

    torch.distributed must be initialised (:func:`init_distributed`) with world size
    ``config.world_size``. The attention backend must support context parallelism ("native" does).
    """
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise RuntimeError("parallel sampling needs torch.distributed: start with torchrun --nproc_per_node N")
    world = dist.get_world_size()
    if world != config.world_size:
        raise ValueError(f"sequence_degree {config.sequence_degree} x cfg_degree {config.cfg_degree} = "
                         f"{config.world_size} ranks, but torchrun started {world}")
    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device_type, (config.cfg_degree, 1, config.sequence_degree),
                            mesh_dim_names=("cfg", "ring", "ulysses"))
    state = ParallelState(config, mesh)
    if config.sequence_degree > 1:
        device = torch.device(device_type, torch.cuda.current_device()) if device_type == "cuda" \
            else torch.device("cpu")
        cp = ContextParallelConfig(ulysses_degree=config.sequence_degree, mesh=mesh)
        ulysses = DiffusersParallelConfig(context_parallel_config=cp)
        ulysses.setup(dist.get_rank(), world, device, mesh=mesh)
        for model, blocks in ((denoiser.transformer, denoiser.transformer.blocks),
                              (denoiser.control, [*denoiser.control.control_blocks_dense,
                                                  *denoiser.control.control_blocks_sparse])):
            divides = model.config.num_attention_heads % config.sequence_degree == 0
            for block in blocks:
                # self-attention only: cross-attention queries are local and its context is replicated
                if divides:
                    block.attn1.processor._parallel_config = ulysses
                else:
                    backend = getattr(block.attn1.processor, "_attention_backend", None)
                    block.attn1.set_processor(KVGatherSelfAttention(state.sequence_group, backend))
    return state


def remove_parallelism(denoiser: LongVieDenoiser) -> None:
    """Back to single-process attention on every block (the process group stays)."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    for module in denoiser.modules():
        processor = getattr(module, "processor", None)
        if isinstance(processor, KVGatherSelfAttention):
            replacement = WanAttnProcessor()
            replacement._attention_backend = processor._attention_backend
            module.set_processor(replacement)
        elif processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = None
