"""Classifier-free guidance over the denoiser: v = v_neg + g (v_pos - v_neg) (SPEC §4).

Three ways to get both velocities, same math: two calls one after the other (least memory), one
call on a batch of 2 (``cfg_batch``: the GPU sees twice the tokens per kernel), or, under
CFG-parallelism, one branch per rank and an all-gather (``parallel.cfg_degree == 2``).
Each branch keeps its own :class:`~longvie.models.denoiser.ClipCache`, so the per-clip work
(context, patch embeddings, control projections, RoPE) is done once per clip and branch.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..models.denoiser import ClipCache, LongVieDenoiser


class GuidedVelocity:
    """The guided velocity of one clip at any timestep.

    Args:
        denoiser: the LongVie denoiser (called through ``__call__`` so that offload hooks run).
        positive, negative: (B, 512, text_dim) prompt embeddings; ``negative`` None = no guidance.
        conditions: the other denoiser inputs of the clip (image_embeds, image_latents, dense_latents,
            sparse_latents, history_latents), each with batch B.
        guidance_scale: g.
        control_scale: multiplier of the control residual.
        cfg_batch: both branches as one batch of 2B.
        parallel: optional :class:`~longvie.acceleration.parallel.ParallelState` (sequence and/or
            CFG parallelism); it shards each branch's prepared clip and gathers the CFG branches.
        make_block_stack: optional factory of a per-branch ``block_stack`` (step caching).
    """

    def __init__(self, denoiser: LongVieDenoiser, positive: torch.Tensor, negative: torch.Tensor | None,
                 conditions: dict, guidance_scale: float, control_scale: float = 1.0, cfg_batch: bool = False,
                 parallel=None, make_block_stack: Callable[[], Callable] | None = None):
        self.denoiser = denoiser
        self.guidance_scale = guidance_scale
        self.control_scale = control_scale
        self.parallel = parallel
        self.batch = positive.shape[0]
        cfg_parallel = parallel is not None and parallel.cfg_degree > 1
        if negative is None and cfg_parallel:
            raise ValueError("CFG-parallel needs classifier-free guidance (guidance_scale != 1)")
        transform = parallel.shard_clip if parallel is not None else None
        make_block_stack = make_block_stack or (lambda: None)

        def branch(text, batch_repeat=1):
            conds = {k: (None if v is None else (v if batch_repeat == 1 else torch.cat([v] * batch_repeat)))
                     for k, v in conditions.items()}
            return dict(text_embeds=text, conditions=conds, cache=ClipCache(transform), block_stack=make_block_stack())

        if negative is None:
            self.mode, self.branches = "none", [branch(positive)]
        elif cfg_parallel:
            self.mode = "parallel"
            self.branches = [branch(positive if parallel.cfg_rank == 0 else negative)]
        elif cfg_batch:
            self.mode, self.branches = "batch", [branch(torch.cat([positive, negative]), batch_repeat=2)]
        else:
            self.mode, self.branches = "sequential", [branch(positive), branch(negative)]

    def _call(self, branch, latents, timestep):
        repeat = branch["text_embeds"].shape[0] // latents.shape[0]
        if repeat > 1:
            latents, timestep = torch.cat([latents] * repeat), torch.cat([timestep] * repeat)
        return self.denoiser(latents, timestep, branch["text_embeds"], **branch["conditions"],
                             control_scale=self.control_scale, clip_cache=branch["cache"],
                             block_stack=branch["block_stack"]).float()

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """latents (B, 16, F, H, W) in the model dtype, timestep (B,) -> guided velocity (B, 16, F, H, W) float32."""
        if self.mode == "none":
            return self._call(self.branches[0], latents, timestep)
        if self.mode == "sequential":
            positive = self._call(self.branches[0], latents, timestep)
            negative = self._call(self.branches[1], latents, timestep)
        elif self.mode == "batch":
            positive, negative = self._call(self.branches[0], latents, timestep).chunk(2)
        else:
            positive, negative = self.parallel.gather_guidance(self._call(self.branches[0], latents, timestep))
        return negative + self.guidance_scale * (positive - negative)
