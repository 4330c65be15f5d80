"""Depth control videos from a whole-video disparity (SPEC §5): cut to whole clips, normalise once over
all frames (p5/p95, near = dark), write depth_XX.mp4 clips (grey RGB, 81 frames, 16 fps).

Used by ``utils/depth_npy2mp4.py``, ``utils/prepare_controls.py`` and the app's extraction stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..media.video_io import write_video
from .driving_video import plan_clips
from .primitives import CONSTANT_DEPTH_GREY, clip_ranges, depth_bounds, disparity_to_grey, grey_to_rgb


def load_disparity(path: str | Path) -> np.ndarray:
    """A (T, H, W) disparity .npy, memory-mapped (a long video's depth need not fit in memory twice).

    Raises:
        ValueError: missing, unreadable or wrongly shaped file (message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"depth file not found: {path} — create it with utils/get_depth.py VIDEO {path}")
    try:
        disparity = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read depth file {path} ({err}) — it must be a .npy written by utils/get_depth.py") from err
    if disparity.ndim != 3 or disparity.shape[0] == 0:
        raise ValueError(f"{path}: expected a (T, H, W) disparity array, got shape {disparity.shape}")
    return disparity


def normalize_depth_for_clips(disparity: np.ndarray, source: str | Path = "depth",
                              log: Callable[[str], None] = print) -> np.ndarray:
    """Cut to whole clips, then normalise globally: (T, H, W) float -> (1 + 80k, H, W) uint8, near = 0."""
    ranges = plan_clips(len(disparity), source, log)
    used = disparity[: ranges[-1][1]]
    p_low, p_high = depth_bounds(used)
    if p_high <= p_low:
        log(f"warning: {source}: the depth has no variation (p95 == p5 == {p_low:g}); writing constant "
            f"mid-grey ({CONSTANT_DEPTH_GREY}) depth — check that the depth estimator ran on the right video")
    # clip by clip, so that only one clip is held as float64 at a time
    grey = np.empty(used.shape, dtype=np.uint8)
    for start in range(0, len(used), 81):
        grey[start:start + 81] = disparity_to_grey(used[start:start + 81], p_low, p_high)
    return grey


def write_depth_clips(depth_grey: np.ndarray, out_dir: str | Path,
                      progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
    """Write depth_XX.mp4 (grey RGB, H.264, 16 fps) for every clip of a normalised depth video.

    Args:
        depth_grey: (1 + 80k, H, W) uint8 globally normalised depth.

    Returns:
        The written paths, in clip order.
    """
    out_dir = Path(out_dir)
    ranges = clip_ranges(len(depth_grey))
    paths = []
    for index, (start, end) in enumerate(progress(ranges) if progress else ranges):
        paths.append(write_video(out_dir / f"depth_{index:02d}.mp4", grey_to_rgb(depth_grey[start:end]), fps=16))
    return paths
