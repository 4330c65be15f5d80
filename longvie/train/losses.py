"""Training losses of LongVie 2 (SPEC §6), one small function per term.

Latent tensors are (B, C, F, H, W): batch, 16 latent channels, latent frames, latent rows/cols.

* flow matching (Wan2.1 / DiffSynth): x_t = (1 - s) x0 + s ε, target v = ε - x0, MSE, times the
  schedule's bell-shaped timestep weight (:func:`longvie.sampling.scheduling.training_timestep_weights`);
* degradation-aware terms (stage 3, LongVie 2, arXiv 2512.13604, when the clip's conditioning
  frame is degraded): per-latent-frame weights 0.05 / 0.325 / 0.757 on frames 0 / 1 / 2, plus, on
  latent frame 0 and in target space,
  0.2 MSE(LP(v̂0), LP(v_deg)) + 0.15 MSE(HP(v̂0), HP(v0)) + 0.5 MSE(v̂0, v_hist),
  with v_deg / v_hist the targets of the degraded frame / the last history frame under the same noise.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# LongVie 2 (arXiv 2512.13604) / upstream temporal pipeline: weights of latent frames 0, 1, 2.
DEGRADED_FRAME_WEIGHTS = (0.05, 0.325, 0.757)
LOWPASS_WEIGHT = 0.2
HIGHPASS_WEIGHT = 0.15
CONSISTENCY_WEIGHT = 0.5


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - s) x0 + s ε, with ``sigma`` (B,) broadcast over (B, C, F, H, W)."""
    s = sigma.to(x0).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Velocity target v = ε - x0 (what the model predicts)."""
    return noise - x0


def frame_weights(num_frames: int, first: Sequence[float] = DEGRADED_FRAME_WEIGHTS) -> torch.Tensor:
    """(num_frames,) per-latent-frame weights: ``first`` for the leading frames, 1 elsewhere."""
    weights = torch.ones(num_frames)
    count = min(num_frames, len(first))
    weights[:count] = torch.tensor(first[:count], dtype=weights.dtype)
    return weights


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (a scalar)."""
    return F.mse_loss(pred.float(), target.float())


def frame_weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over every element of w_f (pred - target)^2, with ``weights`` (F,) over the frame axis (dim 2).

    The mean divides by the element count, not by the weight sum (as upstream).
    """
    error = (pred.float() - target.float()) ** 2
    return (error * weights.to(error).view(1, 1, -1, 1, 1)).mean()


def lowpass(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """LP(x): bilinear down-sampling by ``scale`` then bilinear up-sampling back, frame by frame.

    x: (B, C, F, H, W) -> same shape. (Upstream uses trilinear with a time scale of 1, which is the
    same thing.)
    """
    b, c, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    down = F.interpolate(frames, scale_factor=scale, mode="bilinear", align_corners=False)
    up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return up.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def highpass(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """HP(x) = x - LP(x)."""
    return x - lowpass(x, scale)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain flow-matching MSE (stages 1-2, and stage 3 when the conditioning frame is clean)."""
    return mse(pred, target)


def degraded_frame_loss(pred: torch.Tensor, target: torch.Tensor, degraded_target: torch.Tensor,
                        history_target: torch.Tensor | None = None,
                        first_weights: Sequence[float] = DEGRADED_FRAME_WEIGHTS,
                        lowpass_weight: float = LOWPASS_WEIGHT, highpass_weight: float = HIGHPASS_WEIGHT,
                        consistency_weight: float = CONSISTENCY_WEIGHT) -> dict[str, torch.Tensor]:
    """Stage-3 loss when the conditioning frame is degraded (SPEC §6).

    Args:
        pred: (B, C, F, H, W) predicted velocity v̂.
        target: (B, C, F, H, W) clean target v = ε - x0.
        degraded_target: (B, C, 1, H, W) ε0 - z(degraded conditioning frame).
        history_target: (B, C, 1, H, W) ε0 - z(last history frame), or None without history.
    Returns:
        dict with "loss" (the total) and its terms "main", "lowpass", "highpass", "consistency".
    """
    pred0, target0 = pred[:, :, :1], target[:, :, :1]
    terms = {
        "main": frame_weighted_mse(pred, target, frame_weights(pred.shape[2], first_weights)),
        "lowpass": mse(lowpass(pred0), lowpass(degraded_target)),
        "highpass": mse(highpass(pred0), highpass(target0)),
    }
    total = terms["main"] + lowpass_weight * terms["lowpass"] + highpass_weight * terms["highpass"]
    if history_target is not None:
        terms["consistency"] = mse(pred0, history_target)
        total = total + consistency_weight * terms["consistency"]
    return {"loss": total, **terms}
