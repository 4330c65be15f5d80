"""One LongVie 2 denoiser call: Wan2.1-I2V DiT + dual control branch + history context.

SPEC §1-3. The DiT is diffusers' ``WanTransformer3DModel``; we reuse its embeddings, blocks
and head, and only write the parts LongVie changes:

* control injection: after main block ``i < depth`` the control branch's residual is added to
  the current clip's tokens;
* history context: the previous clip's last frames (as latents, with 20 channels of ones in
  front) are patch-embedded and placed *before* the clip's tokens in the main stream, with RoPE
  frame indices 0..Fh-1 (the clip then uses Fh..Fh+F-1); they are dropped before the head.

Two ways to call it, same math:

* ``denoiser(latents, timestep, text_embeds, ...)``: everything is computed in the call (training);
* ``denoiser(latents, timestep, text_embeds, ..., clip_cache=ClipCache())`` (sampling): the first
  call computes what does not depend on the noisy latents or the timestep — the text/CLIP context
  and its control projection, the patch embeddings of the image, control and history latents, the
  control branch's input projections, the RoPE tables — into a :class:`PreparedClip`; later calls of
  the same clip reuse it and only embed the latents and the timestep and run the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
from torch import nn

from .control_branch import LongVieControlBranch

HISTORY_ONES_CHANNELS = 20  # mask (4) + image-latent (16) slots of the DiT input, set to ones for history (SPEC §3)
LATENT_CHANNELS = 16        # noisy-latent channels in front of the DiT input (SPEC §1)


def rotary_embedding(rope: WanRotaryPosEmbed, frames: int, height: int, width: int, frame_offset: int = 0,
                     device=None):
    """3D RoPE tables for a (frames, height, width) token grid whose frame index starts at ``frame_offset``.

    Same layout as diffusers' ``WanRotaryPosEmbed.forward`` (which always starts at 0):
    returns ``(cos, sin)``, each (1, frames*height*width, 1, head_dim), on ``device``.
    """
    if frame_offset + frames > rope.max_seq_len or max(height, width) > rope.max_seq_len:
        raise ValueError(f"RoPE table holds {rope.max_seq_len} positions; asked for frames "
                         f"{frame_offset}..{frame_offset + frames - 1} and a {height}x{width} grid")
    split = [rope.t_dim, rope.h_dim, rope.w_dim]
    tables = []
    for table in (rope.freqs_cos, rope.freqs_sin):
        t, h, w = table.split(split, dim=1)
        t = t[frame_offset:frame_offset + frames].view(frames, 1, 1, -1).expand(frames, height, width, -1)
        h = h[:height].view(1, height, 1, -1).expand(frames, height, width, -1)
        w = w[:width].view(1, 1, width, -1).expand(frames, height, width, -1)
        tables.append(torch.cat([t, h, w], dim=-1).reshape(1, frames * height * width, 1, -1).to(device))
    return tables[0], tables[1]


@dataclass
class PreparedClip:
    """What one clip's denoiser calls share: independent of the noisy latents and the timestep.

    N = clip tokens (F * H/2 * W/2), Nh = history tokens, L = 257 image + 512 text context tokens.
    ``clip_tokens`` says which clip tokens the token-shaped tensors hold: all of them, or one
    contiguous shard under sequence parallelism (then ``gather_tokens`` puts the shards back together).
    """

    grid: tuple[int, int, int]                 # clip token grid (F', H', W') after patching
    batch: int
    context: torch.Tensor                      # (B, L, dim) after the DiT's text and image embedders
    control_context: torch.Tensor              # (B, L, dim/2) control_text_linear(context)
    image_tokens: torch.Tensor | None          # (B, n, dim) float32: patch embedding of the 20 mask/image
    #                                            channels, conv bias included (the conv is linear in its input);
    #                                            None when an offload hook streams the patch embedding's weight
    image_latents: torch.Tensor                # (B, 20, F, H, W), for the unsplit embedding when image_tokens is None
    history_tokens: torch.Tensor | None        # (B, nh, dim) patch embedding of [ones(20), history latents]
    dense: torch.Tensor                        # (B, n, dim/2) control input after its projection
    sparse: torch.Tensor                       # (B, n, dim/2)
    main_rope: tuple[torch.Tensor, torch.Tensor]     # (1, nh + n, 1, head_dim) x 2: history 0..Fh-1, clip Fh..
    control_rope: tuple[torch.Tensor, torch.Tensor]  # (1, n, 1, head_dim) x 2: clip 0..F-1
    clip_tokens: slice = field(default_factory=lambda: slice(None))  # which of the N clip tokens the tensors above hold
    gather_tokens: Callable[[torch.Tensor], torch.Tensor] | None = None  # (B, n, C) -> (B, N, C)

    @property
    def num_history(self) -> int:
        return 0 if self.history_tokens is None else self.history_tokens.shape[1]

    def replace(self, **changes) -> "PreparedClip":
        return replace(self, **changes)


class ClipCache:
    """Holds the :class:`PreparedClip` of one clip across its denoiser calls (one per clip and guidance branch).

    ``transform`` (optional) is applied once to the prepared clip, e.g. to keep one rank's shard.
    The cache remembers which condition tensors it was built from and refuses others.
    """

    def __init__(self, transform: Callable[[PreparedClip], PreparedClip] | None = None):
        self.transform = transform
        self.prepared: PreparedClip | None = None
        self._key: tuple | None = None

    def get(self, key: tuple, build: Callable[[], PreparedClip]) -> PreparedClip:
        if self.prepared is None:
            prepared = build()
            self.prepared = self.transform(prepared) if self.transform is not None else prepared
            self._key = key
        elif key != self._key:
            raise ValueError("this ClipCache holds another clip's conditions: use one ClipCache per clip "
                             "(and per guidance branch)")
        return self.prepared


@dataclass
class StreamState:
    """The three token streams between blocks: main (B, nh + n, dim), dense and sparse (B, n, dim/2).

    After the last control block nothing reads the control streams again: ``dense`` and ``sparse``
    are None from there on (their memory is freed for the remaining main blocks)."""

    tokens: torch.Tensor | None
    dense: torch.Tensor | None
    sparse: torch.Tensor | None


@dataclass
class StepInputs:
    """Per-call (timestep-dependent) inputs of the blocks."""

    t_mod: torch.Tensor           # (B, 6, dim)
    control_t_mod: torch.Tensor   # (B, 6, dim/2)
    control_scale: float
    clip: PreparedClip


# run_blocks(state, start, stop) -> state: blocks start..stop-1 with their control injections.
BlockRange = Callable[[StreamState, int, int], StreamState]


class LongVieDenoiser(nn.Module):
    """Velocity predictor for one clip.

    Holds the diffusers Wan transformer (``self.transformer``) and the LongVie control branch
    (``self.control``). See :meth:`forward` for shapes.
    """

    _repeated_blocks = ["WanTransformerBlock"]  # 40 main + 2 x 12 control blocks: regional compilation unit

    def __init__(self, transformer: WanTransformer3DModel, control: LongVieControlBranch):
        super().__init__()
        main_dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        if control.config.main_dim != main_dim:
            raise ValueError(f"control branch expects a {control.config.main_dim}-wide DiT, got {main_dim}")
        self.transformer = transformer
        self.control = control

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.patch_embedding.weight.device

    def set_attention_backend(self, backend: str) -> None:
        """Attention kernel for the DiT and the control branch, through diffusers' dispatcher:
        "native" (PyTorch SDPA, the default), "flash" (flash-attn 2), "_flash_3", "sage", ...

        Only this denoiser's attention layers change: diffusers' ``set_attention_backend`` also makes the
        backend the process-wide default of every other model whose layers name none (its registry's
        active backend); that default is put back here, so that choosing e.g. "flex" for one denoiser
        does not change what a model built later (the memory estimator's, another row's) runs."""
        try:
            from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry
        except ImportError:  # an older diffusers without the dispatcher's registry
            registry = None
        previous = getattr(registry, "_active_backend", None)
        try:
            self.transformer.set_attention_backend(backend)
            self.control.set_attention_backend(backend)
        finally:
            if previous is not None:
                registry._active_backend = previous

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        self.control.enable_gradient_checkpointing()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 36, F, H, W) -> (B, F*H/2*W/2, dim) with the DiT's (shared) patch embedding."""
        return self.transformer.patch_embedding(x).flatten(2).transpose(1, 2)

    # ------------------------------------------------------------------ per clip
    def _check_conditions(self, latents, image_latents, dense_latents, sparse_latents, history_latents):
        batch, _, frames, height, width = latents.shape
        for name, tensor, channels in (("image_latents", image_latents, 20), ("dense_latents", dense_latents, 36),
                                       ("sparse_latents", sparse_latents, 36)):
            if tensor.shape != (batch, channels, frames, height, width):
                raise ValueError(f"{name} must be {(batch, channels, frames, height, width)}, got {tuple(tensor.shape)}")
        if history_latents is not None and (
                history_latents.shape[0] != batch or history_latents.shape[1] != LATENT_CHANNELS
                or history_latents.shape[3:] != latents.shape[3:]):
            raise ValueError(f"history_latents must be (B={batch}, 16, Fh, {height}, {width}), "
                             f"got {tuple(history_latents.shape)}")

    def prepare_clip(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor, image_latents: torch.Tensor,
                     dense_latents: torch.Tensor, sparse_latents: torch.Tensor,
                     history_latents: torch.Tensor | None = None,
                     dense_scale: torch.Tensor | float | None = None) -> PreparedClip:
        """Everything of a denoiser call that does not depend on the noisy latents or the timestep.

        Shapes as in :meth:`forward`. Call it through ``forward(..., clip_cache=...)`` when hooks
        (model offload) must see the call.
        """
        t = self.transformer
        p_t, p_h, p_w = t.config.patch_size
        batch, _, frames, height, width = image_latents.shape
        grid = (frames // p_t, height // p_h, width // p_w)

        # 1. context: image MLP + text embedder (the time embedder is per call), and its control projection
        emb = t.condition_embedder
        context = emb.text_embedder(text_embeds)                                     # (B, 512, dim)
        if image_embeds is not None:
            context = torch.cat([emb.image_embedder(image_embeds), context], dim=1)  # (B, 257 + 512, dim)
        control_context = self.control.control_text_linear(context)                  # (B, L, dim/2)

        # 2. patch embeddings: the image part of the DiT input (the conv is linear: W·[x; c] + b = W_x·x + (W_c·c + b)),
        #    the history tokens, the control tokens and their input projections
        weight, bias = t.patch_embedding.weight, t.patch_embedding.bias
        image_tokens = None
        if weight.device == image_latents.device:  # else: an offload hook brings the weight in per call
            image_tokens = F.conv3d(image_latents.float(), weight[:, LATENT_CHANNELS:].float(), bias.float(),
                                    stride=t.patch_embedding.stride).flatten(2).transpose(1, 2)  # (B, N, dim) fp32
        clip_rope = rotary_embedding(t.rope, *grid, device=image_latents.device)
        history_tokens, main_rope = None, clip_rope
        if history_latents is not None:
            ones = history_latents.new_ones(batch, HISTORY_ONES_CHANNELS, *history_latents.shape[2:])
            history_tokens = self._embed(torch.cat([ones, history_latents], dim=1))  # (B, Nh, dim)
            history_frames = history_latents.shape[2] // p_t
            main_rope = tuple(torch.cat([h, c], dim=1) for h, c in zip(
                rotary_embedding(t.rope, history_frames, grid[1], grid[2], device=image_latents.device),
                rotary_embedding(t.rope, *grid, frame_offset=history_frames, device=image_latents.device)))
        dense, sparse = self.control.prepare_tokens(self._embed(dense_latents), self._embed(sparse_latents),
                                                    dense_scale)
        return PreparedClip(grid=grid, batch=batch, context=context, control_context=control_context,
                            image_tokens=image_tokens, image_latents=image_latents, history_tokens=history_tokens,
                            dense=dense, sparse=sparse,
                            main_rope=main_rope, control_rope=clip_rope)

    # ------------------------------------------------------------------ per call
    def run_blocks(self, state: StreamState, start: int, stop: int, step: StepInputs,
                   release_input: bool = False) -> StreamState:
        """Main blocks ``start..stop-1``, each followed (for index < control depth) by the control step
        and its residual added to the clip tokens (never to the history tokens).

        ``release_input``: the caller hands ``state`` over (its fields are set to None), so the input
        tokens are freed as soon as block ``start`` has read them instead of living through the stack."""
        t, clip = self.transformer, step.clip
        tokens, dense, sparse = state.tokens, state.dense, state.sparse
        if release_input:
            state.tokens = state.dense = state.sparse = None
        num_history = clip.num_history
        checkpointing = torch.is_grad_enabled() and t.gradient_checkpointing
        for index in range(start, stop):
            block = t.blocks[index]
            if checkpointing:
                tokens = t._gradient_checkpointing_func(block, tokens, clip.context, step.t_mod, clip.main_rope)
            else:
                tokens = block(tokens, clip.context, step.t_mod, clip.main_rope)
            if index < self.control.depth:
                dense, sparse, residual = self.control.step(index, dense, sparse, clip.control_context,
                                                            step.control_t_mod, clip.control_rope)
                if step.control_scale != 1.0:
                    residual = residual * step.control_scale
                if num_history:
                    tokens = torch.cat([tokens[:, :num_history], tokens[:, num_history:] + residual], dim=1)
                else:
                    tokens = tokens + residual
                del residual  # not alive through the next block
                if index == self.control.depth - 1:
                    dense = sparse = None  # the control streams are read no more
        return StreamState(tokens, dense, sparse)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        image_latents: torch.Tensor,
        dense_latents: torch.Tensor,
        sparse_latents: torch.Tensor,
        history_latents: torch.Tensor | None = None,
        control_scale: float = 1.0,
        dense_scale: torch.Tensor | float | None = None,
        clip_cache: ClipCache | None = None,
        block_stack: Callable[[BlockRange, StreamState, int], StreamState] | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity (noise - x0) of one clip.

        Args:
            latents: (B, 16, F, H, W) noisy clip latents.
            timestep: (B,) in [0, 1000].
            text_embeds: (B, 512, text_dim) umT5 output, zero past the prompt's length.
            image_embeds: (B, L_img, image_dim) CLIP penultimate tokens (257 x 1280 for ViT-H/14).
            image_latents: (B, 20, F, H, W) I2V mask (4) + VAE latents of first image + black frames (16).
            dense_latents, sparse_latents: (B, 36, F, H, W) [VAE(control video) 16, mask 4,
                VAE(first control frame + black frames) 16] (SPEC §2).
            history_latents: optional (B, 16, Fh, H, W) latents of the previous clip's last frames.
            control_scale: multiplier of the control residual (1.0 = as trained).
            dense_scale: optional multiplier of the dense branch input (training-time weakening).
            clip_cache: optional :class:`ClipCache`; its first call prepares the clip, later calls reuse it
                (the condition tensors must then be the same objects).
            block_stack: optional ``f(run_blocks, state, num_blocks) -> state`` replacing the plain
                ``run_blocks(state, 0, num_blocks)`` (step caching). The state is handed over: the stack
                may release its fields; ``run_blocks(state, start, stop, release_input=True)`` does so
                once block ``start`` has read them.
        Returns:
            (B, 16, F, H, W) velocity, in the dtype of the model.
        """
        t = self.transformer
        self._check_conditions(latents, image_latents, dense_latents, sparse_latents, history_latents)
        conditions = (text_embeds, image_embeds, image_latents, dense_latents, sparse_latents, history_latents,
                      dense_scale)
        if clip_cache is None:
            clip = self.prepare_clip(*conditions)
        else:
            clip = clip_cache.get(tuple(map(id, conditions)), lambda: self.prepare_clip(*conditions))
        if latents.shape[0] != clip.batch:
            raise ValueError(f"latents hold {latents.shape[0]} clips, the prepared conditions {clip.batch}")

        # 1. timestep -> t (B, dim) for the head, t_mod (B, 6, dim) for the blocks, and its control projection
        emb = t.condition_embedder
        timestep = emb.timesteps_proj(timestep)
        time_dtype = next(iter(emb.time_embedder.parameters())).dtype
        if timestep.dtype != time_dtype and time_dtype != torch.int8:
            timestep = timestep.to(time_dtype)
        temb = emb.time_embedder(timestep).type_as(clip.context)                     # (B, dim)
        t_mod = emb.time_proj(emb.act_fn(temb)).unflatten(1, (6, -1))                 # (B, 6, dim)
        step = StepInputs(t_mod, self.control.control_t_mod(t_mod), control_scale, clip)

        # 2. main stream: [history tokens, clip tokens]; clip tokens = W_x·latents + prepared image part
        weight = t.patch_embedding.weight
        if clip.image_tokens is not None:
            latent_tokens = F.conv3d(latents.to(weight.dtype), weight[:, :LATENT_CHANNELS], None,
                                     stride=t.patch_embedding.stride).flatten(2).transpose(1, 2)  # (B, N, dim)
            tokens = (latent_tokens[:, clip.clip_tokens] + clip.image_tokens).to(weight.dtype)  # (B, n, dim)
            del latent_tokens  # read once: not alive through the blocks
        else:  # the unsplit 36-channel embedding, through the module (and its offload hook)
            tokens = self._embed(torch.cat([latents.to(clip.image_latents.dtype), clip.image_latents], dim=1))
            tokens = tokens[:, clip.clip_tokens]                                      # (B, n, dim)
        if clip.history_tokens is not None:
            tokens = torch.cat([clip.history_tokens, tokens], dim=1)                 # (B, nh + n, dim)

        # 3. blocks with control injection
        state = StreamState(tokens, clip.dense, clip.sparse)
        del tokens  # held by the state only: the plain path frees it once block 0 has read it
        def run(s, start, stop, release_input=False):  # a step cache may hand its state over (release_input)
            return self.run_blocks(s, start, stop, step, release_input=release_input)

        num_blocks = len(t.blocks)
        if block_stack is not None:
            state = block_stack(run, state, num_blocks)
        else:
            state = self.run_blocks(state, 0, num_blocks, step, release_input=True)
        tokens = state.tokens[:, clip.num_history:]                                   # (B, n, dim)

        # 4. output head, as in diffusers' WanTransformer3DModel.forward (the head uses t, not t_mod)
        shift, scale = (t.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        tokens = (t.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
        tokens = t.proj_out(tokens)                                                   # (B, n, p*16)
        if clip.gather_tokens is not None:
            tokens = clip.gather_tokens(tokens)                                       # (B, N, p*16)
        return self.unpatchify(tokens, clip.grid)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, F'*H'*W', p_t*p_h*p_w*C) -> (B, C, F'*p_t, H'*p_h, W'*p_w)."""
        p_t, p_h, p_w = self.transformer.config.patch_size
        out = tokens.reshape(tokens.shape[0], *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)
