"""The 3D memory of ``--explore``: a point cloud that grows with every generated clip.

After each clip, some of its frames are fused into the cloud (the idea of HunyuanWorld-Voyager's
world cache, arXiv 2506.04225, and GEN3C's 3D cache; the code is ours):

1. render the cloud from the frame's camera: depth and the pixels some point covers;
2. estimate the frame's depth with the depth model and align it to the memory: scale and shift by
   least squares over the covered pixels (trimmed: the 20 % largest residuals are refitted out twice);
3. add the pixels the memory does not explain — uncovered (newly revealed) or clearly in front of the
   memory (something new between the camera and the remembered surface) — as points coloured from the
   generated frame. Points already in the memory are never moved or recoloured, so a region looks the
   same when the camera comes back;
4. keep the cloud bounded: a new point is dropped when a point of about its own size already occupies its
   voxel (an octree-like grid whose cell size follows each point's footprint), and above ``max_points``
   the whole cloud is thinned on a coarser uniform grid (older points kept first).

The memory is saved after each clip atomically (``memory/memory_KKK.npz`` = clips 0..K-1 fused, with
the state hashes of those clips), so a killed run resumes from exactly the memory it had.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..media.atomic import atomic_path
from .geometry import NEAR, Intrinsics, PointCloud, cloud_from_depth

__all__ = ["MemorySettings", "WorldMemory", "align_depth", "write_ply", "read_ply"]

_VOXEL_BASE = 1e-5  # scene units: voxel edges are this times a power of two (about one point footprint)


@dataclass(frozen=True)
class MemorySettings:
    max_points: int = 4_000_000  # the cloud is thinned above this (about 64 MB)
    fuse_every: int = 10  # fuse every k-th frame of a generated clip (and its last frame)
    front_tolerance: float = 0.15  # aligned depth this much nearer than the memory counts as a new surface
    min_covered_fraction: float = 0.01  # fewer covered pixels than this: the frame cannot be aligned (skipped)


def align_depth(estimate: np.ndarray, target: np.ndarray, mask: np.ndarray, trim: float = 0.2,
                rounds: int = 2) -> tuple[float, float, int]:
    """Scale and shift ``(a, b)`` minimising sum over ``mask`` of (a * estimate + b - target)^2.

    Robust to outliers: ``rounds`` refits drop the ``trim`` fraction of largest residuals. A fit with a
    non-positive scale (an estimate unrelated to the target) falls back to the median ratio (b = 0).
    Returns ``(a, b, pixels used)``.
    """
    e = estimate[mask].astype(np.float64)
    r = target[mask].astype(np.float64)
    keep = np.isfinite(e) & np.isfinite(r)
    e, r = e[keep], r[keep]
    if len(e) < 2:
        raise ValueError("align_depth: fewer than two covered pixels")
    for round_ in range(rounds + 1):
        design = np.stack([e, np.ones_like(e)], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, r, rcond=None)
        if round_ == rounds or len(e) < 10:
            break
        residual = np.abs(a * e + b - r)
        cut = np.quantile(residual, 1.0 - trim)
        e, r = e[residual <= cut], r[residual <= cut]
    if not (np.isfinite(a) and a > 1e-6):
        a, b = float(np.median(r / np.maximum(e, 1e-9))), 0.0
    return float(a), float(b), int(len(e))


def _voxel_keys(positions: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One exact key per (level, cell): level = floor(log2(size / base)), cell edge = base * 2^level."""
    level = np.floor(np.log2(np.maximum(sizes.astype(np.float64), _VOXEL_BASE) / _VOXEL_BASE)).astype(np.int64)
    cells = np.floor(positions.astype(np.float64) / (_VOXEL_BASE * np.exp2(level))[:, None]).astype(np.int64)
    keys = np.ascontiguousarray(np.concatenate([level[:, None], cells], axis=1))
    return keys.view(np.dtype((np.void, keys.dtype.itemsize * 4))).reshape(-1)


@dataclass
class WorldMemory:
    """The cloud plus which clips (by state sha256) it has fused."""

    cloud: PointCloud
    fused: list[str] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)

    # ----------------------------------------------------------------------------------------------
    def fuse_frame(self, frame: np.ndarray, estimate: np.ndarray, w2c: np.ndarray, intrinsics: Intrinsics,
                   settings: MemorySettings, device=None) -> dict:
        """Fuse one generated frame (H, W, 3) uint8 with its estimated depth (H, W); returns statistics."""
        from .render import render_view

        started = time.perf_counter()
        view = render_view(self.cloud, w2c, intrinsics, device)
        covered = view.covered
        stats = {"points_before": len(self.cloud), "covered": float(covered.mean())}
        if covered.mean() < settings.min_covered_fraction:
            stats.update(skipped="too few pixels covered by the memory to align the depth", added=0)
            return stats
        scale, shift, used = align_depth(estimate, view.depth, covered)
        aligned = scale * estimate + shift
        new = (~covered) | (aligned < view.depth * (1.0 - settings.front_tolerance))
        new &= aligned > NEAR
        stats.update(scale=scale, shift=shift, aligned_pixels=used, new_pixels=int(new.sum()))
        if new.any():
            added = cloud_from_depth(frame, aligned.astype(np.float32), intrinsics, w2c, mask=new)
            stats["added"] = self._add(added)
        else:
            stats["added"] = 0
        if len(self.cloud) > settings.max_points:
            stats["thinned_from"] = len(self.cloud)
            self._thin(settings.max_points)
        stats.update(points=len(self.cloud), seconds=round(time.perf_counter() - started, 3))
        return stats

    def _add(self, added: PointCloud) -> int:
        """Append the points of ``added`` whose voxel no point of the memory (or an earlier new point) holds."""
        existing = _voxel_keys(self.cloud.positions, self.cloud.sizes)
        candidates = _voxel_keys(added.positions, added.sizes)
        _, inverse = np.unique(np.concatenate([existing, candidates]), return_inverse=True)
        occupied = np.zeros(inverse.max() + 1, dtype=bool)
        occupied[inverse[:len(existing)]] = True
        new_inverse = inverse[len(existing):]
        free = np.flatnonzero(~occupied[new_inverse])
        _, first = np.unique(new_inverse[free], return_index=True)
        keep = np.sort(free[first])
        self.cloud = self.cloud.concat(added.subset(keep))
        return int(len(keep))

    def _thin(self, max_points: int) -> None:
        """Thin the cloud on a uniform grid, doubling the cell until at most ``max_points`` remain (oldest first)."""
        edge = float(np.median(self.cloud.sizes)) * 2.0
        while True:
            cells = np.floor(self.cloud.positions.astype(np.float64) / edge).astype(np.int64)
            keys = np.ascontiguousarray(cells).view(np.dtype((np.void, 24))).reshape(-1)
            _, first = np.unique(keys, return_index=True)
            if len(first) <= max_points:
                break
            edge *= 2.0
        keep = np.sort(first)
        thinned = self.cloud.subset(keep)
        thinned.sizes = np.maximum(thinned.sizes, np.float32(edge))
        self.cloud = thinned

    # ----------------------------------------------------------------------------------------------
    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write the memory atomically (.npz: positions, colors, sizes and a JSON header)."""
        header = json.dumps({"fused": self.fused, "stats": self.stats, **(meta or {})})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, positions=self.cloud.positions, colors=self.cloud.colors, sizes=self.cloud.sizes,
                         header=np.frombuffer(header.encode("utf-8"), dtype=np.uint8))

    @classmethod
    def load(cls, path: str | Path) -> tuple["WorldMemory", dict]:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            cloud = PointCloud(data["positions"], data["colors"], data["sizes"])
        return cls(cloud, list(header.pop("fused")), list(header.pop("stats", []))), header


def write_ply(path: str | Path, cloud: PointCloud) -> Path:
    """The cloud as a binary little-endian PLY (x y z float, red green blue uchar), atomically."""
    vertex = np.empty(len(cloud), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                         ("blue", "u1")])
    for k, axis in enumerate("xyz"):
        vertex[axis] = cloud.positions[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = cloud.colors[:, k]
    header = ("ply\nformat binary_little_endian 1.0\n"
              "comment longvie.camera --explore memory (OpenCV axes: x right, y down, z forward)\n"
              f"element vertex {len(cloud)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header.encode("ascii"))
            handle.write(vertex.tobytes())
    return Path(path)


def read_ply(path: str | Path) -> PointCloud:
    """Read a PLY written by :func:`write_ply` (sizes are not stored: zeros)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    vertex = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                              ("green", "u1"), ("blue", "u1")], count=count)
    positions = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    return PointCloud(positions, colors, np.zeros(count, dtype=np.float32))
