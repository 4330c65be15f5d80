"""Several GPUs on one video: sequence parallelism (Ulysses) and CFG-parallelism, combinable, for any
rank count; the encoders and the tiled VAE decode split over the ranks.

Started by ``torchrun --nproc_per_node N``; world size = ``sequence_degree * cfg_degree``.

* **CFG-parallel** (``cfg_degree=2``): the ranks of the first half compute the prompt branch, the
  others the negative-prompt branch; an all-gather over the pair gives every rank both velocities.
* **Sequence parallel** (``sequence_degree=P``): every token stream is split in P contiguous shards,
  one per rank: the main stream's history tokens and clip tokens *separately* (so a rank's clip
  shard lines up with its shard of both control streams, which add their residual to exactly those
  tokens), each with its own slice of the RoPE tables (history frames 0..Fh-1, clip Fh..), and the
  dense and sparse streams with the clip's own RoPE. Norms, FFNs and cross-attention (the context is
  replicated) are token-local. The rank order of the tokens inside attention is [history shard r,
  clip shard r] for r = 0..P-1: a permutation of the full sequence, which attention without a mask
  does not see. The head's output shards are gathered before unpatchify.

  **Any rank count.** A stream of N tokens is split as ``torch.tensor_split`` does (the first N mod P
  ranks hold one token more: :func:`split_sizes`), so no rank ever holds padding and no mask is
  needed: the real case of 3, 6 or 7 GPUs (1,760 history tokens, 18,480 clip tokens) and the tiny
  preset's 56 history tokens on 3 ranks run exactly like one process. (xDiT/USP pad the sequence to
  a multiple of P and mask the padded keys; uneven shards give the same result without the mask,
  which flash-attn backends do not take, and without the padded tokens' compute.)
  Self-attention of every block runs in :class:`SequenceParallelAttention`, which picks per call:

  - heads divisible by P, shards all the same size, a backend diffusers runs context-parallel: diffusers'
    Ulysses attention (``ContextParallelConfig``: all-to-all over heads, each rank attends all tokens
    with H/P heads);
  - heads divisible by P otherwise (uneven shards, or a backend without diffusers context-parallel
    support such as ``_flash_3`` or ``_native_math``): the same all-to-all with per-rank split sizes
    (``torch.distributed._functional_collectives.all_to_all_single``), around the backend's ordinary
    single-device attention;
  - heads not divisible by P (the control streams' 20 heads on 8 GPUs, the main 40 on 3): local
    queries attend the keys/values of every rank (all-gathered; exact, more traffic than all-to-all).

  Not used: ring attention (its native SDPA op gives no log-sum-exp in diffusers 0.42) and diffusers'
  "Ulysses anything" (it reads every rank's size with a host synchronisation at each attention call
  and pads heads only up to fewer than H/P per rank: 20 heads on 8 ranks fail).

* **Encoders over the ranks** (:meth:`ParallelState.run_split`): each of a clip's encoder calls (CLIP,
  the five 81-frame VAE encodes, the history encode, umT5 when not cached) runs on one rank, the
  biggest first on the least loaded rank, and is broadcast from there: same tensors as one process.
* **Tiled VAE decode over the ranks** (:func:`tiled_decode_over_ranks`): with VAE tiling on, each
  rank decodes its share of diffusers' ``AutoencoderKLWan.tiled_decode`` tiles, the decoded tiles are
  exchanged, and diffusers' own blending assembles them: the result is the single-process tiled
  decode (bit for bit on CPU: tests/acceleration/test_parallel.py, test_parallel_checks.py).

diffusers' own ``apply_context_parallel`` splits a model's inputs by a plan over submodule calls; the
LongVie denoiser calls its blocks directly and needs the history/clip split above, so the split is
done here on the :class:`~longvie.models.denoiser.PreparedClip`. Equivalence with one process (gloo,
CPU): tests/acceleration/test_parallel.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..models.denoiser import LongVieDenoiser, PreparedClip

MAIN, CONTROL = "main", "control"  # the token streams: DiT [history, clip]; dense and sparse (clip only)
# Backends tied to a device family this module does not launch on (it uses NCCL on CUDA, gloo on CPU).
_DEVICE_SPECIFIC_BACKENDS = ("_native_npu", "_native_xla")


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


def split_sizes(count: int, parts: int) -> tuple[int, ...]:
    """Tokens per rank when ``count`` tokens are split in ``parts`` contiguous shards: the first
    ``count % parts`` shards hold one more (as ``torch.tensor_split``)."""
    base, extra = divmod(count, parts)
    return tuple(base + (rank < extra) for rank in range(parts))


def _narrow(tensor: torch.Tensor, sizes: tuple[int, ...], rank: int, dim: int = 1) -> torch.Tensor:
    return tensor.narrow(dim, sum(sizes[:rank]), sizes[rank])


def _wait(tensor: torch.Tensor) -> torch.Tensor:
    """The value of a functional collective's result (an AsyncCollectiveTensor waits here)."""
    wait = getattr(tensor, "wait", None)
    return wait() if callable(wait) else tensor


def gather_sequence(tensor: torch.Tensor, sizes: tuple[int, ...], group, dim: int = 1) -> torch.Tensor:
    """Shards (.., sizes[r], ..) along ``dim`` of every rank of ``group`` -> the whole sequence, in rank order.
    Uneven shards are padded to the largest for the all-gather and trimmed after."""
    import torch.distributed._functional_collectives as funcol

    largest = max(sizes)
    x = tensor.movedim(dim, 0)
    if x.shape[0] < largest:
        x = torch.cat([x, x.new_zeros(largest - x.shape[0], *x.shape[1:])])
    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor  # renamed in torch 2.10+
    gathered = _wait(gather(x.contiguous(), 0, group))                            # (P * largest, ...)
    if len(set(sizes)) > 1:
        gathered = torch.cat([gathered[r * largest:r * largest + size] for r, size in enumerate(sizes)])
    return gathered.movedim(0, dim)


def sequence_parallel_backend_support(backend: str | None) -> tuple[bool, str]:
    """Whether sequence parallelism gives one process's result with attention backend ``backend``
    (a diffusers backend name, "auto" or None = SDPA), and how it runs (or why not). One sentence.

    (The "modes" helper adds ``acceleration.attention.supports_sequence_parallel``; the two are to be
    unified: every backend diffusers can run on one device works here, see the module docstring.)
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    name = backend or "native"
    if name == "auto":
        return True, ("auto resolves, among the backends that run sequence-parallel, to FlashAttention-3 or cuDNN "
                      "attention on sm90 GPUs, flash-attn 2 on other sm80+ GPUs, PyTorch SDPA otherwise "
                      "(acceleration.attention.select_attention_backend)")
    try:
        AttentionBackendName(name)
    except ValueError:
        return False, f"diffusers has no attention backend {name!r}"
    if name in _DEVICE_SPECIFIC_BACKENDS:
        return False, (f"attention backend {name!r} belongs to another device family; sequence parallelism "
                       "runs over NCCL on CUDA GPUs or gloo on the CPU")
    if _runs_context_parallel(name):
        return True, (f"{name}: diffusers' Ulysses attention where every rank holds as many tokens, LongVie's "
                      "all-to-all with per-rank sizes otherwise")
    return True, (f"{name}: diffusers has no context-parallel path for it, so LongVie's all-to-all runs around "
                  "its single-device kernel")


def _runs_context_parallel(backend: str | None) -> bool:
    """Whether diffusers registered ``backend`` as context-parallel capable (a set of names in diffusers
    0.42, a dict backend -> bool in older releases)."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    member = AttentionBackendName(backend or "native")
    supports = getattr(_AttentionBackendRegistry, "_supports_context_parallel", ())
    if isinstance(supports, dict):
        return bool(supports.get(member, supports.get(member.value, False)))
    return member.value in supports or member in supports


def clip_token_counts(num_frames: int, height: int, width: int, history_frames: int = 8,
                      patch: tuple[int, int, int] = (1, 2, 2)) -> tuple[int, int]:
    """(clip tokens, history tokens) of a clip of ``num_frames`` pixel frames at ``height`` x ``width``
    (VAE x4 in time, x8 in space; DiT patch ``patch``); history = ``history_frames`` frames encoded as
    1 + (h-1)//4 latent frames (SPEC §3)."""
    grid_h, grid_w = height // 8 // patch[1], width // 8 // patch[2]
    frames = (1 + (num_frames - 1) // 4) // patch[0]
    history = (1 + (history_frames - 1) // 4) // patch[0] if history_frames else 0
    return frames * grid_h * grid_w, history * grid_h * grid_w


def parallel_problems(sequence_degree: int, cfg_degree: int, *, world_size: int | None = None,
                      clip_tokens: int | None = None, guidance_scale: float | None = None,
                      attention_backend: str | None = None) -> list[str]:
    """Everything that would stop a parallel run, known before any model loads (one sentence each):
    the rank count, the clip's token count, guidance for CFG-parallel and the attention backend.
    History tokens and head counts need no check: any count works (see the module docstring)."""
    problems = []
    if sequence_degree < 1:
        problems.append(f"--sp {sequence_degree}: must be at least 1")
    ranks = sequence_degree * cfg_degree
    flags = f"--sp {sequence_degree}{' --cfg-parallel' if cfg_degree == 2 else ''}"
    if world_size is not None and world_size != ranks:
        started = "this is one process" if world_size == 1 else f"torchrun started {world_size}"
        other = f", or use --sp {world_size // cfg_degree}" if world_size > 1 and world_size % cfg_degree == 0 else ""
        problems.append(f"{flags} needs {ranks} processes, {started}: start it with torchrun --nproc_per_node "
                        f"{ranks}{other} (one video per GPU instead: python -m longvie.longvideo.batch)")
    if clip_tokens is not None and sequence_degree > clip_tokens:
        problems.append(f"--sp {sequence_degree}: a clip has only {clip_tokens} tokens, so some ranks would hold "
                        f"none; use at most {clip_tokens} ranks for sequence parallelism")
    if cfg_degree == 2 and guidance_scale is not None and guidance_scale == 1.0:
        problems.append("--cfg-parallel puts the two guidance branches on different GPUs, but --cfg 1.0 has one "
                        "branch: drop --cfg-parallel or use a guidance scale other than 1")
    if sequence_degree > 1 and attention_backend is not None:
        ok, reason = sequence_parallel_backend_support(attention_backend)
        if not ok:
            problems.append(f"--sp {sequence_degree}: {reason}")
    return problems


def local_rank_problem(device_count: int | None = None) -> str | None:
    """One sentence when torchrun's ``LOCAL_RANK`` names a GPU this machine does not show, else None."""
    value = os.environ.get("LOCAL_RANK")
    if not value:
        return None
    count = torch.cuda.device_count() if device_count is None else device_count
    try:
        rank = int(value)
    except ValueError:
        return f"LOCAL_RANK={value!r} is not an integer: start the processes with torchrun"
    if rank < count:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    return (f"LOCAL_RANK={rank} but this machine shows only {count} GPU(s){where}: start torchrun with "
            f"--nproc_per_node {count} or fewer per machine (or make more GPUs visible)")


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int]:
    """Join the torchrun process group (NCCL when the run's ``device`` is CUDA, gloo otherwise; None: CUDA
    when available) if not done yet; (rank, world size). A ``LOCAL_RANK`` beyond the visible GPUs is a
    ValueError with one sentence, raised before any process group or model exists."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            return 0, 1
        cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        if cuda:
            problem = local_rank_problem()
            if problem:
                raise ValueError(problem)
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def assign_tasks(costs: list[float], ranks: int, allowed: list | None = None) -> list[int]:
    """Owner rank of each task: biggest first, each to the least loaded rank among ``allowed[i]`` (None or
    a missing entry: any rank; ties: the lowest rank). Deterministic, so every rank computes the same
    assignment."""
    load = [0.0] * ranks
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        choices = (allowed[index] if allowed is not None and allowed[index] is not None else None) or range(ranks)
        owner = min(choices, key=lambda r: (load[r], r))
        owners[index] = owner
        load[owner] += costs[index]
    return owners


def makespan(costs: list[float], ranks: int, allowed: list | None = None) -> float:
    """Wall time of tasks taking ``costs`` seconds, assigned by :func:`assign_tasks` over ``ranks`` ranks:
    the load of the most loaded rank."""
    owners = assign_tasks(costs, ranks, allowed)
    return max([sum(c for c, o in zip(costs, owners) if o == r) for r in range(ranks)], default=0.0)


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
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # tokens per rank of each stream for the clip being denoised (set by shard_clip)
        self.splits: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ sequence parallel
    def shard_clip(self, clip: PreparedClip) -> PreparedClip:
        """Keep this rank's shard of every token stream of ``clip`` (see the module docstring)."""
        parts, rank = self.sequence_degree, self.sequence_rank
        if parts == 1:
            return clip
        num_clip, num_history = clip.dense.shape[1], clip.num_history
        if num_clip < parts:
            raise ValueError(f"sequence parallelism over {parts} ranks needs at least {parts} clip tokens, the clip "
                             f"has {num_clip}")
        clip_sizes = split_sizes(num_clip, parts)
        history_sizes = split_sizes(num_history, parts)
        main_rope = tuple(_narrow(t, clip_sizes, rank) for t in clip.main_rope)
        history_tokens = None
        if num_history:
            history_tokens = _narrow(clip.history_tokens, history_sizes, rank)
            main_rope = tuple(torch.cat([_narrow(t[:, :num_history], history_sizes, rank),
                                         _narrow(t[:, num_history:], clip_sizes, rank)], dim=1)
                              for t in clip.main_rope)
        self.splits = {MAIN: tuple(h + c for h, c in zip(history_sizes, clip_sizes)), CONTROL: clip_sizes}
        start = sum(clip_sizes[:rank])
        return clip.replace(
            image_tokens=None if clip.image_tokens is None else _narrow(clip.image_tokens, clip_sizes, rank),
            history_tokens=history_tokens,
            dense=_narrow(clip.dense, clip_sizes, rank),
            sparse=_narrow(clip.sparse, clip_sizes, rank),
            main_rope=main_rope,
            control_rope=tuple(_narrow(t, clip_sizes, rank) for t in clip.control_rope),
            clip_tokens=slice(start, start + clip_sizes[rank]),
            gather_tokens=lambda tokens: gather_sequence(tokens, clip_sizes, self.sequence_group))

    # ------------------------------------------------------------------ CFG parallel
    def gather_guidance(self, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's branch velocity -> (prompt velocity, negative velocity) on every rank."""
        parts = [torch.empty_like(velocity) for _ in range(2)]
        dist.all_gather(parts, velocity.contiguous(), group=self.cfg_group)
        return parts[0], parts[1]

    # ------------------------------------------------------------------ work split over all ranks
    def run_split(self, tasks: dict[str, tuple]) -> dict[str, torch.Tensor]:
        """Run each task ``name: (cost, fn)`` or ``(cost, fn, allowed ranks)`` on one rank
        (:func:`assign_tasks`) and give every rank every result, broadcast from its owner. ``fn`` returns
        a tensor on this rank's device; every rank must pass the same names, costs and allowed ranks."""
        names = list(tasks)
        owners = assign_tasks([float(tasks[n][0]) for n in names], self.world_size,
                              [tasks[n][2] if len(tasks[n]) > 2 else None for n in names])
        mine = {n: tasks[n][1]() for n, owner in zip(names, owners) if owner == self.rank}
        metas: list = [None] * self.world_size
        dist.all_gather_object(metas, {n: (tuple(t.shape), t.dtype) for n, t in mine.items()})
        results = {}
        for name, owner in zip(names, owners):
            shape, dtype = metas[owner][name]
            tensor = mine[name].contiguous() if owner == self.rank else torch.empty(shape, dtype=dtype,
                                                                                     device=self._device())
            dist.broadcast(tensor, src=owner)
            results[name] = tensor
        return results

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


class SequenceParallelAttention:
    """Self-attention processor of a Wan block under sequence parallelism, for any rank count and head
    count (the three paths are in the module docstring). Projections, q/k RMSNorm and RoPE as in
    diffusers' ``WanAttnProcessor``; the attention kernel is the block's backend through diffusers'
    dispatcher (``_attention_backend``, kept up to date by ``set_attention_backend``).

    ``stream`` says which token split of :attr:`ParallelState.splits` the block's sequence follows."""

    _parallel_config = None

    def __init__(self, state: ParallelState, stream: str, ulysses_config, attention_backend=None):
        self.state = state
        self.stream = stream
        self.ulysses_config = ulysses_config
        self._attention_backend = attention_backend

    # (B, s_r, H, D) on each rank -> (B, S, H/P, D): every token, this rank's heads
    def _to_heads(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        import torch.distributed._functional_collectives as funcol

        parts = len(sizes)
        batch, local, heads, dim = x.shape
        x = x.reshape(batch, local, parts, heads // parts, dim).permute(2, 1, 0, 3, 4)
        x = x.reshape(parts * local, batch, heads // parts, dim).contiguous()
        x = _wait(funcol.all_to_all_single(x, list(sizes), [local] * parts, self.state.sequence_group))
        return x.permute(1, 0, 2, 3)

    # (B, S, H/P, D) -> (B, s_r, H, D): the inverse of _to_heads
    def _to_tokens(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        import torch.distributed._functional_collectives as funcol

        parts, local = len(sizes), sizes[self.state.sequence_rank]
        batch, _, heads, dim = x.shape
        x = x.permute(1, 0, 2, 3).contiguous()                                          # (S, B, H/P, D)
        x = _wait(funcol.all_to_all_single(x, [local] * parts, list(sizes), self.state.sequence_group))
        x = x.reshape(parts, local, batch, heads, dim).permute(2, 1, 0, 3, 4)          # (B, s_r, P, H/P, D)
        return x.reshape(batch, local, parts * heads, dim)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("SequenceParallelAttention serves unmasked self-attention only")
        sizes = self.state.splits.get(self.stream)
        rank = self.state.sequence_rank
        if sizes is None or hidden_states.shape[1] != sizes[rank]:
            raise RuntimeError(f"sequence-parallel attention got {hidden_states.shape[1]} tokens on rank {rank}, "
                               f"the current clip's split says {sizes}: shard the clip with ParallelState.shard_clip")
        query, key, value = _get_qkv_projections(attn, hidden_states, None)             # (B, n, dim)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))  # (B, n, H, d)
        if rotary_emb is not None:
            query, key = rotate_pairs(query, *rotary_emb), rotate_pairs(key, *rotary_emb)
        backend = self._attention_backend
        parts = len(sizes)
        if attn.heads % parts == 0:
            if len(set(sizes)) == 1 and _runs_context_parallel(backend):
                out = dispatch_attention_fn(query, key, value, backend=backend, parallel_config=self.ulysses_config)
            else:
                out = dispatch_attention_fn(*(self._to_heads(x, sizes) for x in (query, key, value)),
                                            backend=backend)
                out = self._to_tokens(out, sizes)
        else:
            group = self.state.sequence_group
            key, value = gather_sequence(key, sizes, group), gather_sequence(value, sizes, group)
            out = dispatch_attention_fn(query, key, value, backend=backend)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan RoPE on (B, S, H, D): channels (2i, 2i+1) form a complex pair rotated by the angle whose cosine
    is ``cos[..., 2i]`` and sine ``sin[..., 2i+1]`` (tables laid out as
    :func:`~longvie.models.denoiser.rotary_embedding` returns them, (1, S, 1, D))."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def apply_parallelism(denoiser: LongVieDenoiser, config: ParallelConfig) -> ParallelState:
    """Install :class:`SequenceParallelAttention` on every self-attention of ``denoiser`` (when
    ``sequence_degree`` > 1) and return the state that :class:`~longvie.sampling.guidance.GuidedVelocity`
    uses to shard clips and gather results.

    torch.distributed must be initialised (:func:`init_distributed`) with world size
    ``config.world_size``. Any attention backend that runs on one device works
    (:func:`sequence_parallel_backend_support`); a backend that cannot is refused here.
    """
    from diffusers.models._modeling_parallel import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise RuntimeError("parallel sampling needs torch.distributed: start with torchrun --nproc_per_node N")
    world = dist.get_world_size()
    problems = parallel_problems(config.sequence_degree, config.cfg_degree, world_size=world)
    if problems:
        raise ValueError("; ".join(problems))
    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device_type, (config.cfg_degree, 1, config.sequence_degree),
                            mesh_dim_names=("cfg", "ring", "ulysses"))
    state = ParallelState(config, mesh)
    if config.sequence_degree > 1:
        streams = ((denoiser.transformer.blocks, MAIN),
                   ([*denoiser.control.control_blocks_dense, *denoiser.control.control_blocks_sparse], CONTROL))
        for blocks, _ in streams:
            for block in blocks:
                ok, reason = sequence_parallel_backend_support(getattr(block.attn1.processor, "_attention_backend", None))
                if not ok:
                    raise ValueError(f"sequence parallelism: {reason}")
        device = torch.device(device_type, torch.cuda.current_device()) if device_type == "cuda" \
            else torch.device("cpu")
        cp = ContextParallelConfig(ulysses_degree=config.sequence_degree, mesh=mesh)
        ulysses = DiffusersParallelConfig(context_parallel_config=cp)
        ulysses.setup(dist.get_rank(), world, device, mesh=mesh)
        for blocks, stream in streams:  # self-attention only: cross-attention queries are local, its context replicated
            for block in blocks:
                backend = getattr(block.attn1.processor, "_attention_backend", None)
                block.attn1.set_processor(SequenceParallelAttention(state, stream, ulysses, backend))
    return state


def remove_parallelism(denoiser: LongVieDenoiser) -> None:
    """Back to single-process attention on every block (the process group stays)."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    for module in denoiser.modules():
        processor = getattr(module, "processor", None)
        if isinstance(processor, SequenceParallelAttention):
            replacement = WanAttnProcessor()
            replacement._attention_backend = processor._attention_backend
            module.set_processor(replacement)
        elif processor is not None and getattr(processor, "_parallel_config", None) is not None:
            processor._parallel_config = None


# ---------------------------------------------------------------------------------------------- VAE decode
@dataclass(frozen=True)
class Tile:
    """One tile of diffusers' ``AutoencoderKLWan.tiled_decode``: latent rows/columns [top, top+height),
    [left, left+width) (clipped to the latent), in the order the tiled decode visits them."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width


def decode_tiles(vae, latents: torch.Tensor) -> list[Tile] | None:
    """The tiles ``vae.decode`` visits for ``latents`` (B, C, F, h, w) — raster order, the stride and size
    of ``vae.tile_sample_*`` in latent units — or None when the decode is not tiled (tiling off, latents
    within one tile, or a patchified VAE)."""
    if not getattr(vae, "use_tiling", False) or getattr(vae.config, "patch_size", None) is not None:
        return None
    if getattr(vae, "use_slicing", False) and latents.shape[0] > 1:  # decode() would split the batch first
        return None
    ratio = vae.spatial_compression_ratio
    tile_h, tile_w = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio
    stride_h, stride_w = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
    height, width = latents.shape[-2:]
    if not (width > tile_w or height > tile_h):
        return None
    return [Tile(top, left, min(tile_h, height - top), min(tile_w, width - left))
            for top in range(0, height, stride_h) for left in range(0, width, stride_w)]


def _onload(vae) -> None:
    hook = getattr(vae, "_hf_hook", None)  # model CPU offload: bring the VAE to its device, as decode() would
    if hook is not None:
        hook.pre_forward(vae)


def decode_tile(vae, latents: torch.Tensor, tile: Tile) -> torch.Tensor:
    """Decode one tile of ``latents`` frame by frame with the VAE's causal cache, as the tiled decode does
    for each of its tiles: (B, 3, 1 + 4(F-1), 8*tile.height, 8*tile.width), not clamped."""
    part = latents[:, :, :, tile.top:tile.top + tile.height, tile.left:tile.left + tile.width]
    vae.clear_cache()
    frames = []
    for k in range(part.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(vae.post_quant_conv(part[:, :, k:k + 1]), feat_cache=vae._feat_map,
                                  feat_idx=vae._conv_idx, first_chunk=k == 0))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


class _ReplayDecoder(torch.nn.Module):
    """Stands in for ``vae.decoder`` during :func:`assemble_tiles`: returns the already decoded tiles' frames
    in the order the tiled decode asks for them (1 frame for a tile's first latent frame, then 4)."""

    def __init__(self, decoded: list[torch.Tensor], tiles: list[Tile]):
        super().__init__()
        self.decoded, self.tiles = decoded, tiles
        self.tile, self.frame = -1, 0

    def forward(self, x, feat_cache=None, feat_idx=None, first_chunk=False):
        if first_chunk:
            self.tile, self.frame = self.tile + 1, 0
        tile = self.tiles[self.tile]
        if tuple(x.shape[-2:]) != (tile.height, tile.width):
            raise RuntimeError(f"tiled decode asked for a {tuple(x.shape[-2:])} tile, expected {tile}: diffusers' "
                               "tiling changed; decode_tiles must follow it")
        count = 1 if first_chunk else 4
        out = self.decoded[self.tile][:, :, self.frame:self.frame + count]
        self.frame += count
        return out


def assemble_tiles(vae, latents: torch.Tensor, tiles: list[Tile], decoded: list[torch.Tensor]) -> torch.Tensor:
    """``vae.decode(latents).sample`` from tiles decoded beforehand: diffusers' tiled decode runs with its
    decoder replaced by the decoded tiles (its own blending and clamping; the 1x1x1 post-quant conv is
    recomputed, nothing else)."""
    decoder = vae.decoder
    vae.decoder = _ReplayDecoder(decoded, tiles)
    try:
        return vae.decode(latents).sample
    finally:
        vae.decoder = decoder
        vae.clear_cache()


def tiled_decode_over_ranks(vae, latents: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """``vae.decode(latents).sample`` with VAE tiling on, the tiles decoded over all ranks (biggest first
    to the least loaded rank) and exchanged: every rank gets the single-process tiled decode. Without
    tiling (or one rank) this is the plain decode on every rank."""
    tiles = decode_tiles(vae, latents)
    if tiles is None or state.world_size == 1:
        return vae.decode(latents).sample
    _onload(vae)
    tasks = {f"tile{i}": (tile.area, lambda tile=tile: decode_tile(vae, latents, tile)) for i, tile in enumerate(tiles)}
    with torch.no_grad():
        decoded = state.run_split(tasks)
        return assemble_tiles(vae, latents, tiles, [decoded[f"tile{i}"] for i in range(len(tiles))])
