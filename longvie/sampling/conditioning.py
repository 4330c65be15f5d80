"""Turning images, videos and prompts into the tensors the denoiser takes (SPEC §1-2).

Pixels are float tensors in [-1, 1] laid out (B, 3, T, H, W) for video, (B, 3, H, W) for images.
"""
from __future__ import annotations

import html
import re

import ftfy
import numpy as np
import torch
import torch.nn.functional as F

from ..media.video_io import to_frame_array
from ..weights.original_layout import CLIP_MEAN, CLIP_STD

TEXT_LENGTH = 512  # umT5 context length of Wan2.1


# --------------------------------------------------------------------------- pixels
def frames_to_tensor(frames) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) array or list of PIL images -> float (1, 3, T, H, W) in [-1, 1]."""
    array = to_frame_array(frames)
    video = torch.from_numpy(np.ascontiguousarray(array)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    return video.unsqueeze(0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) float in [-1, 1] -> uint8 (T, H, W, 3)."""
    video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


# --------------------------------------------------------------------------- text
def clean_prompt(text: str) -> str:
    """Wan2.1's prompt cleaning, applied to every prompt and negative prompt before umT5 tokenisation.

    As Wan2.1's tokenizer with ``clean="whitespace"`` (wan/modules/tokenizers.py: ``basic_clean`` then
    ``whitespace_clean``), which upstream LongVie inherits through DiffSynth's Wan prompter:
    ``ftfy.fix_text`` (repairs mojibake and maps curly quotes, full-width characters and ligatures to
    ASCII, which changes the umT5 token ids), HTML-unescape twice, strip, collapse whitespace runs to
    one space. ftfy is a hard dependency so every install encodes prompts the same way.
    """
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompts: list[str], device, dtype) -> torch.Tensor:
    """umT5 embeddings (B, 512, D); positions past each prompt's length are exactly zero (SPEC §1)."""
    tokens = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=TEXT_LENGTH,
                       truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
    return hidden.to(dtype)


# --------------------------------------------------------------------------- image (CLIP)
def clip_pixel_values(images: torch.Tensor, image_processor=None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> CLIP input (B, 3, S, S).

    Wan2.1 squashes the whole frame to S x S with bicubic interpolation (no crop) before the
    CLIP normalisation; we do the same so the image tokens match the released model's.
    """
    size, mean, std = 224, CLIP_MEAN, CLIP_STD
    if image_processor is not None:
        crop = getattr(image_processor, "crop_size", None) or {}
        size = crop.get("height", None) or (getattr(image_processor, "size", None) or {}).get("shortest_edge", size)
        mean = tuple(image_processor.image_mean)
        std = tuple(image_processor.image_std)
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x.mul(0.5).add(0.5)
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_image(image_encoder, pixel_values: torch.Tensor, dtype) -> torch.Tensor:
    """CLIP penultimate-layer tokens (B, 1 + patches, D), as Wan2.1 uses them (no final norm)."""
    encoder_dtype = next(image_encoder.parameters()).dtype
    out = image_encoder(pixel_values=pixel_values.to(encoder_dtype), output_hidden_states=True)
    return out.hidden_states[-2].to(dtype)


# --------------------------------------------------------------------------- VAE
def _latent_stats(vae, like: torch.Tensor):
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return mean, std


def vae_encode(vae, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, 16, 1 + (T-1)//4, H/8, W/8), float32.

    Uses the posterior mean (no sampling), normalised with the VAE's per-channel mean/std.
    """
    vae_dtype = next(vae.parameters()).dtype
    latents = vae.encode(video.to(vae_dtype)).latent_dist.mode().float()
    mean, std = _latent_stats(vae, latents)
    return (latents - mean) / std


def vae_decode(vae, latents: torch.Tensor, decode=None) -> torch.Tensor:
    """Normalised latents (B, 16, F, h, w) -> video (B, 3, 1 + 4(F-1), 8h, 8w) in [-1, 1].

    ``decode``: optional ``f(z) -> pixels`` replacing ``vae.decode(z).sample`` (the decode split over ranks)."""
    mean, std = _latent_stats(vae, latents)
    vae_dtype = next(vae.parameters()).dtype
    z = (latents.float() * std + mean).to(vae_dtype)
    return (vae.decode(z).sample if decode is None else decode(z)).float()


def i2v_mask(batch: int, latent_frames: int, height: int, width: int, device=None) -> torch.Tensor:
    """The Wan2.1 I2V mask (B, 4, F, h, w): first latent frame all ones, the rest zeros.

    Equivalent to Wan's construction (first pixel frame repeated 4x, then 4 frames folded per
    latent frame) for a single conditioning frame.
    """
    mask = torch.zeros(batch, 4, latent_frames, height, width, device=device)
    mask[:, :, 0] = 1.0
    return mask


def first_frame_latents(vae, first: torch.Tensor, num_frames: int) -> torch.Tensor:
    """VAE(first frame followed by num_frames-1 empty frames) -> (B, 16, F, h, w).

    "Empty" is 0 in the model's [-1, 1] pixel space, as in Wan2.1 and upstream LongVie.
    """
    batch, channels, height, width = first.shape
    video = torch.zeros(batch, channels, num_frames, height, width, device=first.device, dtype=first.dtype)
    video[:, :, 0] = first
    return vae_encode(vae, video)


def image_condition(vae, first: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The DiT's 20 conditioning channels: [I2V mask 4, first-frame latents 16] (B, 20, F, h, w)."""
    latents = first_frame_latents(vae, first, num_frames)
    mask = i2v_mask(latents.shape[0], *latents.shape[2:], device=latents.device)
    return torch.cat([mask, latents], dim=1)


def control_condition(vae, control_video: torch.Tensor) -> torch.Tensor:
    """One control branch input (B, 36, F, h, w) = [VAE(video) 16, mask 4, VAE(first frame + empty) 16].

    Note the order: the control video latents come first, unlike the DiT input (SPEC §2).
    """
    video_latents = vae_encode(vae, control_video)
    return torch.cat([video_latents, image_condition(vae, control_video[:, :, 0], control_video.shape[2])], dim=1)
