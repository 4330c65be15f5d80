"""Control-signal primitives (SPEC §5): depth normalisation, clip split, point grids, track rendering.

Pure numpy, no model, no IO: ``utils/`` (extraction from real videos) and the synthetic-example
generator both build their depth and track videos from these functions, so every control video the
project makes looks the same.

Conventions: frames are uint8 ``(T, H, W, 3)`` RGB; points are float ``(x, y)`` pixel coordinates
with (0, 0) the centre of the top-left pixel.

Where the numbers come from:

* depth: LongVie (arXiv 2508.03694) §3 and upstream ``utils/depth_npy2mp4.py`` (github
  Vchitect/LongVie): one p5/p95 pair over the whole video, near = dark, ``uint8(255 * d')``.
* clips: 81 frames at 16 fps with one shared frame (SPEC §4), clip i = frames 80i .. 80i+80.
* tracks: upstream ``utils/get_track.py`` + SpatialTracker's ``get_points_on_a_grid`` and
  ``Visualizer`` (github henry123-boy/SpaTracker, vendored by Vchitect/LongVie): grid margin of
  576 // 64 = 9 px at the 576x384 tracking resolution, colour R = x, G = y, B = inverse depth
  (2/98 percentile range), rectangles of half-width floor(grid spacing) / 2 and aspect 1.5 : 1 on black,
  drawn far to near in every frame. Upstream draws every point in every frame: its visibility switch
  only picks a fill thickness of -1 either way, so the released weights saw occluded points drawn, and
  :func:`render_tracks` draws them by default (``draw_occluded=False`` hides them). Grid: 50x50 as
  upstream's script (``--grid_size 50``) and the released example; the paper's 70x70 is an option.
  Measured on shared/examples/ride_horse/track_*.mp4 (832x480): a 50x50 grid of 10x7 px marks.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "CLIP_FRAMES",
    "CLIP_STRIDE",
    "depth_bounds",
    "disparity_to_grey",
    "normalize_depth",
    "clip_ranges",
    "usable_frames",
    "grid_points",
    "DEFAULT_GRID",
    "track_colors",
    "default_point_size",
    "render_tracks",
    "grey_to_rgb",
]

CLIP_FRAMES = 81  # frames per clip (4k + 1 for the Wan VAE), SPEC §4
CLIP_STRIDE = CLIP_FRAMES - 1  # consecutive clips share one frame

CONSTANT_DEPTH_GREY = 128  # written when a video has no depth variation at all (p95 == p5)

# SpatialTracker tracks at 576x384 and keeps a margin of 576 // 64 = 9 px on every side of the grid.
_TRACKER_WIDTH, _TRACKER_HEIGHT, _TRACKER_MARGIN = 576, 384, 576 // 64
# Upstream draws each point as a rectangle 1.5x wider than high (the 832x480 aspect, roughly).
_POINT_ASPECT = 1.5
# Half-width at 832x480 when it cannot be measured from a grid: ride_horse's 10 px wide squares.
_REFERENCE_HALF_WIDTH, _REFERENCE_WIDTH = 4.5, 832


# --------------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------------


def depth_bounds(disparity: np.ndarray, low_pct: float = 5.0, high_pct: float = 95.0) -> tuple[float, float]:
    """Percentiles ``(p_low, p_high)`` of a disparity array over all of its values.

    Args:
        disparity: (T, H, W) (or any shape) relative disparity, large = near.

    Raises:
        ValueError: empty input, non-finite values, or ``low_pct >= high_pct``.
    """
    disparity = np.asarray(disparity)
    if disparity.size == 0:
        raise ValueError("depth_bounds: the disparity array is empty")
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    if not np.isfinite(disparity).all():
        raise ValueError("depth_bounds: the disparity contains NaN or inf values; "
                         "fix the depth estimator output (e.g. np.nan_to_num) before normalising")
    p_low, p_high = np.percentile(disparity, [low_pct, high_pct])
    return float(p_low), float(p_high)


def disparity_to_grey(disparity: np.ndarray, p_low: float, p_high: float) -> np.ndarray:
    """Map disparity to 8-bit grey with fixed bounds: near (>= p_high) = 0, far (<= p_low) = 255.

    d' = (p_high - clip(d, p_low, p_high)) / (p_high - p_low); grey = floor(255 d') as upstream.
    With ``p_high == p_low`` (no depth variation) every pixel becomes mid-grey (128).

    Args:
        disparity: (T, H, W) float (any shape works). Returns uint8 of the same shape.
    """
    disparity = np.asarray(disparity, dtype=np.float64)
    if p_high <= p_low:
        return np.full(disparity.shape, CONSTANT_DEPTH_GREY, dtype=np.uint8)
    scaled = (p_high - np.clip(disparity, p_low, p_high)) / (p_high - p_low)
    return (scaled * 255.0).astype(np.uint8)


def normalize_depth(disparity: np.ndarray, low_pct: float = 5.0, high_pct: float = 95.0) -> np.ndarray:
    """Globally normalised 8-bit depth of a whole video (SPEC §5).

    One (p5, p95) pair is computed over ALL frames (per-clip normalisation is what LongVie
    identifies as a cause of drift), then d' = (p95 - clip(d, p5, p95)) / (p95 - p5): near (large
    disparity) = dark 0, far = bright 255.

    Args:
        disparity: (T, H, W) float relative disparity (large = near), e.g. Video Depth Anything output.

    Returns:
        (T, H, W) uint8. A video without depth variation (p95 == p5) gives constant mid-grey (128)
        and a warning instead of a division by zero.
    """
    disparity = np.asarray(disparity)
    if disparity.ndim != 3:
        raise ValueError(f"normalize_depth expects (T, H, W) disparity, got shape {disparity.shape}")
    p_low, p_high = depth_bounds(disparity, low_pct, high_pct)
    if p_high <= p_low:
        warnings.warn(
            f"depth has no variation (p{high_pct:g} == p{low_pct:g} == {p_low:g}); writing constant "
            f"mid-grey ({CONSTANT_DEPTH_GREY}) depth — check that the depth estimator ran on the right video",
            RuntimeWarning,
            stacklevel=2,
        )
    return disparity_to_grey(disparity, p_low, p_high)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 grey -> (T, H, W, 3) uint8 with the grey value in every channel."""
    return np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------


def clip_ranges(num_frames: int, clip_len: int = CLIP_FRAMES, overlap: int = 1) -> list[tuple[int, int]]:
    """Half-open frame ranges ``[start, end)`` of consecutive clips sharing ``overlap`` frames.

    With the defaults clip i covers frames 80i .. 80i+80 inclusive, i.e. ``(80i, 80i+81)``. Trailing
    frames that do not fill a whole clip are dropped (see :func:`usable_frames`).

    Raises:
        ValueError: ``num_frames < clip_len`` (not even one clip), or inconsistent lengths.
    """
    if clip_len < 1 or not 0 <= overlap < clip_len:
        raise ValueError(f"need clip_len >= 1 and 0 <= overlap < clip_len, got {clip_len}, {overlap}")
    if num_frames < clip_len:
        raise ValueError(f"{num_frames} frames are fewer than one clip of {clip_len} frames")
    stride = clip_len - overlap
    count = (num_frames - overlap) // stride
    return [(i * stride, i * stride + clip_len) for i in range(count)]


def usable_frames(num_frames: int, clip_len: int = CLIP_FRAMES, overlap: int = 1) -> int:
    """How many leading frames the clips of :func:`clip_ranges` use (1 + 80k for the defaults).

    ``num_frames - usable_frames(num_frames)`` trailing frames are dropped.
    """
    return clip_ranges(num_frames, clip_len, overlap)[-1][1]


# --------------------------------------------------------------------------------------------------
# Point tracks
# --------------------------------------------------------------------------------------------------


DEFAULT_GRID = 50  # upstream get_track.py --grid_size default and the released example; the paper uses 70


def grid_points(height: int, width: int, grid: int = DEFAULT_GRID) -> np.ndarray:
    """A regular ``grid`` x ``grid`` lattice of query points, laid out like SpatialTracker's.

    The lattice spans the frame minus a margin of 9 px at the tracker's 576x384 resolution, i.e.
    ``width / 64`` horizontally and ``height * 9 / 384`` vertically (13 and 11.25 px at 832x480).
    Rows come first: point ``r * grid + c`` is row r, column c. ``grid == 1`` gives the centre.

    Returns:
        (grid * grid, 2) float32 array of (x, y) pixel coordinates.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if grid == 1:
        return np.array([[width / 2.0, height / 2.0]], dtype=np.float32)
    margin_x = _TRACKER_MARGIN * width / _TRACKER_WIDTH
    margin_y = _TRACKER_MARGIN * height / _TRACKER_HEIGHT
    xs = np.linspace(margin_x, width - margin_x, grid)
    ys = np.linspace(margin_y, height - margin_y, grid)
    grid_x, grid_y = np.meshgrid(xs, ys)  # (grid, grid), rows = y
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1).astype(np.float32)


def _normalise_to_unit(values: np.ndarray, fallback_range: float) -> np.ndarray:
    """Min-max scale to [0, 1]; a degenerate extent falls back to ``values / fallback_range``."""
    low, high = float(values.min()), float(values.max())
    if high > low:
        return (values - low) / (high - low)
    return np.clip(values / max(fallback_range, 1e-6), 0.0, 1.0)


def track_colors(
    points_xy: np.ndarray,
    height: int,
    width: int,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """One RGB colour per point from its start position (and start depth), as upstream's tracks.

    R = x and G = y, min-max normalised over the points (so a grid spans 0..255 exactly as in
    ride_horse/track_00.mp4). B encodes depth the way SpatialTracker's visualiser does: the inverse
    of upstream's tracker depth z = 1 - d, normalised between its 2nd and 98th percentiles, so
    far points (sky) turn blue and near ones keep B = 0. Without depth B = 0.

    Args:
        points_xy: (N, 2) float (x, y) start positions.
        height, width: frame size, used when the points have no extent along an axis.
        depth: optional (N,) globally normalised depth in [0, 1] at the start positions
            (0 = near/dark, 1 = far/bright, i.e. the depth video's grey value / 255).

    Returns:
        (N, 3) uint8 colours.
    """
    points_xy = np.asarray(points_xy, dtype=np.float64)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2:
        raise ValueError(f"points_xy must be (N, 2), got {points_xy.shape}")
    num = len(points_xy)
    colors = np.zeros((num, 3), dtype=np.float64)
    if num == 0:
        return colors.astype(np.uint8)
    colors[:, 0] = _normalise_to_unit(points_xy[:, 0], width - 1)
    colors[:, 1] = _normalise_to_unit(points_xy[:, 1], height - 1)
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64).reshape(-1)
        if depth.shape != (num,):
            raise ValueError(f"depth must have one value per point ({num}), got shape {depth.shape}")
        # Upstream divides by z and gets inf for the farthest grey level; clamp z to one grey level.
        inverse = 1.0 / np.clip(1.0 - depth, 1.0 / 255.0, 1.0)
        low, high = np.percentile(inverse, [2, 98])
        if high > low:
            colors[:, 2] = np.clip((inverse - low) / (high - low), 0.0, 1.0)
    return np.rint(colors * 255.0).astype(np.uint8)


def _min_neighbour_distance(points_xy: np.ndarray, chunk: int = 1024) -> float | None:
    """Smallest non-zero distance between two of the points (None when there is no pair)."""
    points = np.asarray(points_xy, dtype=np.float32)
    best = np.inf
    for start in range(0, len(points), chunk):
        diff = points[start:start + chunk, None, :] - points[None, :, :]
        squared = np.einsum("ijk,ijk->ij", diff, diff)
        squared[squared == 0] = np.inf  # the point itself and exact duplicates
        best = min(best, float(squared.min()))
    return None if np.isinf(best) else float(np.sqrt(best))


def default_point_size(points_xy: np.ndarray, height: int, width: int) -> float:
    """Half-width in pixels of a track square, from the spacing of the first-frame points.

    Upstream's rule: half-width = floor(distance to the nearest other point) / 2, so squares scale
    with the grid and the resolution (4.5 -> 10x7 px squares for a 50x50 grid at 832x480, as in
    ride_horse; 3 -> 7x5 px for 70x70). Without two distinct points: 4.5 px scaled by width / 832.

    Args:
        points_xy: (N, 2) float first-frame positions.
    """
    spacing = _min_neighbour_distance(points_xy)
    if spacing is None:
        return _REFERENCE_HALF_WIDTH * width / _REFERENCE_WIDTH
    return np.floor(spacing) / 2.0


def render_tracks(
    tracks_xy: np.ndarray,
    visible: np.ndarray,
    colors: np.ndarray,
    height: int,
    width: int,
    point_size: float | None = None,
    depth: np.ndarray | None = None,
    draw_occluded: bool = True,
) -> np.ndarray:
    """Draw point tracks as filled rectangles on black (SPEC §5), as upstream's SpatialTracker visualiser.

    Point n at frame t covers pixels x in [trunc(x - s), trunc(x + s)] and y in
    [trunc(y - s / 1.5), trunc(y + s / 1.5)] (s = ``point_size``), clipped to the frame (OpenCV's
    ``rectangle`` with ``int()`` corners): a mark whose centre has left the frame is still drawn where it
    overlaps it. Non-finite positions (a point a tracker lost, with no position estimate) are never drawn.
    Within a frame, marks are drawn far to near when ``depth`` is given (nearer marks cover farther
    ones), else in point order (later points on top).

    Args:
        tracks_xy: (T, N, 2) float (x, y) positions.
        visible: (T, N) bool; only used with ``draw_occluded=False``.
        colors: (N, 3) uint8, one colour per point for the whole clip.
        height, width: output frame size.
        point_size: mark half-width in pixels; None = :func:`default_point_size` of all first-frame points.
        depth: optional (T, N) depth per point and frame, larger = farther (e.g. the depth video's grey
            value at the point); sets the drawing order of each frame, farthest first (stable for ties).
        draw_occluded: True (default, as upstream and the released weights) draws every point in every
            frame; False draws only points marked visible.

    Returns:
        (T, H, W, 3) uint8 frames.
    """
    tracks_xy = np.asarray(tracks_xy, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    colors = np.asarray(colors, dtype=np.uint8)
    if tracks_xy.ndim != 3 or tracks_xy.shape[2] != 2:
        raise ValueError(f"tracks_xy must be (T, N, 2), got {tracks_xy.shape}")
    num_frames, num_points = tracks_xy.shape[:2]
    if visible.shape != (num_frames, num_points):
        raise ValueError(f"visible must be {(num_frames, num_points)}, got {visible.shape}")
    if colors.shape != (num_points, 3):
        raise ValueError(f"colors must be {(num_points, 3)}, got {colors.shape}")
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (num_frames, num_points):
            raise ValueError(f"depth must be {(num_frames, num_points)}, got {depth.shape}")

    if point_size is None:
        start = tracks_xy[0][np.isfinite(tracks_xy[0]).all(-1)]
        point_size = default_point_size(start, height, width)
    half_w, half_h = float(point_size), float(point_size) / _POINT_ASPECT

    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    finite = np.isfinite(tracks_xy).all(-1)
    x, y = np.nan_to_num(tracks_xy[..., 0]), np.nan_to_num(tracks_xy[..., 1])
    # Corners truncated toward zero as Python's int() in upstream, then clipped like cv2.rectangle.
    x0, x1 = np.trunc(x - half_w), np.trunc(x + half_w)
    y0, y1 = np.trunc(y - half_h), np.trunc(y + half_h)
    drawn = finite & (x1 >= 0) & (x0 <= width - 1) & (y1 >= 0) & (y0 <= height - 1)
    if not draw_occluded:
        drawn &= visible
    x0 = np.clip(x0, 0, width - 1).astype(np.int64)
    x1 = np.clip(x1, 0, width - 1).astype(np.int64) + 1
    y0 = np.clip(y0, 0, height - 1).astype(np.int64)
    y1 = np.clip(y1, 0, height - 1).astype(np.int64) + 1
    for t in range(num_frames):
        frame = frames[t]
        order = np.arange(num_points) if depth is None else np.argsort(-depth[t], kind="stable")
        for n in order[drawn[t, order]]:
            frame[y0[t, n]:y1[t, n], x0[t, n]:x1[t, n]] = colors[n]
    return frames
