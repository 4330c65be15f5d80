"""Random denoiser inputs at the tiny preset's widths (text dim 32), shared by the model and weight tests."""
from __future__ import annotations

import torch

B, F, H, W = 1, 3, 8, 14  # latent grid: 3 frames, 8x14 -> 4x7 tokens per frame


def make_inputs(seed=0, batch=B):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return dict(latents=randn(batch, 16, F, H, W), timestep=torch.full((batch,), 620.0),
                text_embeds=randn(batch, 512, 32), image_embeds=randn(batch, 5, 32),
                image_latents=randn(batch, 20, F, H, W), dense_latents=randn(batch, 36, F, H, W),
                sparse_latents=randn(batch, 36, F, H, W))
