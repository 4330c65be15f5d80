"""Reference-based frame quality: PSNR, SSIM and LPIPS, and the fast-mode quality gate.

Frames are (T, H, W, 3) uint8 RGB arrays. Definitions:

* PSNR: ``10 log10(255^2 / MSE)`` with the MSE pooled over every pixel of the compared frames (so
  one identical frame, e.g. the given first frame, does not make a clip's PSNR infinite). Identical
  inputs give ``inf``; :mod:`longvie.eval.report` writes it as the string ``"inf"`` in JSON.
* SSIM: Wang et al., "Image quality assessment: from error visibility to structural similarity"
  (IEEE TIP 2004) with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255,
  computed per RGB channel on the valid (uncropped-window) region and averaged — the same numbers as
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, channel_axis=-1, data_range=255)``.
* LPIPS: Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"
  (CVPR 2018), the ``lpips`` package's v0.1 AlexNet variant (its calibrated linear heads ship with
  the package; the AlexNet trunk is torchvision's ``AlexNet_Weights.IMAGENET1K_V1``).

:func:`compare_videos` is the quality gate the performance benchmark calls to compare a fast mode's
output with the exact one.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..media.video_io import fit_frames, read_video
from .availability import MetricUnavailable, torch_hub_weights

__all__ = ["psnr", "ssim_per_frame", "ssim", "LpipsMetric", "load_lpips", "compare_videos", "align_reference",
           "LPIPS_MODEL_ID"]

LPIPS_MODEL_ID = "lpips v0.1 alex (lpips package heads + torchvision AlexNet_Weights.IMAGENET1K_V1)"
_ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
_SSIM_SIGMA, _SSIM_TAPS, _K1, _K2, _RANGE = 1.5, 11, 0.01, 0.03, 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two same-shape uint8 arrays, MSE pooled over all pixels; ``inf`` when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(_RANGE ** 2 / mse)


def _gaussian_window():
    import torch

    radius = _SSIM_TAPS // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x ** 2) / (2 * _SSIM_SIGMA ** 2))
    return g / g.sum()


def ssim_per_frame(a: np.ndarray, b: np.ndarray, batch: int = 16, device: str | None = None) -> np.ndarray:
    """SSIM of each frame pair: (T, H, W, 3) uint8 twice -> (T,) float64. Frames need H, W >= 11."""
    import torch
    import torch.nn.functional as F

    if a.shape != b.shape:
        raise ValueError(f"SSIM needs frames of the same shape, got {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < _SSIM_TAPS:
        raise ValueError(f"SSIM needs frames of at least {_SSIM_TAPS}x{_SSIM_TAPS} pixels, got {a.shape[1:3]}")
    g = _gaussian_window()
    dev = torch.device(device or "cpu")
    # separable Gaussian as two depthwise convolutions over the 3 channels
    wx = g.view(1, 1, 1, -1).repeat(3, 1, 1, 1).to(dev)
    wy = g.view(1, 1, -1, 1).repeat(3, 1, 1, 1).to(dev)

    def blur(x):
        return F.conv2d(F.conv2d(x, wx, groups=3), wy, groups=3)

    c1, c2 = (_K1 * _RANGE) ** 2, (_K2 * _RANGE) ** 2
    out = []
    for start in range(0, len(a), batch):
        x = torch.from_numpy(a[start:start + batch]).to(dev, torch.float64).permute(0, 3, 1, 2)
        y = torch.from_numpy(b[start:start + batch]).to(dev, torch.float64).permute(0, 3, 1, 2)
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.mean(dim=(1, 2, 3)).cpu().numpy())
    return np.concatenate(out)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame SSIM of two videos."""
    return float(ssim_per_frame(a, b).mean())


class LpipsMetric:
    """LPIPS distance per frame pair (lower is closer). Wraps an ``lpips.LPIPS`` module (or any module
    taking two (N, 3, H, W) tensors in [-1, 1] and returning (N, 1, 1, 1))."""

    def __init__(self, net, model_id: str = LPIPS_MODEL_ID, device: str | None = None, batch: int = 8):
        import torch

        self.device = torch.device(device or "cpu")
        self.net = net.to(self.device).eval()
        self.model_id = model_id
        self.batch = batch

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 twice -> (T,) float64."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(a), self.batch):
                x = torch.from_numpy(a[start:start + self.batch]).to(self.device).permute(0, 3, 1, 2).float()
                y = torch.from_numpy(b[start:start + self.batch]).to(self.device).permute(0, 3, 1, 2).float()
                d = self.net(x / 127.5 - 1.0, y / 127.5 - 1.0)
                out.append(d.reshape(len(x)).double().cpu().numpy())
        return np.concatenate(out)


def load_lpips(local_files_only: bool = False, alexnet_weights: str | os.PathLike | None = None,
               device: str | None = None) -> LpipsMetric:
    """LPIPS v0.1 (AlexNet) with the trunk from ``alexnet_weights``, torch.hub's cache, or a download.

    Raises:
        MetricUnavailable: the ``lpips`` package or the AlexNet weights are missing.
    """
    try:
        import lpips
    except ImportError as err:
        raise MetricUnavailable("the lpips package (pip install lpips)") from err
    state = torch_hub_weights(_ALEXNET_URL, "torchvision AlexNet_Weights.IMAGENET1K_V1 (for LPIPS)",
                              local_files_only, alexnet_weights)
    net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    # lpips splits AlexNet's `features` into slice1..5 keeping the original indices: sliceK.<i>.<p>
    trunk = {key: state[f"features.{key.split('.', 1)[1]}"] for key in net.net.state_dict()}
    net.net.load_state_dict(trunk)
    return LpipsMetric(net, device=device)


def align_reference(reference: np.ndarray, generated: np.ndarray, resize: str = "crop") -> np.ndarray:
    """The reference brought to the generated frames' size (``resize`` rule) and cut to their length."""
    reference = reference[:len(generated)]
    if reference.shape[1:3] != generated.shape[1:3]:
        reference = np.asarray(fit_frames(reference, generated.shape[1], generated.shape[2], resize))
    return reference


def _as_frames(video) -> np.ndarray:
    if isinstance(video, (str, os.PathLike, Path)):
        return read_video(video)
    return np.asarray(video)


def compare_videos(fast: Any, exact: Any, lpips: LpipsMetric | None | str = "auto",
                   local_files_only: bool = True) -> dict:
    """The quality gate: how far a fast mode's video is from the exact mode's.

    Args:
        fast, exact: (T, H, W, 3) uint8 arrays or video paths (same size; the shorter length is used).
        lpips: an :class:`LpipsMetric`, ``"auto"`` (load it when its weights are local, or downloadable
            with ``local_files_only=False``) or None (skip).

    Returns:
        ``{"frames", "psnr" (float, inf when identical), "psnr_is_inf", "ssim", "ssim_min",
        "lpips" (float, or "not computed: needs ..."), "lpips_model"}``.
    """
    a, b = _as_frames(fast), _as_frames(exact)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if a.shape != b.shape:
        raise ValueError(f"the two videos differ in frame size: {a.shape[1:]} vs {b.shape[1:]}")
    per_frame = ssim_per_frame(a, b)
    value = psnr(a, b)
    result = {"frames": n, "psnr": value, "psnr_is_inf": math.isinf(value), "ssim": float(per_frame.mean()),
              "ssim_min": float(per_frame.min())}
    if lpips == "auto":
        try:
            lpips = load_lpips(local_files_only=local_files_only)
        except MetricUnavailable as err:
            lpips = err
    if isinstance(lpips, MetricUnavailable):
        result["lpips"], result["lpips_model"] = lpips.report, LPIPS_MODEL_ID
    elif lpips is None:
        result["lpips"], result["lpips_model"] = "not computed: disabled", None
    else:
        result["lpips"], result["lpips_model"] = float(lpips(a, b).mean()), lpips.model_id
    return result
