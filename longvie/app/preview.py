"""A cheap live preview of a clip while it denoises: the current estimate of the clean latents,
projected to RGB by a fixed linear map (no VAE decode), a few latent frames side by side.

The map is the one ComfyUI's "Latent2RGB" previews use for Wan 2.1 latents (the 16x3
``latent_rgb_factors`` and the bias of ``comfy/latent_formats.py``, class ``Wan21``, and
``latent_preview.py``: rgb = x0 . factors + bias, then [-1, 1] -> [0, 255]). ComfyUI applies it to
the model-side latents, normalised per channel with the VAE's mean and std exactly as
:func:`longvie.sampling.conditioning.vae_encode` does, so it applies to ours as they are. The
numbers are data (a least-squares fit of RGB on latents), cited here, not code.
"""
from __future__ import annotations

import numpy as np

__all__ = ["WAN21_LATENT_RGB_FACTORS", "WAN21_LATENT_RGB_BIAS", "latents_to_rgb", "preview_strip",
           "preview_every"]

# ComfyUI comfy/latent_formats.py, class Wan21 (rows: latent channels 0..15; columns: R, G, B).
WAN21_LATENT_RGB_FACTORS = np.array([
    [-0.1299, -0.1692, 0.2932],
    [0.0671, 0.0406, 0.0442],
    [0.3568, 0.2548, 0.1747],
    [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328],
    [0.0296, -0.0956, -0.0665],
    [-0.3477, -0.4059, -0.2925],
    [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364],
    [-0.1293, 0.0740, 0.1636],
    [0.0680, 0.3019, 0.1128],
    [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699],
    [0.0060, -0.0633, 0.0005],
    [0.3477, 0.2275, 0.2950],
    [0.1984, 0.0913, 0.1861],
], dtype=np.float32)
WAN21_LATENT_RGB_BIAS = np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32)


def latents_to_rgb(latents) -> np.ndarray:
    """Normalised Wan 2.1 latents (16, F, h, w) or (B, 16, F, h, w) (batch item 0 is used; a torch
    tensor on any device, or an array) -> uint8 RGB frames (F, h, w, 3)."""
    import torch

    x = latents if isinstance(latents, torch.Tensor) else torch.as_tensor(np.asarray(latents))
    if x.ndim == 5:
        x = x[0]
    if x.ndim != 4 or x.shape[0] != WAN21_LATENT_RGB_FACTORS.shape[0]:
        raise ValueError(f"expected Wan 2.1 latents (16, F, h, w), got shape {tuple(x.shape)}")
    factors = torch.as_tensor(WAN21_LATENT_RGB_FACTORS, device=x.device)
    bias = torch.as_tensor(WAN21_LATENT_RGB_BIAS, device=x.device)
    rgb = torch.einsum("cfhw,cr->fhwr", x.detach().float(), factors) + bias  # on the model's device: small
    rgb = ((rgb.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return rgb.cpu().numpy()


def preview_strip(latents, max_frames: int = 4, scale: int = 4, min_width: int = 480) -> np.ndarray:
    """Up to ``max_frames`` evenly spaced latent frames side by side, enlarged ``scale`` times, or
    more to be ``min_width`` pixels wide (nearest neighbour: a latent pixel stands for an 8x8 block
    of the video), as one uint8 RGB image."""
    frames = latents_to_rgb(latents)
    count = len(frames)
    shown = min(max_frames, count)
    picks = sorted({round(i * (count - 1) / max(shown - 1, 1)) for i in range(shown)})
    gap = np.full((frames.shape[1], 1, 3), 255, dtype=np.uint8)
    parts = []
    for index in picks:
        parts += [frames[index], gap]
    strip = np.concatenate(parts[:-1], axis=1)
    scale = max(scale, -(-min_width // strip.shape[1]))
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def preview_every(steps: int, target: int = 10) -> int:
    """Look at the estimate every this many steps: about ``target`` previews a clip, every step
    for short schedules (4-step modes, the tiny preset)."""
    return max(1, int(steps) // max(int(target), 1))
