"""Point-track control videos (SPEC §5): a grid tracked from each clip's first frame and drawn as
coloured marks on black (far to near), written as track_XX.mp4 clips (81 frames, 16 fps).

Used by ``utils/get_track.py``, ``utils/prepare_controls.py`` and the app's extraction stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..media.video_io import write_video
from .primitives import DEFAULT_GRID, clip_ranges, default_point_size, grid_points, render_tracks, track_colors


def sample_at(image: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Nearest-pixel values of an (H, W) image at (N, 2) (x, y) points -> (N,)."""
    height, width = image.shape[:2]
    cols = np.clip(np.rint(points_xy[:, 0]), 0, width - 1).astype(np.int64)
    rows = np.clip(np.rint(points_xy[:, 1]), 0, height - 1).astype(np.int64)
    return image[rows, cols]


def render_clip_tracks(
    frames: np.ndarray,
    tracker: Callable,
    grid: int = DEFAULT_GRID,
    depth_grey: np.ndarray | None = None,
    point_size: float | None = None,
    draw_occluded: bool = True,
) -> np.ndarray:
    """Track a grid from frame 0 of one clip and draw it.

    Args:
        frames: (T, H, W, 3) uint8 clip.
        tracker: see :mod:`longvie.controls.point_tracking`.
        depth_grey: optional globally normalised depth of the clip (0 = near): (T, H, W) uint8, or
            (H, W) for the first frame only. Colours B by the first frame's depth and draws each frame
            far to near (by the depth under each mark in that frame; the first frame's order when
            only (H, W) is given).
        draw_occluded: draw points the tracker marks invisible (default, as upstream).

    Returns:
        (T, H, W, 3) uint8 track video.
    """
    height, width = frames.shape[1:3]
    points = grid_points(height, width, grid)
    if depth_grey is not None and depth_grey.ndim == 2:
        depth_grey = depth_grey[None]
    first_depth = None if depth_grey is None else sample_at(depth_grey[0], points).astype(np.float64) / 255.0
    colors = track_colors(points, height, width, first_depth)
    tracks, visible = tracker(frames, points)
    depth = None
    if depth_grey is not None:
        depth = np.empty(tracks.shape[:2], dtype=np.float64)
        for t in range(len(tracks)):
            position = np.nan_to_num(tracks[t], nan=0.0)
            depth[t] = sample_at(depth_grey[min(t, len(depth_grey) - 1)], position)
    if point_size is None:  # from the full grid, so that points lost at frame 0 do not change it
        point_size = default_point_size(points, height, width)
    return render_tracks(tracks, visible, colors, height, width, point_size=point_size, depth=depth,
                         draw_occluded=draw_occluded)


def write_track_clips(
    frames: np.ndarray,
    out_dir: str | Path,
    tracker: Callable,
    grid: int = DEFAULT_GRID,
    depth_grey: np.ndarray | None = None,
    point_size: float | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    draw_occluded: bool = True,
) -> list[Path]:
    """Write track_XX.mp4 (16 fps, H.264) for every clip of ``frames``.

    Args:
        frames: (T, H, W, 3) uint8 driving video, T = 1 + 80k.
        depth_grey: optional (T, H, W) uint8 globally normalised depth of the same frames.

    Returns:
        The written paths, in clip order.
    """
    if depth_grey is not None and depth_grey.shape != frames.shape[:3]:
        raise ValueError(f"depth {depth_grey.shape} does not match the frames {frames.shape[:3]}; "
                         "compute both from the same video with the same --height/--width/--frame-step")
    out_dir = Path(out_dir)
    ranges = clip_ranges(len(frames))
    paths = []
    for index, (start, end) in enumerate(progress(ranges) if progress else ranges):
        video = render_clip_tracks(frames[start:end], tracker, grid,
                                   None if depth_grey is None else depth_grey[start:end], point_size, draw_occluded)
        paths.append(write_video(out_dir / f"track_{index:02d}.mp4", video, fps=16))
    return paths


def add_track_arguments(parser) -> None:
    """Track-rendering options shared by get_track.py and prepare_controls.py."""
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID,
                        help="points per side (50 = upstream's script and released example; 70 = the paper)")
    parser.add_argument("--point-size", type=float, default=None,
                        help="mark half-width in px (default: half the grid spacing, as upstream)")
    parser.add_argument("--hide-occluded", action="store_true",
                        help="leave out points the tracker marks occluded (upstream, and so the released "
                             "weights, draw every point in every frame)")
