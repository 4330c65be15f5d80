"""One LongVie 2 denoiser call: Wan2.1-I2V DiT + dual control branch + history context.

SPEC §1-3. The DiT is diffusers' ``WanTransformer3DModel``; we reuse its embeddings, blocks
and head, and only write the parts LongVie changes:

* control injection: after main block ``i < depth`` the control branch's residual is added to
  the current clip's tokens;
* history context: the previous clip's last frames (as latents, with 20 channels of ones in
  front) are patch-embedded and placed *before* the clip's tokens in the main stream, with RoPE
  frame indices 0..Fh-1 (the clip then uses Fh..Fh+F-1); they are dropped before the head.
"""
from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
from torch import nn

from .control_branch import LongVieControlBranch

HISTORY_ONES_CHANNELS = 20  # mask (4) + image-latent (16) slots of the DiT input, set to ones for history (SPEC §3)


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


class LongVieDenoiser(nn.Module):
    """Velocity predictor for one clip.

    Holds the diffusers Wan transformer (``self.transformer``) and the LongVie control branch
    (``self.control``). See :meth:`forward` for shapes.
    """

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
        "native" (PyTorch SDPA, the default), "flash" (flash-attn 2), "_flash_3", "sage", ..."""
        self.transformer.set_attention_backend(backend)
        self.control.set_attention_backend(backend)

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        self.control.enable_gradient_checkpointing()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 36, F, H, W) -> (B, F*H/2*W/2, dim) with the DiT's (shared) patch embedding."""
        return self.transformer.patch_embedding(x).flatten(2).transpose(1, 2)

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
        Returns:
            (B, 16, F, H, W) velocity, in the dtype of the model.
        """
        t = self.transformer
        batch, _, frames, height, width = latents.shape
        for name, tensor, channels in (("image_latents", image_latents, 20), ("dense_latents", dense_latents, 36),
                                       ("sparse_latents", sparse_latents, 36)):
            if tensor.shape != (batch, channels, frames, height, width):
                raise ValueError(f"{name} must be {(batch, channels, frames, height, width)}, got {tuple(tensor.shape)}")
        p_t, p_h, p_w = t.config.patch_size
        grid = (frames // p_t, height // p_h, width // p_w)

        temb, timestep_proj, text_context, image_context = t.condition_embedder(timestep, text_embeds, image_embeds)
        t_mod = timestep_proj.unflatten(1, (6, -1))  # (B, 6, dim)
        context = torch.cat([image_context, text_context], dim=1)

        tokens = self._embed(torch.cat([latents, image_latents], dim=1))
        clip_rope = rotary_embedding(t.rope, *grid, device=tokens.device)
        num_history = 0
        main_rope = clip_rope
        if history_latents is not None:
            if history_latents.shape[0] != batch or history_latents.shape[1] != 16 or \
                    history_latents.shape[3:] != latents.shape[3:]:
                raise ValueError(f"history_latents must be (B={batch}, 16, Fh, {height}, {width}), "
                                 f"got {tuple(history_latents.shape)}")
            ones = history_latents.new_ones(batch, HISTORY_ONES_CHANNELS, *history_latents.shape[2:])
            history_tokens = self._embed(torch.cat([ones, history_latents], dim=1))
            history_frames = history_latents.shape[2] // p_t
            num_history = history_tokens.shape[1]
            tokens = torch.cat([history_tokens, tokens], dim=1)
            main_rope = tuple(torch.cat([h, c], dim=1) for h, c in zip(
                rotary_embedding(t.rope, history_frames, grid[1], grid[2], device=tokens.device),
                rotary_embedding(t.rope, grid[0], grid[1], grid[2], frame_offset=history_frames, device=tokens.device)))

        dense, sparse, control_context, control_t_mod = self.control.prepare(
            self._embed(dense_latents), self._embed(sparse_latents), context, t_mod, dense_scale)

        checkpointing = torch.is_grad_enabled() and t.gradient_checkpointing
        for index, block in enumerate(t.blocks):
            if checkpointing:
                tokens = t._gradient_checkpointing_func(block, tokens, context, t_mod, main_rope)
            else:
                tokens = block(tokens, context, t_mod, main_rope)
            if index < self.control.depth:
                dense, sparse, residual = self.control.step(index, dense, sparse, control_context,
                                                            control_t_mod, clip_rope)
                if control_scale != 1.0:
                    residual = residual * control_scale
                if num_history:
                    tokens = torch.cat([tokens[:, :num_history], tokens[:, num_history:] + residual], dim=1)
                else:
                    tokens = tokens + residual
        tokens = tokens[:, num_history:]

        # Output head, as in diffusers' WanTransformer3DModel.forward (the head uses t, not t_mod).
        shift, scale = (t.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        tokens = (t.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
        tokens = t.proj_out(tokens)
        out = tokens.reshape(batch, *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)
