"""Render a point cloud along a camera path into LongVie's depth and track controls.

* **Depth**: z-buffer splatting. Each point covers the pixels whose centres lie within a square of
  half-width ``SPLAT_SCALE * f * size / z`` around its projection (``size`` = the width of the pixel it
  was seen through, so the footprint grows as the camera comes closer), the nearest point wins.
  Pixels no point covers (disocclusions, regions the photo never saw) are filled from the *farthest*
  depth around them (a disocclusion shows what is behind the occluder), coarse to fine, then smoothed
  inside the hole. The metric depth of the whole path becomes disparity 1/z and is normalised exactly
  as the extraction pipeline normalises a whole video (:func:`longvie.controls.primitives.depth_bounds`
  and :func:`~longvie.controls.primitives.disparity_to_grey`, SPEC §5: one p5/p95 pair for all frames).
* **Tracks**: per clip, the 50x50 grid of the clip's first frame (:func:`~longvie.controls.primitives.grid_points`)
  lifted to 3D with the rendered depth, projected into every frame of the clip; a point is visible
  where it is not behind the rendered surface. They are drawn by the extraction pipeline's own
  :func:`longvie.controls.track_video.render_clip_tracks` (colours from the first-frame position and
  depth, far to near, occluded points drawn as the released weights were trained).

Rendering runs in torch on any device (the CPU in tests, the GPU when there is one).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..controls.primitives import DEFAULT_GRID, depth_bounds, disparity_to_grey, grey_to_rgb, grid_points
from ..controls.track_video import render_clip_tracks
from .geometry import NEAR, Intrinsics, PointCloud

__all__ = ["SPLAT_SCALE", "Render", "splat", "fill_holes", "fill_colors", "render_view", "render_path_depth",
           "depth_to_disparity", "normalise_path_depth", "project_points", "clip_tracks", "render_track_clip",
           "VISIBILITY_TOLERANCE"]

# Half-width of a splat in units of the point's pixel footprint. Below 1 a point seen from where it was
# made covers exactly its own pixel (so a static camera renders the depth map unchanged); 1/sqrt(2)
# closes the gaps between neighbours of a grid seen rotated or slanted.
SPLAT_SCALE = 0.5 ** 0.5
MAX_SPLAT_RADIUS_FRACTION = 1.0 / 48.0  # largest splat half-width, as a fraction of the frame width
VISIBILITY_TOLERANCE = 0.02  # a track point is hidden when it lies more than 2 % behind the rendered surface
_EMPTY = np.iinfo(np.int64).max


@dataclass
class Render:
    """One rendered view: ``depth`` (H, W) float32 with holes filled, ``covered`` (H, W) bool (pixels a
    point landed on, before filling) and ``index`` (H, W) int64 (the point seen at each covered pixel, -1
    elsewhere)."""

    depth: np.ndarray
    covered: np.ndarray
    index: np.ndarray


def _device(device):
    import torch

    return torch.device(device) if device is not None else torch.device("cpu")


def splat(positions, sizes, w2c: np.ndarray, intrinsics: Intrinsics, device=None):
    """Z-buffer splatting of world points: ``(depth, index)`` torch tensors of shape (H, W).

    ``depth`` is +inf and ``index`` -1 where no point lands. Ties (same depth) go to the lower index,
    so the result is deterministic.

    Args:
        positions: (N, 3) float32 torch tensor of world points; sizes: (N,) footprints (scene units).
    """
    import torch

    from .geometry import project, to_camera

    height, width = intrinsics.height, intrinsics.width
    device = positions.device
    camera = to_camera(positions, w2c)
    z = camera[:, 2]
    ahead = torch.nonzero(z > NEAR).squeeze(1)
    buffer = torch.full((height * width,), _EMPTY, dtype=torch.int64, device=device)
    if len(ahead):
        z = z[ahead]
        uv = project(camera[ahead], intrinsics)
        max_radius = max(4.0, MAX_SPLAT_RADIUS_FRACTION * width)
        radius = torch.clamp(SPLAT_SCALE * intrinsics.fx * sizes[ahead] / z, max=max_radius)
        radius_y = radius * (intrinsics.fy / intrinsics.fx)
        x0, x1 = torch.ceil(uv[:, 0] - radius), torch.floor(uv[:, 0] + radius)
        y0, y1 = torch.ceil(uv[:, 1] - radius_y), torch.floor(uv[:, 1] + radius_y)
        x0, x1 = torch.clamp(x0, min=0), torch.clamp(x1, max=width - 1)
        y0, y1 = torch.clamp(y0, min=0), torch.clamp(y1, max=height - 1)
        inside = (x0 <= x1) & (y0 <= y1)
        ahead, z, x0, x1, y0, y1 = (v[inside] for v in (ahead, z, x0, x1, y0, y1))
        # pack (depth, point index) into one int64 so that one scatter-min gives both: positive float32
        # bit patterns sort like the floats
        key = (z.float().contiguous().view(torch.int32).to(torch.int64) << 32) | ahead.to(torch.int64)
        span = torch.maximum(x1 - x0, y1 - y0).to(torch.int64) + 1  # pixels per side, at most 2 r + 1
        x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
        nx, ny = (x1 - x0 + 1).to(torch.int64), (y1 - y0 + 1).to(torch.int64)
        for side in torch.nonzero(torch.bincount(span)).squeeze(1).tolist():
            group = torch.nonzero(span == side).squeeze(1)
            if side == 1:  # most points: exactly one pixel
                buffer.scatter_reduce_(0, y0[group] * width + x0[group], key[group], reduce="amin")
                continue
            offsets = torch.arange(side, device=device)
            dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
            dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
            valid = (dx < nx[group, None]) & (dy < ny[group, None])
            pixel = (y0[group, None] + dy) * width + (x0[group, None] + dx)
            buffer.scatter_reduce_(0, pixel[valid], key[group, None].expand_as(pixel)[valid], reduce="amin")
    empty = buffer == _EMPTY
    depth = (buffer >> 32).to(torch.int32).view(torch.float32)
    depth = torch.where(empty, torch.full_like(depth, math.inf), depth)
    index = torch.where(empty, torch.full_like(buffer, -1), buffer & 0xFFFFFFFF)
    return depth.reshape(height, width), index.reshape(height, width)


def _pyramid_fill(values, valid, pool: str, max_levels: int | None = None):
    """Fill invalid pixels of (C, H, W) ``values`` coarse to fine: each level pools the valid pixels of the
    level below in 2x2 blocks (max for "max", mean for "mean"); invalid pixels take the value of the
    coarser level's block. With ``max_levels`` the pyramid stops there (blocks of 2^max_levels pixels)
    and pixels that no block reaches stay invalid. Returns ``(filled, valid after filling)``."""
    import torch
    import torch.nn.functional as F

    levels = [(values, valid)]
    while not bool(levels[-1][1].all()) and min(levels[-1][0].shape[-2:]) > 1:
        if max_levels is not None and len(levels) > max_levels:
            break
        v, ok = levels[-1]
        okf = ok.to(v.dtype)[None]
        if pool == "max":
            pooled = F.max_pool2d(torch.where(ok[None], v, torch.full_like(v, -math.inf)), 2, ceil_mode=True)
            pooled_ok = torch.isfinite(pooled[0])
        else:
            total = F.avg_pool2d(v * okf, 2, ceil_mode=True, divisor_override=1)
            count = F.avg_pool2d(okf, 2, ceil_mode=True, divisor_override=1)
            pooled = total / count.clamp(min=1)
            pooled_ok = count[0] > 0
        levels.append((pooled, pooled_ok))
    filled, ok = levels[-1]
    for v, ok_level in reversed(levels[:-1]):
        mode = "nearest" if pool == "max" else "bilinear"  # the mean continues smoothly
        up = F.interpolate(filled[None], scale_factor=2, mode=mode)[0][:, :v.shape[-2], :v.shape[-1]]
        up_ok = F.interpolate(ok[None, None].float(), scale_factor=2, mode="nearest")[0, 0]
        up_ok = up_ok[:v.shape[-2], :v.shape[-1]] > 0
        filled = torch.where(ok_level[None], v, up)
        ok = ok_level | up_ok
    return filled, ok


# A hole bounded on both sides by covered pixels no farther apart than this fraction of the frame is a
# disocclusion (filled with the background); wider holes are regions the photo never saw.
DISOCCLUSION_FRACTION = 0.25


def _bounding_pair(depth, valid, dim: int):
    """For every pixel, the depths of the nearest covered pixels before and after it along ``dim`` and the
    gap between them; ``ok`` is False where one side has none."""
    import torch

    n = depth.shape[dim]
    shape = [1, 1]
    shape[dim] = n
    index = torch.arange(n, device=depth.device).view(shape).expand_as(depth)
    before = torch.cummax(torch.where(valid, index, torch.full_like(index, -1)), dim=dim).values
    flipped = torch.flip(torch.where(valid, n - 1 - index, torch.full_like(index, -1)), dims=[dim])
    after = torch.flip(torch.cummax(flipped, dim=dim).values, dims=[dim])
    ok = (before >= 0) & (after >= 0)
    after = torch.where(after >= 0, n - 1 - after, torch.zeros_like(after))
    before = before.clamp(min=0)
    near_value = torch.gather(depth, dim, before)
    far_value = torch.gather(depth, dim, after)
    return torch.maximum(near_value, far_value), after - before, ok


def fill_holes(depth, smooth_iterations: int = 3):
    """Fill the +inf pixels of an (H, W) depth tensor; covered pixels are left untouched.

    * Disocclusions (a hole with covered pixels on both sides along a row or a column, closer together
      than a quarter of the frame) take the *farther* of the two sides: what a moving occluder uncovers
      is the surface behind it, not a blend of both. Of the row and the column, the narrower gap decides.
    * Larger holes (regions the photo never saw, e.g. past the frame edge after a pan) continue the
      covered depth smoothly: a coarse-to-fine mean in disparity, which continues planes (a plane's
      disparity is linear in the image).

    The filled pixels are then smoothed among themselves (no covered pixel bleeds in). A depth with no
    covered pixel at all is returned unchanged (all inf).
    """
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(depth)
    if bool(valid.all()) or not bool(valid.any()):
        return depth
    safe = torch.where(valid, depth, torch.zeros_like(depth))
    row_value, row_gap, row_ok = _bounding_pair(safe, valid, 1)
    col_value, col_gap, col_ok = _bounding_pair(safe, valid, 0)
    limit = DISOCCLUSION_FRACTION * max(depth.shape)
    row_ok &= row_gap <= limit
    col_ok &= col_gap <= limit
    use_row = row_ok & (~col_ok | (row_gap <= col_gap))
    background = torch.where(use_row, row_value, col_value)
    disparity = torch.where(valid, 1.0 / depth.clamp(min=NEAR), torch.zeros_like(depth))
    smooth = 1.0 / _pyramid_fill(disparity[None], valid, "mean")[0][0].clamp(min=1e-12)
    filled = torch.where(valid, depth, torch.where(row_ok | col_ok, background, smooth))
    hole = (~valid).to(depth.dtype)[None, None]
    for _ in range(smooth_iterations):  # averages over hole pixels only: no foreground bleeds into a hole
        total = F.avg_pool2d(filled[None, None] * hole, 3, stride=1, padding=1, divisor_override=1)
        count = F.avg_pool2d(hole, 3, stride=1, padding=1, divisor_override=1)
        filled = torch.where(valid, depth, (total / count.clamp(min=1))[0, 0])
    return filled


def fill_colors(colors, covered):
    """Fill the uncovered pixels of an (H, W, 3) float colour tensor with the mean of the colours around them."""
    if bool(covered.all()) or not bool(covered.any()):
        return colors
    return _pyramid_fill(colors.permute(2, 0, 1), covered, "mean")[0].permute(1, 2, 0)


class _Cloud:
    """A point cloud on a torch device (converted once per path, not once per frame)."""

    def __init__(self, cloud: PointCloud, device=None):
        import torch

        self.cloud = cloud
        self.device = _device(device)
        self.positions = torch.from_numpy(np.ascontiguousarray(cloud.positions, dtype=np.float32)).to(self.device)
        self.sizes = torch.from_numpy(np.ascontiguousarray(cloud.sizes, dtype=np.float32)).to(self.device)
        self.colors = torch.from_numpy(np.ascontiguousarray(cloud.colors)).to(self.device)


def render_view(cloud: PointCloud | _Cloud, w2c: np.ndarray, intrinsics: Intrinsics, device=None,
                with_colors: bool = False):
    """Render one view: a :class:`Render`, plus the (H, W, 3) uint8 colour image when ``with_colors``."""
    import torch

    points = cloud if isinstance(cloud, _Cloud) else _Cloud(cloud, device)
    depth, index = splat(points.positions, points.sizes, w2c, intrinsics)
    covered = index >= 0
    result = Render(fill_holes(depth).cpu().numpy(), covered.cpu().numpy(), index.cpu().numpy())
    if not with_colors:
        return result
    colors = torch.zeros((*index.shape, 3), dtype=torch.float32, device=index.device)
    colors[covered] = points.colors[index[covered]].float()
    colors = fill_colors(colors, covered)
    return result, torch.clamp(torch.round(colors), 0, 255).to(torch.uint8).cpu().numpy()


def depth_to_disparity(depth: np.ndarray) -> np.ndarray:
    """1 / depth (large = near), the quantity the extraction pipeline normalises; empty (inf) -> 0."""
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(depth), 1.0 / np.maximum(depth, NEAR), 0.0).astype(np.float32)


def render_path_depth(cloud: PointCloud, w2c: np.ndarray, intrinsics: Intrinsics, device=None,
                      progress: Callable[[int, int], None] | None = None, with_colors: bool = False,
                      log: Callable[[str], None] | None = None):
    """Metric depth (T, H, W) float32 (holes filled) of every pose of ``w2c`` (T, 4, 4), plus (T, H, W, 3)
    uint8 colours when ``with_colors``. ``progress(done, total)`` after each frame."""
    points = _Cloud(cloud, device)
    depth = np.empty((len(w2c), intrinsics.height, intrinsics.width), dtype=np.float32)
    colors = np.empty((*depth.shape, 3), dtype=np.uint8) if with_colors else None
    started = time.perf_counter()
    for t, pose in enumerate(w2c):
        out = render_view(points, pose, intrinsics, with_colors=with_colors)
        if with_colors:
            out, colors[t] = out
        depth[t] = out.depth
        if progress:
            progress(t + 1, len(w2c))
    if log:
        seconds = time.perf_counter() - started
        log(f"rendered {len(w2c)} frame(s) of {len(cloud):,} points in {seconds:.1f} s "
            f"({1000 * seconds / max(len(w2c), 1):.0f} ms per frame)")
    return (depth, colors) if with_colors else depth


def normalise_path_depth(depth: np.ndarray, bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple]:
    """(T, H, W) metric depth -> (T, H, W) uint8 grey (near = dark) and the (p5, p95) disparity bounds used.

    Without ``bounds`` they are computed over every frame, exactly as the extraction pipeline does for a
    whole video; ``--explore`` passes the bounds of the initial render so that every later clip is greyed
    on the same scale.
    """
    disparity = depth_to_disparity(depth)
    if bounds is None:
        bounds = depth_bounds(disparity)
    grey = np.empty(depth.shape, dtype=np.uint8)
    for start in range(0, len(depth), 81):  # one block of float64 at a time
        grey[start:start + 81] = disparity_to_grey(disparity[start:start + 81], *bounds)
    return grey, (float(bounds[0]), float(bounds[1]))


def project_points(world: np.ndarray, w2c: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel positions (T, N, 2) (NaN behind the camera) and depths (T, N), for the
    poses (T, 4, 4)."""
    import torch

    from .geometry import project, to_camera

    points = torch.from_numpy(np.ascontiguousarray(world, dtype=np.float64))
    xy = np.full((len(w2c), len(world), 2), np.nan)
    z = np.empty((len(w2c), len(world)))
    for t, pose in enumerate(w2c):
        camera = to_camera(points, pose)
        z[t] = camera[:, 2].numpy()
        ahead = z[t] > NEAR
        xy[t, ahead] = project(camera[torch.from_numpy(ahead)], intrinsics).numpy()
    return xy, z


def clip_tracks(first_depth: np.ndarray, w2c: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
                grid: int = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid of a clip's first frame lifted to 3D and followed through the clip.

    Args:
        first_depth: (H, W) rendered metric depth of the clip's first frame.
        w2c: (T, 4, 4) poses of the clip; depth: (T, H, W) rendered metric depth of the clip (visibility).

    Returns:
        ``(points, tracks, visible)``: the (N, 2) grid, (T, N, 2) positions (NaN behind the camera,
        frame 0 exactly the grid) and (T, N) visibility (in the frame and not behind the rendered surface).
    """
    import kornia
    import torch

    height, width = intrinsics.height, intrinsics.width
    points = grid_points(height, width, grid)
    cols = np.clip(np.rint(points[:, 0]), 0, width - 1).astype(np.int64)
    rows = np.clip(np.rint(points[:, 1]), 0, height - 1).astype(np.int64)
    # each grid point is lifted along its own (sub-pixel) ray with the depth under it
    z = torch.from_numpy(first_depth[rows, cols].astype(np.float64))[:, None]
    camera = kornia.geometry.camera.unproject_points(torch.from_numpy(points.astype(np.float64)), z,
                                                     torch.from_numpy(intrinsics.matrix()))
    c2w = torch.from_numpy(np.linalg.inv(w2c[0]))
    world = kornia.geometry.linalg.transform_points(c2w[None], camera[None])[0].numpy()
    tracks, point_z = project_points(world, w2c, intrinsics)
    tracks[0] = points
    finite = np.isfinite(tracks).all(-1)
    inside = finite & (tracks[..., 0] >= 0) & (tracks[..., 0] <= width - 1) & (tracks[..., 1] >= 0) & \
        (tracks[..., 1] <= height - 1)
    safe = np.where(inside[..., None], tracks, 0.0)
    r = np.clip(np.rint(safe[..., 1]), 0, height - 1).astype(np.int64)
    c = np.clip(np.rint(safe[..., 0]), 0, width - 1).astype(np.int64)
    surface = depth[np.arange(len(w2c))[:, None], r, c]
    visible = inside & (point_z <= surface * (1.0 + VISIBILITY_TOLERANCE))
    visible[0] = True
    return points, tracks.astype(np.float32), visible


def render_track_clip(first_depth: np.ndarray, w2c: np.ndarray, depth: np.ndarray, grey: np.ndarray,
                      intrinsics: Intrinsics, grid: int = DEFAULT_GRID, draw_occluded: bool = True) -> np.ndarray:
    """The track video of one clip (T, H, W, 3) uint8, drawn by the extraction pipeline's renderer.

    ``grey``: (T, H, W) uint8 normalised depth of the clip (point colours and drawing order, as extraction).
    """
    points, tracks, visible = clip_tracks(first_depth, w2c, depth, intrinsics, grid)

    def rendered_tracker(frames, query):  # the tracker interface of longvie.controls.point_tracking
        if not np.array_equal(np.asarray(query, dtype=np.float32), points):
            raise ValueError("render_track_clip: the query grid differs from the rendered grid")
        return tracks, visible

    shape_only = np.broadcast_to(np.zeros((1, 1, 1, 3), dtype=np.uint8), (len(w2c), intrinsics.height,
                                                                          intrinsics.width, 3))
    return render_clip_tracks(shape_only, rendered_tracker, grid, depth_grey=grey, draw_occluded=draw_occluded)


def grey_video(grey: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 -> (T, H, W, 3) grey RGB, as the depth control videos are stored."""
    return grey_to_rgb(grey)
