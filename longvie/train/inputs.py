"""From one training sample to the denoiser's inputs, with the model-level degradations.

A sample (see :class:`longvie.train.data.ClipDataset` and :class:`longvie.train.cache.CachedClipDataset`)
holds uint8 frames and/or precomputed latents. :class:`InputEncoder` fills in whatever is missing
with the frozen VAE / umT5 / CLIP, then applies the plan's first-frame and history degradations
(SPEC §6), which need the VAE and, for re-generation, the denoiser itself.

Shapes (batch size 1): pixels (1, 3, T, H, W) in [-1, 1]; latents (1, 16, F, H/8, W/8) with
F = 1 + (T-1)/4; see :class:`ClipInputs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sampling.conditioning import (
    clip_pixel_values,
    control_condition,
    encode_image,
    encode_prompt,
    image_condition,
    vae_encode,
)
from .degradations import FrameDegradation, color_drift, regenerate_first_frame, vae_roundtrip


@dataclass
class ClipInputs:
    """Everything one training step needs (float32 latents; the model casts).

    latents: (1, 16, F, h, w) clean clip latents x0.
    text_embeds: (1, 512, text_dim); image_embeds: (1, L_img, image_dim).
    image_latents: (1, 20, F, h, w) [I2V mask, VAE(conditioning frame + black frames)].
    dense_latents, sparse_latents: (1, 36, F, h, w) control inputs.
    history_latents: (1, 16, Fh, h, w) or None.
    dense_scale: stage-1 dense weakening factor or None.
    degraded: whether the conditioning frame was degraded (stage-3 loss terms apply).
    degraded_latent: (1, 16, 1, h, w) VAE latent of the (degraded) conditioning frame, when degraded.
    history_last_latent: (1, 16, 1, h, w) VAE latent of the last history frame, when degraded with history.
    """

    latents: torch.Tensor
    text_embeds: torch.Tensor
    image_embeds: torch.Tensor
    image_latents: torch.Tensor
    dense_latents: torch.Tensor
    sparse_latents: torch.Tensor
    history_latents: torch.Tensor | None = None
    dense_scale: float | None = None
    degraded: bool = False
    degraded_latent: torch.Tensor | None = None
    history_last_latent: torch.Tensor | None = None

    def model_kwargs(self, dtype: torch.dtype) -> dict:
        """Keyword arguments of ``LongVieDenoiser.forward`` other than latents and timestep."""
        kwargs = dict(text_embeds=self.text_embeds, image_embeds=self.image_embeds, image_latents=self.image_latents,
                      dense_latents=self.dense_latents, sparse_latents=self.sparse_latents)
        kwargs = {k: v.to(dtype) for k, v in kwargs.items()}
        kwargs["history_latents"] = None if self.history_latents is None else self.history_latents.to(dtype)
        kwargs["dense_scale"] = self.dense_scale
        return kwargs


def to_pixels(frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]; (H, W, 3) -> (1, 3, H, W)."""
    x = frames.to(device).float().div(127.5).sub(1.0)
    return x.permute(3, 0, 1, 2).unsqueeze(0) if x.ndim == 4 else x.permute(2, 0, 1).unsqueeze(0)


class InputEncoder:
    """Frozen encoders of Wan2.1-I2V: VAE, umT5 (+ tokenizer), CLIP vision tower (+ processor).

    An encoder may be None when the run never needs it (training from a latent cache,
    ``runtime.encoders_needed``); asking it for work then raises a RuntimeError naming it."""

    def __init__(self, vae, tokenizer, text_encoder, image_encoder, image_processor, device, dtype):
        self.vae, self.tokenizer, self.text_encoder = vae, tokenizer, text_encoder
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.device, self.dtype = torch.device(device), dtype

    def _require(self, name: str):
        model = getattr(self, name)
        if model is None:
            raise RuntimeError(f"the {name} was not loaded: training from a latent cache loads only the encoders "
                               "the stage's degradations use, but this sample needs it (a cache entry missing its "
                               "encodings?); rebuild the latent cache or train without --cache-dir")
        return model

    # ------------------------------------------------------------------ clean encodings (cacheable)
    @torch.no_grad()
    def text(self, text: str) -> torch.Tensor:
        return encode_prompt(self.tokenizer, self._require("text_encoder"), [text], self.device, self.dtype)

    @torch.no_grad()
    def video(self, pixels: torch.Tensor) -> torch.Tensor:
        return vae_encode(self._require("vae"), pixels)

    @torch.no_grad()
    def first_frame(self, frame: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) -> CLIP tokens (1, L, D) and image latents (1, 20, F, h, w)."""
        embeds = encode_image(self._require("image_encoder"),
                              clip_pixel_values(frame, self.image_processor).to(self.device), self.dtype)
        return embeds, image_condition(self._require("vae"), frame, num_frames)

    @torch.no_grad()
    def control(self, pixels: torch.Tensor) -> torch.Tensor:
        return control_condition(self._require("vae"), pixels)

    @torch.no_grad()
    def clean(self, sample: dict) -> dict[str, torch.Tensor]:
        """The clean, cacheable encodings of a pixel sample (no degradation)."""
        video = to_pixels(sample["video"], self.device)
        image_embeds, image_latents = self.first_frame(video[:, :, 0], video.shape[2])
        return dict(latents=self.video(video), text_embeds=self.text(sample["text"]), image_embeds=image_embeds,
                    image_latents=image_latents, dense_latents=self.control(to_pixels(sample["depth"], self.device)),
                    sparse_latents=self.control(to_pixels(sample["track"], self.device)))

    # ------------------------------------------------------------------ one training sample
    @torch.no_grad()
    def degrade(self, pixels: torch.Tensor, degradation: FrameDegradation, denoiser=None, latents=None,
                noise=None, conditions=None) -> torch.Tensor:
        """Apply a :class:`FrameDegradation` (re-generation, then VAE round trips, then colour drift)."""
        if degradation.regen_timestep is not None:
            pixels = regenerate_first_frame(denoiser, self._require("vae"), latents, degradation.regen_timestep,
                                            noise, conditions)
        if degradation.vae_rounds:
            pixels = vae_roundtrip(self._require("vae"), pixels, degradation.vae_rounds)
        if degradation.drift is not None:
            pixels = color_drift(pixels, degradation.drift)
        return pixels

    @torch.no_grad()
    def __call__(self, sample: dict, denoiser=None, generator: torch.Generator | None = None,
                 degraded_terms: bool = False) -> ClipInputs:
        """Encode one sample and apply its plan.

        Args:
            sample: a dataset item (pixels and/or cached latents, and ``plan``).
            denoiser: the (unwrapped) model being trained, for re-generation.
            generator: CPU generator for the re-generation noise.
            degraded_terms: also encode what the stage-3 degraded-frame loss needs.
        """
        plan, device = sample["plan"], self.device
        cached = {k: sample[k].to(device) for k in ("latents", "text_embeds", "image_embeds", "image_latents",
                                                       "dense_latents", "sparse_latents") if k in sample}
        num_frames = sample["video"].shape[0] if "video" in sample else 1 + 4 * (cached["latents"].shape[2] - 1)
        latents = cached.get("latents")
        if latents is None:
            latents = self.video(to_pixels(sample["video"], device))
        text_embeds = cached.get("text_embeds")
        if text_embeds is None:
            text_embeds = self.text(sample["text"])
        # A degraded depth video arrives as pixels even from the cache.
        dense = self.control(to_pixels(sample["depth"], device)) if "depth" in sample else cached["dense_latents"]
        sparse = self.control(to_pixels(sample["track"], device)) if "track" in sample else cached["sparse_latents"]
        frame = to_pixels(sample["first_frame"], device)
        if "image_embeds" in cached:
            image_embeds, image_latents = cached["image_embeds"], cached["image_latents"]
        else:
            image_embeds, image_latents = self.first_frame(frame, num_frames)

        history = to_pixels(sample["history"], device) if plan.history_frames else None
        degraded = False
        if history is not None and plan.history is not None:
            # Degraded history (a generated previous clip): its last frame is the conditioning frame.
            history = self.degrade(history, plan.history)
            frame, degraded = history[:, :, -1], True
        if plan.first_frame is not None and plan.first_frame.changes_pixels:
            noise = None
            if plan.first_frame.regen_timestep is not None:
                noise = torch.randn(latents.shape, generator=generator).to(device)
            conditions = dict(text_embeds=text_embeds, image_embeds=image_embeds, image_latents=image_latents,
                              dense_latents=dense, sparse_latents=sparse)
            frame = self.degrade(frame, plan.first_frame, denoiser, latents, noise, conditions)
            degraded = True
        if degraded:
            image_embeds, image_latents = self.first_frame(frame, num_frames)

        inputs = ClipInputs(latents=latents, text_embeds=text_embeds, image_embeds=image_embeds,
                            image_latents=image_latents, dense_latents=dense, sparse_latents=sparse,
                            history_latents=self.video(history) if history is not None else None,
                            dense_scale=plan.dense_scale, degraded=degraded)
        if degraded and degraded_terms:
            inputs.degraded_latent = self.video(frame.unsqueeze(2))
            if history is not None:
                inputs.history_last_latent = self.video(history[:, :, -1:])
        return inputs
