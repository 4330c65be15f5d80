"""Metric depth of a photo (and of generated frames, for ``--explore``) through transformers.

The default is Depth Anything V2 fine-tuned for metric depth (Yang et al., arXiv 2406.09414; the
outdoor Virtual KITTI 2 variant, max depth 80 m): ``depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf``.
``--depth-model`` takes another metric variant (the indoor ones, max 20 m, suit rooms) or a local folder.
Offline, only the Hugging Face cache and local folders are used and a missing model is one error
that names ``--depth``. The tiny preset uses :func:`longvie.presets.tiny.build_tiny_depth_model`
(random weights, nothing to download).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .. import LongVieError

__all__ = ["DEFAULT_METRIC_DEPTH_MODEL", "TINY_DEPTH_MODEL", "DepthModelError", "MetricDepthEstimator",
           "load_depth_estimator"]

DEFAULT_METRIC_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"
TINY_DEPTH_MODEL = "tiny"  # the tiny preset's random-weight model
MIN_DEPTH_FRACTION = 1e-3  # estimated depth is kept above this fraction of the model's max depth (never 0)
DEPTH_HINT = ("pass --depth FILE (a depth map of the photo in metres: .npy, .npz or 16-bit PNG in millimetres), "
              "or --depth-model with a local folder holding a metric Depth Anything V2 model, or run once with "
              "internet access so that the model lands in the Hugging Face cache")


class DepthModelError(LongVieError, RuntimeError):
    """No usable metric depth model (not cached and not downloadable, or not a metric model)."""


class MetricDepthEstimator:
    """``estimator(frames) -> (T, H, W) float32`` depth in metres for (T, H, W, 3) uint8 frames."""

    def __init__(self, model, image_processor, device="cpu", batch_size: int = 4, name: str = "depth model"):
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_processor = image_processor
        self.batch_size = batch_size
        self.name = name
        self.max_depth = float(getattr(model.config, "max_depth", None) or 80.0)

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_METRIC_DEPTH_MODEL, local_files_only: bool = False,
                        device: str | None = None) -> "MetricDepthEstimator":
        """Load a metric Depth Anything V2 (hub id or folder); offline only from the cache.

        Raises:
            DepthModelError: not available (the message names ``--depth``), or a relative-depth model.
        """
        import torch
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        from ..controls.depth_estimators import hub_reachable
        from ..controls.model_loading import dtype_kwargs, pick_device

        device = pick_device(device)
        offline = local_files_only or (not Path(model_id).is_dir() and not hub_reachable())
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            processor = AutoImageProcessor.from_pretrained(model_id, local_files_only=offline)
            model = DepthAnythingForDepthEstimation.from_pretrained(model_id, local_files_only=offline,
                                                                    **dtype_kwargs(dtype))
        except (OSError, ValueError) as err:
            why = ("is not in the Hugging Face cache and downloads are off" if offline
                   else f"could not be loaded ({err})")
            raise DepthModelError(f"the metric depth model '{model_id}' {why} — {DEPTH_HINT}") from err
        if getattr(model.config, "depth_estimation_type", "relative") != "metric":
            raise DepthModelError(f"'{model_id}' predicts relative depth, not metres; use a metric variant (e.g. "
                                  f"{DEFAULT_METRIC_DEPTH_MODEL} or depth-anything/Depth-Anything-V2-Metric-Indoor-"
                                  "Large-hf) or pass --depth FILE")
        return cls(model, processor, device, name=model_id)

    @classmethod
    def tiny(cls, device: str | None = None) -> "MetricDepthEstimator":
        from ..presets.tiny import build_tiny_depth_model

        model, processor = build_tiny_depth_model()
        return cls(model, processor, device or "cpu", name="tiny (random weights)")

    def __call__(self, frames: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(T, H, W, 3) or (H, W, 3) uint8 -> (T, H, W) or (H, W) float32 metres, bilinear back to the frame size."""
        import torch
        import torch.nn.functional as F

        single = frames.ndim == 3
        frames = frames[None] if single else frames
        height, width = frames.shape[1:3]
        dtype = next(self.model.parameters()).dtype
        out = np.empty(frames.shape[:3], dtype=np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = [np.array(frame) for frame in frames[start:start + self.batch_size]]  # writable copies
            inputs = self.image_processor(images=batch, return_tensors="pt")
            with torch.no_grad():
                depth = self.model(pixel_values=inputs["pixel_values"].to(self.device, dtype)).predicted_depth.float()
            depth = F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=False)
            out[start:start + len(batch)] = depth[:, 0].cpu().numpy()
            if progress:
                progress(min(start + len(batch), len(frames)), len(frames))
        np.maximum(out, MIN_DEPTH_FRACTION * self.max_depth, out=out)
        return out[0] if single else out


def load_depth_estimator(model_id: str, local_files_only: bool = False,
                         device: str | None = None) -> MetricDepthEstimator:
    """``tiny`` -> the tiny preset's random model; anything else -> :meth:`MetricDepthEstimator.from_pretrained`."""
    if model_id == TINY_DEPTH_MODEL:
        return MetricDepthEstimator.tiny(device)
    return MetricDepthEstimator.from_pretrained(model_id, local_files_only, device)
