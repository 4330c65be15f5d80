"""Training-time degradations of LongVie 2 (SPEC §6), as seeded, composable transforms.

Every random choice of a sample is drawn up front by :func:`sample_plan` from a generator seeded
with (seed, epoch, index), into a :class:`DegradationPlan`. The transforms below are then pure
functions of their inputs and the plan, so a sample is the same in every run, on every rank and
after a resume, whatever the number of data-loader workers.

Pixel transforms (CPU or GPU; videos are float (..., 3, T, H, W) or frames (..., 3, H, W) in [-1, 1]):

* :func:`color_drift` — spatially smooth colour drift (LongVie 2, arXiv 2512.13604);
* :func:`scale_fusion`, :func:`box_blur` — data-level depth degradation (LongVie, arXiv 2508.03694).

Model transforms (need the VAE / the denoiser; run in the training step):

* :func:`vae_roundtrip` — (VAE decode ∘ encode)^K;
* :func:`regenerate_first_frame` — noise the clip latents to a small timestep, denoise with the
  model being trained, decode the first frame (LongVie 2 "re-generation" degradation).

The feature-level dense weakening is a number in the plan, ``dense_scale``, passed to
``LongVieDenoiser.forward(dense_scale=...)``; ``dense_weakening_position`` says whether it scales the
dense patch tokens before ``control_initial_combine_linear_dense`` (upstream's stage-3 code) or its
output (after; the paper's "dense tokens"). The Linear's bias makes the two differ.

Paper and upstream code differ (SPEC §6); every difference is a setting here, the stage configs
default to the paper and ``configs/train_stage*_upstream.yaml`` hold upstream's code values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# LongVie (arXiv 2508.03694) / upstream ``multi_scale_fusion_with_drop``: scales 1 .. 1/32.
FUSION_SCALES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)
# Upstream ``apply_spatial_color_drift_*``: Gaussian mask with sigma = 8% of the width, spatial
# variation 0.3 around the drift strength.
DRIFT_MASK_SIGMA = 0.08
DRIFT_SPATIAL_VARIATION = 0.3


# --------------------------------------------------------------------------------------------------
# Settings and plans
# --------------------------------------------------------------------------------------------------


@dataclass
class DegradationSettings:
    """Probabilities and ranges of one training stage (the ``degradation:`` block of a stage config).

    Defaults are all "off"; the stage configs set the SPEC §6 values.
    """

    # Feature level: dense tokens *= λ ~ U[low, high] with probability p (paper: stage 1, p 0.15,
    # U[0.05, 1]; upstream code: stage 3 only, p 0.05, U(0.8, 1.2), before the input Linear).
    dense_weakening_p: float = 0.0
    dense_weakening_range: tuple[float, float] = (0.05, 1.0)
    dense_weakening_position: str = "after"  # "after" or "before" control_initial_combine_linear_dense
    # Stage 1, data level: depth video degraded by scale fusion and/or a box blur.
    depth_p: float = 0.0
    depth_blur_kernel: tuple[int, int] = (3, 15)
    # Stages 2-3: the conditioning first frame is degraded with probability p: re-generation with
    # probability regen_p, else K VAE round trips; then colour drift with probability color_drift_p.
    first_frame_p: float = 0.0
    regen_p: float = 0.8
    regen_timesteps: tuple[int, ...] = (1, 5, 8, 10, 12)
    regen_timestep_weights: tuple[float, ...] | None = None  # None = uniform; upstream (6, 4, 3, 2, 1)
    vae_rounds: tuple[int, int] = (0, 10)
    vae_round_weights: tuple[float, ...] | None = None  # None = uniform over vae_rounds; upstream (5, 4, 3, 2, 1)
    color_drift_p: float = 0.5
    # False (paper): drift only on a degraded frame; True (upstream): drift on its own, with color_drift_p.
    color_drift_independent: bool = False
    color_drift_strength: tuple[float, float] = (0.1, 0.2)
    color_drift_offset: float = 0.1
    # Stage 3: 0..history_max_frames history frames (multiples of 4), none with history_none_p;
    # the history video is degraded (VAE round trips and/or colour drift) with history_degrade_p.
    history_max_frames: int = 0
    history_none_p: float = 0.2
    history_degrade_p: float = 0.0
    history_drift_strength: tuple[float, float] | None = None  # None = color_drift_strength; upstream (0.1, 0.3)

    def __post_init__(self):
        for name in ("dense_weakening_p", "depth_p", "first_frame_p", "regen_p", "color_drift_p",
                     "history_none_p", "history_degrade_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"degradation.{name} must be a probability in [0, 1], got {value}")
        if self.history_max_frames % 4 or self.history_max_frames < 0:
            raise ValueError(f"degradation.history_max_frames must be a multiple of 4, got {self.history_max_frames}")
        low, high = self.depth_blur_kernel
        if low < 1 or high < low:
            raise ValueError(f"degradation.depth_blur_kernel must be [low, high] with 1 <= low <= high, got {low, high}")
        if self.dense_weakening_position not in ("after", "before"):
            raise ValueError("degradation.dense_weakening_position must be 'after' or 'before' (the input Linear), "
                             f"got {self.dense_weakening_position!r}")
        low, high = self.dense_weakening_range
        if not 0.0 <= low <= high:
            raise ValueError(f"degradation.dense_weakening_range must be [low, high] with 0 <= low <= high, got {low, high}")
        for name, count in (("regen_timestep_weights", len(self.regen_timesteps)),
                            ("vae_round_weights", self.vae_rounds[1] - self.vae_rounds[0] + 1)):
            weights = getattr(self, name)
            if weights is None:
                continue
            if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"degradation.{name} must hold {count} non-negative weights (not all zero), "
                                 f"got {list(weights)}")


@dataclass
class ColorDrift:
    """Parameters of one :func:`color_drift` call."""

    strength: float
    offset: tuple[float, float, float]  # added to the mean colour, per RGB channel, in [0, 1] units
    mask_seed: int


@dataclass
class FrameDegradation:
    """What happens to the conditioning frame (or the history video): applied in this order."""

    regen_timestep: int | None = None  # re-generation from this timestep (of 1000); None = no
    vae_rounds: int = 0  # (decode ∘ encode)^K
    drift: ColorDrift | None = None

    @property
    def changes_pixels(self) -> bool:
        return self.regen_timestep is not None or self.vae_rounds > 0 or self.drift is not None


@dataclass
class DegradationPlan:
    """Every random choice for one training sample (see :func:`sample_plan`)."""

    dense_scale: float | None = None
    depth_ops: list = field(default_factory=list)  # [("fusion", scales, weights) | ("blur", kernel)]
    first_frame: FrameDegradation | None = None
    history_frames: int = 0
    history: FrameDegradation | None = None


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: independent of rank, worker and resume."""
    return np.random.default_rng([seed, epoch, index])


def _weighted_choice(rng: np.random.Generator, values, weights) -> int:
    """``rng.choice(values)``, with probabilities proportional to ``weights`` when given."""
    if weights is None:
        return int(rng.choice(values))
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(values, p=p / p.sum()))


def _drift(rng: np.random.Generator, settings: DegradationSettings, strength=None) -> ColorDrift:
    low, high = strength or settings.color_drift_strength
    offset = rng.uniform(-settings.color_drift_offset, settings.color_drift_offset, size=3)
    return ColorDrift(float(rng.uniform(low, high)), tuple(float(x) for x in offset), int(rng.integers(2**31)))


def _depth_ops(rng: np.random.Generator, settings: DegradationSettings) -> list:
    """Scale fusion and/or blur in random order: 1 op with prob. 1/3, both with 2/3 (upstream
    ``depth_augmentation``: shuffle the two methods, keep the first randint(1, 3))."""
    ops = []
    for name in rng.permutation(["fusion", "blur"])[: min(2, int(rng.integers(1, 4)))]:
        if name == "fusion":
            drop = int(rng.integers(len(FUSION_SCALES)))
            scales = tuple(s for i, s in enumerate(FUSION_SCALES) if i != drop)
            weights = rng.random(len(scales))
            ops.append(("fusion", scales, tuple(float(w) for w in weights / weights.sum())))
        else:
            low, high = settings.depth_blur_kernel
            kernel = int(rng.integers(low, high + 1))
            ops.append(("blur", kernel if kernel % 2 else kernel + 1))  # odd, as upstream
    return ops


def sample_plan(rng: np.random.Generator, settings: DegradationSettings, history_available: int = 0
                ) -> DegradationPlan:
    """Draw one sample's degradations.

    Args:
        rng: from :func:`sample_rng`.
        settings: the stage's probabilities.
        history_available: how many history frames the clip's source video offers (stage 3).
    """
    plan = DegradationPlan()
    # Every draw happens whatever the outcome, so one setting never shifts the others' random stream.
    draws = rng.random(6)
    if draws[0] < settings.dense_weakening_p:
        plan.dense_scale = float(rng.uniform(*settings.dense_weakening_range))
    if draws[1] < settings.depth_p:
        plan.depth_ops = _depth_ops(rng, settings)
    if draws[2] < settings.first_frame_p:
        frame = FrameDegradation()
        if rng.random() < settings.regen_p:
            frame.regen_timestep = _weighted_choice(rng, settings.regen_timesteps, settings.regen_timestep_weights)
        elif settings.vae_round_weights is None:
            frame.vae_rounds = int(rng.integers(settings.vae_rounds[0], settings.vae_rounds[1] + 1))
        else:
            rounds = np.arange(settings.vae_rounds[0], settings.vae_rounds[1] + 1)
            frame.vae_rounds = _weighted_choice(rng, rounds, settings.vae_round_weights)
        if not settings.color_drift_independent and rng.random() < settings.color_drift_p:
            frame.drift = _drift(rng, settings)
        plan.first_frame = frame
    if settings.color_drift_independent and rng.random() < settings.color_drift_p:
        plan.first_frame = plan.first_frame or FrameDegradation()
        plan.first_frame.drift = _drift(rng, settings)
    usable = min(settings.history_max_frames, history_available) // 4 * 4
    if usable >= 4 and draws[3] >= settings.history_none_p:
        plan.history_frames = 4 * int(rng.integers(1, usable // 4 + 1))
        if draws[4] < settings.history_degrade_p:
            # History: VAE round trips and/or colour drift (re-generation needs a clip to denoise).
            history = FrameDegradation(vae_rounds=int(rng.integers(0, settings.vae_rounds[1] + 1)))
            if history.vae_rounds == 0 or draws[5] < settings.color_drift_p:
                history.drift = _drift(rng, settings, settings.history_drift_strength)
            plan.history = history
    return plan


# --------------------------------------------------------------------------------------------------
# Pixel transforms
# --------------------------------------------------------------------------------------------------


def gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    """Normalised 1D Gaussian of ``2 * radius + 1`` taps (radius = ceil(4 sigma) by default)."""
    radius = max(1, math.ceil(4 * sigma)) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def gaussian_blur2d(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with mirrored borders (as OpenCV's default)."""
    height, width = image.shape[-2:]
    radius = min(max(1, math.ceil(4 * sigma)), height - 1, width - 1)
    kernel = gaussian_kernel1d(sigma, radius).to(image)
    channels = image.shape[1]
    x = F.pad(image, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def smooth_mask(height: int, width: int, seed: int, sigma_fraction: float = DRIFT_MASK_SIGMA) -> torch.Tensor:
    """(H, W) spatially smooth random field in [0, 1]: uniform noise, Gaussian blur with
    sigma = sigma_fraction * W, then min-max normalised."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, height, width, generator=generator)
    mask = gaussian_blur2d(noise, sigma_fraction * width)[0, 0]
    return (mask - mask.min()) / (mask.max() - mask.min()).clamp_min(1e-12)


def color_drift(pixels: torch.Tensor, drift: ColorDrift, spatial_variation: float = DRIFT_SPATIAL_VARIATION
                ) -> torch.Tensor:
    """Blend towards a shifted mean colour through a smooth mask (LongVie 2, arXiv 2512.13604).

    With x in [0, 1]: tint = clip(mean colour + offset, 0, 1); m = strength * (1 + v (mask - 0.5))
    clipped to [0, 1]; out = (1 - m) x + m tint. The mean colour and the mask are shared by all
    frames of a video.

    Args:
        pixels: (B, 3, H, W) or (B, 3, T, H, W) in [-1, 1].
    Returns:
        same shape and dtype, in [-1, 1].
    """
    video = pixels if pixels.ndim == 5 else pixels.unsqueeze(2)
    x = (video.float() + 1) / 2
    height, width = x.shape[-2:]
    mean = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, 3, 1, 1, 1)
    offset = torch.tensor(drift.offset, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    tint = (mean + offset).clamp(0, 1)
    mask = smooth_mask(height, width, drift.mask_seed).to(x.device)
    mask = (drift.strength * (1 + spatial_variation * (mask - 0.5))).clamp(0, 1)
    out = ((1 - mask) * x + mask * tint) * 2 - 1
    out = out.to(pixels.dtype)
    return out if pixels.ndim == 5 else out.squeeze(2)


def scale_fusion(depth: torch.Tensor, scales, weights) -> torch.Tensor:
    """Weighted sum of bilinear down-then-up-sampled copies of ``depth`` (N, C, H, W).

    A scale s resizes to (max(1, int(H s)), max(1, int(W s))) and back; s = 1 is the input.
    """
    height, width = depth.shape[-2:]
    out = torch.zeros_like(depth)
    for scale, weight in zip(scales, weights):
        if scale == 1.0:
            resampled = depth
        else:
            small = F.interpolate(depth, size=(max(1, int(height * scale)), max(1, int(width * scale))),
                                  mode="bilinear", align_corners=False)
            resampled = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
        out = out + weight * resampled
    return out


def box_blur(depth: torch.Tensor, kernel: int) -> torch.Tensor:
    """Average blur with an odd ``kernel`` (zero padding counted, as ``F.avg_pool2d`` by default)."""
    if kernel % 2 == 0:
        raise ValueError(f"box blur kernel must be odd, got {kernel}")
    return F.avg_pool2d(depth, kernel_size=kernel, stride=1, padding=kernel // 2)


def degrade_depth(frames: torch.Tensor, ops) -> torch.Tensor:
    """Apply a plan's depth ops to a uint8 (T, H, W, 3) depth video; returns uint8 (T, H, W, 3)."""
    if not ops:
        return frames
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    for op in ops:
        if op[0] == "fusion":
            x = scale_fusion(x, op[1], op[2])
        elif op[0] == "blur":
            x = box_blur(x, op[1])
        else:
            raise ValueError(f"unknown depth op {op[0]!r}")
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # upstream truncates; we round
    return x.permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------------------------------
# Model transforms
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def vae_roundtrip(vae, pixels: torch.Tensor, rounds: int) -> torch.Tensor:
    """(VAE decode ∘ encode)^rounds of a frame (B, 3, H, W) or a video (B, 3, T, H, W) in [-1, 1].

    Every frame count is kept, frame i of the output being the round trip of input frame i: the causal
    VAE encodes only 1 + 4k frames (T frames -> 1 + (T-1)//4 latent frames), so a history of 4k frames
    would come back with 4k - 3 and shift the conditioning frame and the consistency target. The video
    is therefore padded at the end with copies of its last frame to the next 1 + 4k frames before each
    round, and the padding is dropped after decoding. The output is clamped to [-1, 1] after every
    round, as a saved image would be.
    """
    from ..sampling.conditioning import vae_decode, vae_encode

    if rounds <= 0:
        return pixels
    video = pixels if pixels.ndim == 5 else pixels.unsqueeze(2)
    frames = video.shape[2]
    pad = (1 - frames) % 4  # frames + pad = 1 + 4k
    for _ in range(rounds):
        padded = torch.cat([video, video[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2) if pad else video
        video = vae_decode(vae, vae_encode(vae, padded))[:, :, :frames].clamp(-1, 1).to(pixels.dtype)
    return video if pixels.ndim == 5 else video[:, :, 0]


@torch.no_grad()
def regenerate_first_frame(denoiser, vae, latents: torch.Tensor, timestep: int, noise: torch.Tensor,
                           conditions: dict) -> torch.Tensor:
    """Re-generation degradation: one denoising step of the clip from a lightly noised latent.

    x_s = (1 - s) x0 + s ε with s = timestep / 1000 (a timestep of at most 12 of 1000: one Euler
    step to s = 0 is what the sampler would do there); x̂0 = x_s - s v̂; the first latent frame of
    x̂0 is decoded.

    Args:
        denoiser: the model being trained (unwrapped), in eval mode or not (it has no dropout).
        latents: (B, 16, F, h, w) clean clip latents x0.
        noise: same shape, ε.
        conditions: the other ``LongVieDenoiser.forward`` inputs (text_embeds, image_embeds,
            image_latents, dense_latents, sparse_latents).
    Returns:
        (B, 3, H, W) the regenerated first frame in [-1, 1].
    """
    from ..sampling.conditioning import vae_decode

    sigma = timestep / 1000.0
    noisy = (1 - sigma) * latents + sigma * noise
    dtype = denoiser.dtype
    t = torch.full((latents.shape[0],), float(timestep), device=latents.device).to(dtype)
    velocity = denoiser(noisy.to(dtype), t, **{k: v.to(dtype) for k, v in conditions.items()}).float()
    clean = noisy - sigma * velocity
    return vae_decode(vae, clean[:, :, :1])[:, :, 0].clamp(-1, 1)
