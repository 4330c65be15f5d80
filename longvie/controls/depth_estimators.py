"""Depth estimators: video frames -> relative disparity for the whole video.

Every estimator is a callable ``estimator(frames) -> (T, H, W) float32`` taking (T, H, W, 3) uint8
RGB frames and returning relative disparity (large = near) at the frames' resolution. Two backends:

* ``video-depth-anything`` — Video Depth Anything (arXiv 2501.12375), what upstream LongVie uses:
  temporally consistent, one scale for the whole video. Needs an official checkpoint file
  (``video_depth_anything_vits.pth`` or ``_vitl.pth``); see :mod:`longvie.controls.video_depth_anything`.
* ``depth-anything-v2`` — Depth Anything V2 (arXiv 2406.09414) through transformers, frame by frame
  (default ``depth-anything/Depth-Anything-V2-Small-hf``). Each frame gets its own scale, so the
  depth video can flicker more than with Video Depth Anything; prefer VDA when you have it.

torch and transformers are imported inside the functions so that the scripts' --help stays instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .model_loading import dtype_kwargs, from_pretrained_or_explain, pick_device

DEFAULT_DEPTH_ANYTHING_V2 = "depth-anything/Depth-Anything-V2-Small-hf"
BACKENDS = ("auto", "depth-anything-v2", "video-depth-anything")

Progress = Callable[[Iterable], Iterable]


class DepthAnythingV2Estimator:
    """Frame-by-frame relative disparity with transformers' ``DepthAnythingForDepthEstimation``."""

    def __init__(self, model, image_processor, device="cpu", batch_size: int = 8):
        import torch

        self.model = model.to(device).eval()
        self.image_processor = image_processor
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_DEPTH_ANYTHING_V2, local_files_only: bool = False,
                        device: str | None = None, batch_size: int = 8) -> "DepthAnythingV2Estimator":
        """Load a hub id or a local directory (model + image processor)."""
        import torch
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        device = pick_device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        processor = from_pretrained_or_explain(AutoImageProcessor, model_id, "the Depth Anything V2 image processor",
                                               local_files_only)
        model = from_pretrained_or_explain(DepthAnythingForDepthEstimation, model_id, "Depth Anything V2",
                                           local_files_only, **dtype_kwargs(dtype))
        return cls(model, processor, device, batch_size)

    def __call__(self, frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, H, W) float32 disparity (bilinear back to the frame size)."""
        import torch
        import torch.nn.functional as F

        height, width = frames.shape[1:3]
        dtype = next(self.model.parameters()).dtype
        starts = range(0, len(frames), self.batch_size)
        out = np.empty(frames.shape[:3], dtype=np.float32)
        for start in (progress(starts) if progress else starts):
            batch = list(frames[start:start + self.batch_size])
            inputs = self.image_processor(images=batch, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, dtype)
            with torch.no_grad():
                depth = self.model(pixel_values=pixel_values).predicted_depth.float()  # (B, h, w)
            depth = F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=False)
            out[start:start + len(batch)] = depth[:, 0].cpu().numpy()
        return out


class VideoDepthAnythingEstimator:
    """Temporally consistent disparity with Video Depth Anything (32-frame overlapping windows)."""

    def __init__(self, model, device="cpu", input_size: int = 518):
        import torch

        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.input_size = input_size

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | None = None,
                        input_size: int = 518) -> "VideoDepthAnythingEstimator":
        from .video_depth_anything import load_official_checkpoint

        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"Video Depth Anything checkpoint not found: {checkpoint} — download video_depth_anything_vitl.pth "
                "(or _vits.pth) from the Hugging Face repos depth-anything/Video-Depth-Anything-Large (-Small) "
                "and pass its path")
        if "metric" in checkpoint.name.lower():
            raise ValueError(f"{checkpoint} looks like a Metric Video Depth Anything checkpoint: it predicts depth, "
                             "not disparity; use the relative video_depth_anything_vits/vitb/vitl.pth")
        return cls(load_official_checkpoint(checkpoint), pick_device(device), input_size)

    def __call__(self, frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, H, W) float32 disparity, one scale for the whole video."""
        from .video_depth_anything import infer_video_depth

        return infer_video_depth(self.model, frames, input_size=self.input_size, device=self.device,
                                 half=self.device.type == "cuda", progress=progress)


def build_depth_estimator(
    backend: str = "auto",
    model: str = DEFAULT_DEPTH_ANYTHING_V2,
    vda_checkpoint: str | Path | None = None,
    local_files_only: bool = False,
    device: str | None = None,
    input_size: int = 518,
    batch_size: int = 8,
):
    """Make the estimator named by ``backend``.

    ``auto`` is Video Depth Anything when ``vda_checkpoint`` is given, else Depth Anything V2 with
    ``model`` (a hub id or a local directory).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown depth backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = "video-depth-anything" if vda_checkpoint else "depth-anything-v2"
    if backend == "video-depth-anything":
        if not vda_checkpoint:
            raise ValueError("--depth-backend video-depth-anything needs --vda-checkpoint PATH "
                             "(video_depth_anything_vits.pth or _vitl.pth)")
        return VideoDepthAnythingEstimator.from_checkpoint(vda_checkpoint, device, input_size)
    return DepthAnythingV2Estimator.from_pretrained(model, local_files_only, device, batch_size)


def add_depth_arguments(parser) -> None:
    """The depth-estimator options shared by get_depth.py and prepare_controls.py."""
    group = parser.add_argument_group("depth estimation")
    group.add_argument("--depth-backend", choices=BACKENDS, default="auto",
                       help="auto (default): video-depth-anything when --vda-checkpoint is given, "
                            "else depth-anything-v2")
    group.add_argument("--model", default=DEFAULT_DEPTH_ANYTHING_V2,
                       help=f"Depth Anything V2 hub id or local directory (default {DEFAULT_DEPTH_ANYTHING_V2})")
    group.add_argument("--local-files", action="store_true",
                       help="never download: models must be local directories or already in the Hugging Face cache")
    group.add_argument("--vda-checkpoint", default=None,
                       help="official Video Depth Anything checkpoint (video_depth_anything_vits.pth / _vitl.pth)")
    group.add_argument("--input-size", type=int, default=518,
                       help="Video Depth Anything network short side (default 518, as trained)")
    group.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def depth_estimator_from_args(args):
    return build_depth_estimator(args.depth_backend, args.model, args.vda_checkpoint, args.local_files,
                                 args.device, args.input_size)
