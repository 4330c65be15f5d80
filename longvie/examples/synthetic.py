"""A synthetic long-video example: a textured 3D scene filmed by a moving camera.

    python -m longvie.examples.synthetic OUT [--clips 3] [--height 352] [--width 640] [--frames-per-clip 81]

writes, like the upstream examples (SPEC §4, §5)::

    OUT/first.png            the first frame (RGB)
    OUT/depth_00.mp4 ...     per-clip depth: exact disparity, normalised globally over the whole video
    OUT/track_00.mp4 ...     per-clip point tracks: a grid from each clip's first frame, projected
    OUT/cond.json            [{"text", "depth", "track"}, ...] with one prompt per clip
    OUT/reference.mp4        the rendered RGB video (ground truth, for comparisons)

The scene is ray-cast with numpy: a checkered ground plane, boxes and spheres with procedural
textures, a sky gradient. Because the renderer knows the geometry, depth and tracks are exact: the
tracks are the grid points' 3D positions reprojected into every frame; as upstream's tracks (and so
the released weights), occluded points are drawn too, each frame far to near.
Clips share one frame (clip i = frames (F-1)i .. (F-1)i + F-1 of the whole video).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..controls.primitives import (
    DEFAULT_GRID,
    clip_ranges,
    grey_to_rgb,
    grid_points,
    normalize_depth,
    render_tracks,
    track_colors,
)
from ..media.atomic import atomic_path, atomic_write_json
from ..media.video_io import write_video

__all__ = ["Scene", "Camera", "make_scene", "camera_at", "render", "project", "make_synthetic_example", "main"]

FIELD_OF_VIEW_DEG = 70.0  # horizontal
CLIP_TRAVEL = 3.0  # metres the camera moves forward per clip, whatever the frames per clip
LIGHT = np.array([0.45, 0.8, -0.4]) / np.linalg.norm([0.45, 0.8, -0.4])
PROMPTS = (
    "A camera glides forward across a sunlit checkered plaza. Colourful boxes and striped spheres stand on "
    "both sides of the path under a clear blue sky.",
    "The camera keeps moving ahead and sways gently, passing tall painted blocks and shiny balls resting on "
    "the tiled ground in bright daylight.",
    "The camera drifts along the plaza as new boxes and spheres come into view; the tiles stretch to the "
    "horizon under a pale blue sky.",
)


@dataclass(frozen=True)
class Scene:
    """Axis-aligned boxes (min/max corners) and spheres standing on the ground plane y = 0."""

    box_min: np.ndarray  # (B, 3)
    box_max: np.ndarray  # (B, 3)
    box_color: np.ndarray  # (B, 3) float in [0, 1]
    sphere_center: np.ndarray  # (S, 3)
    sphere_radius: np.ndarray  # (S,)
    sphere_color: np.ndarray  # (S, 3)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera; world axes: x right, y up, z forward. Pixel (0, 0) is the top-left centre."""

    position: np.ndarray  # (3,)
    right: np.ndarray  # (3,) unit
    up: np.ndarray  # (3,) unit
    forward: np.ndarray  # (3,) unit
    focal: float  # pixels
    height: int
    width: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def pixel_rays(self, xy: np.ndarray) -> np.ndarray:
        """World directions through pixels ``xy`` (..., 2), scaled so their forward component is 1:
        the ray parameter of a hit is then its depth along the optical axis."""
        cx, cy = self.center
        dx = (xy[..., 0:1] - cx) / self.focal
        dy = (xy[..., 1:2] - cy) / self.focal
        return dx * self.right - dy * self.up + self.forward


def make_scene(num_clips: int, seed: int = 0) -> Scene:
    """Boxes and spheres on both sides of the camera path, over the distance the clips travel."""
    rng = np.random.default_rng(seed)
    length = CLIP_TRAVEL * num_clips + 20.0
    box_min, box_max, box_color = [], [], []
    sphere_center, sphere_radius, sphere_color = [], [], []
    z = 2.5
    side = 1.0
    while z < length:
        x = side * rng.uniform(1.8, 4.0)
        if rng.random() < 0.55:
            size = rng.uniform(0.5, 1.2, size=3) * np.array([1.0, rng.uniform(1.0, 3.0), 1.0])
            box_min.append([x - size[0] / 2, 0.0, z - size[2] / 2])
            box_max.append([x + size[0] / 2, size[1], z + size[2] / 2])
            box_color.append(rng.uniform(0.2, 0.95, size=3))
        else:
            radius = rng.uniform(0.35, 0.8)
            sphere_center.append([x, radius, z])
            sphere_radius.append(radius)
            sphere_color.append(rng.uniform(0.2, 0.95, size=3))
        z += rng.uniform(1.0, 2.2)
        side = -side
    as_array = lambda values, shape: np.asarray(values, dtype=np.float64).reshape(shape)  # noqa: E731
    return Scene(as_array(box_min, (-1, 3)), as_array(box_max, (-1, 3)), as_array(box_color, (-1, 3)),
                 as_array(sphere_center, (-1, 3)), as_array(sphere_radius, (-1,)), as_array(sphere_color, (-1, 3)))


def camera_at(progress: float, height: int, width: int) -> Camera:
    """The camera after ``progress`` clips of travel: forward motion, a sideways sway and a slow pan."""
    position = np.array([0.7 * np.sin(1.3 * progress), 1.4 + 0.15 * np.sin(2.1 * progress),
                         CLIP_TRAVEL * progress])
    yaw = 0.22 * np.sin(0.9 * progress + 0.4)
    pitch = -0.12
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    up = np.cross(forward, right)
    focal = (width / 2.0) / np.tan(np.radians(FIELD_OF_VIEW_DEG) / 2.0)
    return Camera(position, right, up, forward, focal, height, width)


def _ground_color(points: np.ndarray) -> np.ndarray:
    """Checkered tiles with a per-tile tint and thin grout lines: plenty of texture to track."""
    tile_x, tile_z = np.floor(points[:, 0]), np.floor(points[:, 2])
    checker = (tile_x + tile_z) % 2
    tint = ((tile_x * 73856093 + tile_z * 19349663) % 97) / 97.0  # deterministic per-tile variation
    base = np.where(checker[:, None] > 0, [0.78, 0.74, 0.64], [0.42, 0.5, 0.38])
    color = base * (0.85 + 0.3 * tint[:, None])
    frac_x, frac_z = points[:, 0] - tile_x, points[:, 2] - tile_z
    grout = (np.minimum(frac_x, 1 - frac_x) < 0.03) | (np.minimum(frac_z, 1 - frac_z) < 0.03)
    return np.where(grout[:, None], 0.25, color)


def _sky_color(directions: np.ndarray) -> np.ndarray:
    """Horizon-to-zenith gradient for directions (..., 3)."""
    length = np.sqrt(directions[..., 0] ** 2 + directions[..., 1] ** 2 + directions[..., 2] ** 2)
    elevation = np.clip(directions[..., 1] / length, 0.0, 1.0)[..., None]
    return (1 - elevation) * np.array([0.85, 0.9, 0.97]) + elevation * np.array([0.35, 0.55, 0.9])


def _screen_window(camera: Camera, center: np.ndarray, radius: float) -> tuple[slice, slice] | None:
    """Rows/columns that an object's bounding sphere can cover (None when it is off screen).

    Only these pixels are ray-tested against the object, which makes rendering several times
    faster. The bound is generous (x2) to cover the stretching of silhouettes off the optical axis.
    """
    offset = center - camera.position
    depth = offset @ camera.forward
    if depth <= -radius:
        return None
    if depth <= 1.5 * radius:  # the camera is (nearly) inside the bounding sphere
        return slice(0, camera.height), slice(0, camera.width)
    xy, _ = project(center[None], camera)
    x, y = xy[0]
    reach = 2.0 * camera.focal * radius / (depth - radius)
    x0, x1 = int(max(np.floor(x - reach), 0)), int(min(np.ceil(x + reach) + 1, camera.width))
    y0, y1 = int(max(np.floor(y - reach), 0)), int(min(np.ceil(y + reach) + 1, camera.height))
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _hit_sphere(origin, rays, center, radius):
    """Ray parameter of the nearest hit of rays (..., 3) with a sphere, ``inf`` for a miss."""
    oc = origin - center
    a = rays[..., 0] ** 2 + rays[..., 1] ** 2 + rays[..., 2] ** 2
    b = rays @ oc
    disc = b * b - a * (oc @ oc - radius * radius)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def _hit_box(origin, rays, low, high):
    """Ray parameter of the entry hit with an axis-aligned box (``inf`` for a miss) and the hit axis."""
    safe = np.where(np.abs(rays) < 1e-12, 1e-12, rays)
    t1, t2 = (low - origin) / safe, (high - origin) / safe
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    # Component-wise max/min: much faster than reducing over a last axis of length 3.
    t_in = np.maximum(np.maximum(near[..., 0], near[..., 1]), near[..., 2])
    t_out = np.minimum(np.minimum(far[..., 0], far[..., 1]), far[..., 2])
    axis = np.where(near[..., 0] == t_in, 0, np.where(near[..., 1] == t_in, 1, 2))
    return np.where((t_out >= t_in) & (t_in > 1e-6), t_in, np.inf), axis


def render(scene: Scene, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one frame.

    Returns:
        ``(rgb, depth)``: (H, W, 3) uint8 and (H, W) float64 depth along the optical axis, ``inf``
        for the sky.
    """
    h, w = camera.height, camera.width
    f32 = lambda values: np.asarray(values, dtype=np.float32)  # noqa: E731 - float32 halves the time
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rays = f32(camera.pixel_rays(np.stack([xs, ys], axis=-1)))  # (H, W, 3)
    origin = f32(camera.position)
    depth = np.full((h, w), np.inf, dtype=np.float32)
    normal = np.zeros((h, w, 3), dtype=np.float32)
    color = _sky_color(rays)

    # Ground plane y = 0, with distance fog (which also hides texture aliasing near the horizon).
    with np.errstate(divide="ignore"):
        t = np.where(rays[..., 1] < 0, -origin[1] / rays[..., 1], np.inf)
    hit = np.isfinite(t)
    depth[hit] = t[hit]
    normal[hit] = [0.0, 1.0, 0.0]
    fog = 1.0 - np.exp(-t[hit] / 45.0)
    color[hit] = (1 - fog[:, None]) * _ground_color(origin + t[hit, None] * rays[hit]) + fog[:, None] * color[hit]

    for center, radius, base in zip(f32(scene.sphere_center), f32(scene.sphere_radius), f32(scene.sphere_color)):
        window = _screen_window(camera, center, radius)
        if window is None:
            continue
        t = _hit_sphere(origin, rays[window], center, radius)
        hit = t < depth[window]
        if not hit.any():
            continue
        points = origin + t[hit, None] * rays[window][hit]
        stripes = np.floor((points[:, 1] - center[1]) / radius * 3 + 3) % 2
        depth[window][hit] = t[hit]
        normal[window][hit] = (points - center) / radius
        color[window][hit] = np.where(stripes[:, None] > 0, base, 1.0 - 0.6 * base)

    for low, high, base in zip(f32(scene.box_min), f32(scene.box_max), f32(scene.box_color)):
        window = _screen_window(camera, (low + high) / 2, float(np.linalg.norm(high - low)) / 2)
        if window is None:
            continue
        block = rays[window]
        t, axis = _hit_box(origin, block, low, high)
        hit = t < depth[window]
        if not hit.any():
            continue
        axis, hit_rays = axis[hit], block[hit]
        face_normal = np.zeros_like(hit_rays)
        face_normal[np.arange(len(axis)), axis] = -np.sign(hit_rays[np.arange(len(axis)), axis])
        points = origin + t[hit, None] * hit_rays
        checks = np.floor(points * 2.5).sum(1) % 2
        depth[window][hit] = t[hit]
        normal[window][hit] = face_normal
        color[window][hit] = np.where(checks[:, None] > 0, base, 0.55 * base)

    shade = np.where(np.isfinite(depth), 0.35 + 0.65 * np.clip(normal @ LIGHT, 0.0, 1.0), 1.0)
    rgb = np.clip(color * shade[..., None] * 255.0, 0, 255).astype(np.uint8)
    return rgb, depth.astype(np.float64)


def project(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel positions (N, 2) and depths (N,) along the optical axis."""
    offset = points - camera.position
    depth = offset @ camera.forward
    cx, cy = camera.center
    with np.errstate(divide="ignore", invalid="ignore"):
        x = camera.focal * (offset @ camera.right) / depth + cx
        y = -camera.focal * (offset @ camera.up) / depth + cy
    return np.stack([x, y], axis=-1), depth


def _track_clip(cameras: list[Camera], depths: np.ndarray, grey: np.ndarray, grid: int) -> np.ndarray:
    """Render one clip's track video: grid points of its first frame, followed in 3D.

    Args:
        cameras: the clip's cameras (F of them); depths: (F, H, W) exact depth; grey: (H, W) uint8
            normalised depth of the first frame (for the point colours).
    """
    first = cameras[0]
    h, w = first.height, first.width
    start_xy = grid_points(h, w, grid).astype(np.float64)
    col = np.clip(np.rint(start_xy[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.rint(start_xy[:, 1]).astype(int), 0, h - 1)
    start_depth = depths[0][row, col]
    on_surface = np.isfinite(start_depth)  # sky points have no 3D position to follow
    world = first.position + np.where(on_surface, start_depth, 0.0)[:, None] * first.pixel_rays(start_xy)

    tracks = np.full((len(cameras), len(start_xy), 2), np.nan)  # NaN: no position (sky, behind the camera)
    visible = np.zeros((len(cameras), len(start_xy)), dtype=bool)
    distance = np.zeros((len(cameras), len(start_xy)))
    for t, (camera, depth_map) in enumerate(zip(cameras, depths)):
        xy, z = project(world, camera)
        ahead = on_surface & (z > 1e-3)
        inside = ahead & (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
        xy_safe = np.where(inside[:, None], xy, 0.0)
        seen = depth_map[np.rint(xy_safe[:, 1]).astype(int), np.rint(xy_safe[:, 0]).astype(int)]
        visible[t] = inside & (z <= seen * 1.02 + 0.02)  # not hidden behind a nearer surface
        tracks[t][ahead] = xy[ahead]
        distance[t] = np.where(ahead, z, np.inf)

    colors = track_colors(start_xy, h, w, depth=grey[row, col] / 255.0)
    # Every frame far to near (nearer marks on top), occluded points drawn, as upstream.
    return render_tracks(tracks, visible, colors, h, w, depth=distance)


def make_synthetic_example(out_dir: str | Path, clips: int = 3, height: int = 352, width: int = 640,
                           frames_per_clip: int = 81, grid: int | None = None, seed: int = 0,
                           reference: bool = True) -> Path:
    """Render the example into ``out_dir``; returns the path of its cond.json (written last).

    Args:
        clips: number of clips; the whole video has ``clips * (frames_per_clip - 1) + 1`` frames.
        height, width: frame size (even numbers).
        frames_per_clip: 81 for the released model (4k+1); small for tiny runs.
        grid: track grid size (grid x grid points); None = 50 (upstream script and released example), fewer
            for small frames so that squares stay a few pixels apart.
        reference: also write the rendered RGB video as reference.mp4.
    """
    if clips < 1 or frames_per_clip < 2:
        raise ValueError(f"need clips >= 1 and frames_per_clip >= 2, got {clips}, {frames_per_clip}")
    if height % 2 or width % 2 or height < 16 or width < 16:
        raise ValueError(f"height and width must be even and >= 16, got {height}x{width}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = grid or int(np.clip(width // 9, 4, DEFAULT_GRID))
    total = clips * (frames_per_clip - 1) + 1

    scene = make_scene(clips, seed)
    cameras = [camera_at(clips * i / (total - 1), height, width) for i in range(total)]
    rgb, depth = zip(*(render(scene, camera) for camera in cameras))
    rgb, depth = np.stack(rgb), np.stack(depth)
    disparity = np.where(np.isfinite(depth), 1.0 / np.maximum(depth, 1e-6), 0.0)
    grey = normalize_depth(disparity)  # one p5/p95 pair for the whole video (SPEC §5)

    with atomic_path(out_dir / "first.png") as tmp:
        Image.fromarray(rgb[0]).save(tmp, format="PNG")
    if reference:
        write_video(out_dir / "reference.mp4", rgb, fps=16)
    entries = []
    for index, (start, end) in enumerate(clip_ranges(total, frames_per_clip, overlap=1)):
        depth_name, track_name = f"depth_{index:02d}.mp4", f"track_{index:02d}.mp4"
        write_video(out_dir / depth_name, grey_to_rgb(grey[start:end]), fps=16)
        write_video(out_dir / track_name, _track_clip(cameras[start:end], depth[start:end], grey[start], grid), fps=16)
        entries.append({"text": PROMPTS[index % len(PROMPTS)], "depth": depth_name, "track": track_name})
    cond_path = out_dir / "cond.json"
    atomic_write_json(cond_path, entries)
    return cond_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.examples.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames-per-clip", type=int, default=81)
    parser.add_argument("--grid", type=int, default=None, help="track grid size (default: 50, less for small frames)")
    parser.add_argument("--seed", type=int, default=0, help="scene layout seed")
    parser.add_argument("--no-reference", action="store_true", help="do not write reference.mp4")
    args = parser.parse_args(argv)
    from ..media.output_dir import OutputDirError, claim_output_dir, mark_output_dir

    try:  # new, empty or an example folder of ours: never a folder of the user's files
        claim_output_dir(args.out, "example folder", kind="example", flag="")
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mark_output_dir(args.out, "example")
    cond = make_synthetic_example(args.out, args.clips, args.height, args.width, args.frames_per_clip, args.grid,
                                  args.seed, reference=not args.no_reference)
    print(f"wrote {cond} and {json.loads(cond.read_text()).__len__()} clip(s) of depth/track videos in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
