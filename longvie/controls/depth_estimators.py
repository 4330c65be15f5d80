"""Depth estimators: video frames -> relative disparity for the whole video.

Every estimator is a callable ``estimator(frames) -> (T, H, W) float32`` taking (T, H, W, 3) uint8
RGB frames and returning relative disparity (large = near) at the frames' resolution. Two backends:

* ``video-depth-anything`` — Video Depth Anything (arXiv 2501.12375), what upstream LongVie uses:
  temporally consistent, one scale for the whole video. The default (``auto``) fetches the ViT-L
  checkpoint ``video_depth_anything_vitl.pth`` from ``depth-anything/Video-Depth-Anything-Large``
  through huggingface_hub on first use (the usual Hugging Face cache; ``--vda-checkpoint`` takes a file
  instead); see :mod:`longvie.controls.video_depth_anything`. Upstream's get_depth.py resizes the video
  (bicubic) to cover 480x832 and centre-crops before the model; the extraction scripts do the same with
  ``--height 480 --width 832``.
* ``depth-anything-v2`` — Depth Anything V2 (arXiv 2406.09414) through transformers, frame by frame
  (default ``depth-anything/Depth-Anything-V2-Small-hf``). Each frame gets its own scale, so the
  depth video can flicker more than with Video Depth Anything; prefer VDA when you have it.

torch and transformers are imported inside the functions so that the scripts' --help stays instant.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

import numpy as np

from .model_loading import dtype_kwargs, from_pretrained_or_explain, pick_device

DEFAULT_DEPTH_ANYTHING_V2 = "depth-anything/Depth-Anything-V2-Small-hf"
BACKENDS = ("auto", "depth-anything-v2", "video-depth-anything")
# Official Video Depth Anything checkpoints on the Hugging Face hub (ViT-L is what upstream LongVie uses).
VDA_HUB_FILES = {"vitl": ("depth-anything/Video-Depth-Anything-Large", "video_depth_anything_vitl.pth"),
                 "vits": ("depth-anything/Video-Depth-Anything-Small", "video_depth_anything_vits.pth")}
DEFAULT_VDA_ENCODER = "vitl"
HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_HINT = ("pass --vda-checkpoint PATH (a downloaded video_depth_anything_vitl.pth), or run once with internet "
                "access so the weights land in the Hugging Face cache (then --local-files works offline)")


def offline_hint(precomputed: str | None = None) -> str:
    """What to do without a depth model. ``precomputed``: how the calling command takes a disparity
    you already have (``--depth-npy DEPTH.npy`` in prepare_controls.py); only commands that have such
    an option name it."""
    return (f"{precomputed} (a disparity you already have), " if precomputed else "") + OFFLINE_HINT


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub can be used now: not HF_HUB_OFFLINE and a TCP connection in ``timeout`` s.

    Checked before any download so that an offline machine fails (or uses the cache) in seconds instead
    of waiting through the hub client's retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_vda_checkpoint(encoder: str = DEFAULT_VDA_ENCODER, local_files_only: bool = False,
                         precomputed: str | None = None) -> Path:
    """Path of the official Video Depth Anything checkpoint, downloaded through huggingface_hub if needed.

    Raises:
        RuntimeError: not in the cache and no download allowed or possible (names the repo, the file and
            the ways out).
    """
    from huggingface_hub import hf_hub_download

    repo_id, filename = VDA_HUB_FILES[encoder]
    offline = local_files_only or not hub_reachable()
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
    except Exception as err:  # huggingface_hub's LocalEntryNotFoundError, HTTP and connection errors
        why = ("--local-files forbids downloads" if local_files_only
               else "the Hugging Face hub is not reachable (offline or HF_HUB_OFFLINE=1)" if offline
               else f"the download failed ({type(err).__name__}: {err})")
        raise RuntimeError(f"Video Depth Anything {filename} (hub repo {repo_id}) is not in the Hugging Face cache "
                           f"and {why} — {offline_hint(precomputed)}") from err

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
    precomputed: str | None = None,
):
    """Make the estimator named by ``backend``.

    ``auto`` (the default) is Video Depth Anything, as upstream: ``vda_checkpoint`` when given, else the
    ViT-L checkpoint from the hub (cache first). When that cannot be had, Depth Anything V2 with
    ``model`` (a hub id or a local directory) is used instead, with a printed warning that it flickers
    more. ``video-depth-anything`` never falls back. Offline (HF_HUB_OFFLINE=1 or the hub unreachable
    within a few seconds) only the cache and local paths are used, so a missing model fails in seconds.

    ``precomputed`` names the calling command's way to pass a disparity instead (e.g. "pass
    --depth-npy DEPTH.npy"), for the message; commands without one leave it out.

    Raises:
        RuntimeError: no usable model; the message says what is missing and suggests ``precomputed``,
            --vda-checkpoint and --local-files.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown depth backend {backend!r}; choose one of {BACKENDS}")
    if backend in ("auto", "video-depth-anything"):
        try:
            checkpoint = vda_checkpoint or fetch_vda_checkpoint(DEFAULT_VDA_ENCODER, local_files_only, precomputed)
            return VideoDepthAnythingEstimator.from_checkpoint(checkpoint, device, input_size)
        except (RuntimeError, FileNotFoundError) as err:
            if backend == "video-depth-anything" or vda_checkpoint:
                raise
            print(f"warning: {err}\nwarning: falling back to per-frame Depth Anything V2 ({model}); its depth "
                  "flickers more than Video Depth Anything's, which upstream LongVie used")
            vda_error = err
    else:
        vda_error = None
    local_only = local_files_only or (not Path(model).is_dir() and not hub_reachable())
    try:
        return DepthAnythingV2Estimator.from_pretrained(model, local_only, device, batch_size)
    except RuntimeError as err:
        if vda_error is None and not local_only:
            raise
        raise RuntimeError(f"no depth model available: {err}" + (f"; Video Depth Anything: {vda_error}"
                                                                 if vda_error else "")
                           + f" — {offline_hint(precomputed)}") from err


def add_depth_arguments(parser) -> None:
    """The depth-estimator options shared by get_depth.py and prepare_controls.py."""
    group = parser.add_argument_group("depth estimation")
    group.add_argument("--depth-backend", choices=BACKENDS, default="auto",
                       help="auto (default): Video Depth Anything ViT-L (--vda-checkpoint, or fetched from the "
                            "Hugging Face hub), falling back to per-frame depth-anything-v2 with a warning")
    group.add_argument("--model", default=DEFAULT_DEPTH_ANYTHING_V2,
                       help=f"Depth Anything V2 hub id or local directory (default {DEFAULT_DEPTH_ANYTHING_V2})")
    group.add_argument("--local-files", action="store_true",
                       help="never download: models must be local directories or already in the Hugging Face cache")
    group.add_argument("--vda-checkpoint", default=None,
                       help="official Video Depth Anything checkpoint file (default: video_depth_anything_vitl.pth "
                            "from depth-anything/Video-Depth-Anything-Large via the Hugging Face cache)")
    group.add_argument("--input-size", type=int, default=518,
                       help="Video Depth Anything network short side (default 518, as trained)")
    group.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def depth_estimator_from_args(args, precomputed: str | None = None):
    """The estimator of the shared options; ``precomputed``: the command's own way around a depth model."""
    return build_depth_estimator(args.depth_backend, args.model, args.vda_checkpoint, args.local_files,
                                 args.device, args.input_size, precomputed=precomputed)
