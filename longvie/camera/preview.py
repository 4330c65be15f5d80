"""Previews of a camera folder: the path seen from above, and the controls side by side.

* ``path_topdown.png``: camera centres on the ground plane (x right, z forward of the first camera),
  view directions as arrows, clip starts as dots, over the point cloud seen from above.
* ``preview.mp4`` / ``preview.png``: per frame, the photo re-projected along the path (what the
  camera sees of the cloud, holes filled), the depth control and the track control, side by side.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..media.atomic import atomic_path
from .paths import CameraPath

__all__ = ["PreviewWriter", "plot_paths_topdown", "write_path_plot", "PANEL_WIDTH"]

PANEL_WIDTH = 320  # preview panels are at most this wide (the controls are full size in their own files)
LABELS = ("photo re-projected", "depth control", "track control")


def _panel_size(height: int, width: int) -> tuple[int, int]:
    if width <= PANEL_WIDTH:
        return height, width
    h = int(round(height * PANEL_WIDTH / width))
    return h + h % 2, PANEL_WIDTH


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if frame.shape[:2] == size:
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class PreviewWriter:
    """Streams the side-by-side preview video and keeps three frames for ``preview.png``."""

    def __init__(self, folder: Path, fps: float, total_frames: int, name: str = "preview", labels=LABELS):
        self.folder, self.fps, self.total, self.name, self.labels = Path(folder), fps, total_frames, name, labels
        self.keep = {0, (total_frames - 1) // 2, total_frames - 1}
        self.kept: dict[int, np.ndarray] = {}
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._writer = None

    def _open(self, size: tuple[int, int]) -> None:
        import imageio_ffmpeg

        tmp = self._stack.enter_context(atomic_path(self.folder / f"{self.name}.mp4"))
        self._writer = imageio_ffmpeg.write_frames(
            str(tmp), (size[1], size[0]), fps=self.fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", "23", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"])
        self._writer.send(None)

    def add(self, colors: np.ndarray, depth: np.ndarray, tracks: np.ndarray, skip_first: bool = False) -> None:
        """Frames of one clip: (T, H, W, 3) uint8 each; ``skip_first`` drops the frame shared with the last clip."""
        size = _panel_size(*colors.shape[1:3])
        for t in range(1 if skip_first else 0, len(colors)):
            row = np.concatenate([_resize(colors[t], size), _resize(depth[t], size), _resize(tracks[t], size)], axis=1)
            if self._writer is None:
                self._open(row.shape[:2])
            self._writer.send(np.ascontiguousarray(row))
            if self.count in self.keep:
                self.kept[self.count] = row
            self.count += 1

    def close(self) -> None:
        """Finish the video and write ``preview.png`` (first, middle and last frame under a header)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._stack.close()
        if self.kept:
            _write_contact_sheet(self.folder / f"{self.name}.png", [self.kept[k] for k in sorted(self.kept)],
                                 [f"frame {k}" for k in sorted(self.kept)], self.labels)


def _write_contact_sheet(path: Path, rows: list[np.ndarray], names: list[str], labels=LABELS) -> None:
    from PIL import Image, ImageDraw

    width = rows[0].shape[1]
    panel = width // 3
    header = 16
    sheet = Image.new("RGB", (width, header + sum(r.shape[0] + header for r in rows)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for k, label in enumerate(labels):
        draw.text((k * panel + 4, 2), label, fill=(235, 235, 235))
    y = header
    for row, name in zip(rows, names):
        draw.text((4, y + 2), name, fill=(200, 200, 200))
        sheet.paste(Image.fromarray(row), (0, y + header))
        y += row.shape[0] + header
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)


def plot_paths_topdown(path: str | Path, paths: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
                       cloud=None, clip_starts: Sequence[int] = (), title: str = "camera path seen from above",
                       max_points: int = 20000) -> Path:
    """Draw camera paths on the ground plane (x right, z forward of the world), atomically as a PNG.

    Args:
        paths: ``(label, centres (T, 3), view directions (T, 3) or None)`` per path.
        cloud: optional :class:`~longvie.camera.geometry.PointCloud` drawn underneath (subsampled).
        clip_starts: frame indices marked with dots on the first path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 5.0), dpi=110)
    # the view: every path, and the bulk of the cloud (not the sky or the horizon, which are far off)
    corners = np.concatenate([c[:, [0, 2]] for _, c, _ in paths if len(c)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    if cloud is not None and len(cloud):
        step = max(1, len(cloud) // max_points)
        points, colors = cloud.positions[::step], cloud.colors[::step]
        ground = points[:, [0, 2]]
        distance = np.linalg.norm(ground - corners[0], axis=1)
        near = ground[distance <= 2.5 * np.median(distance)]
        if len(near):
            low = np.minimum(low, np.percentile(near, 2, axis=0))
            high = np.maximum(high, np.percentile(near, 98, axis=0))
    margin = 0.08 * max(float((high - low).max()), 1e-3)
    low, high = low - margin, high + margin
    if cloud is not None and len(cloud):
        inside = ((points[:, 0] >= low[0]) & (points[:, 0] <= high[0]) & (points[:, 2] >= low[1])
                  & (points[:, 2] <= high[1]))
        ax.scatter(points[inside, 0], points[inside, 2], s=1.0, c=colors[inside] / 255.0, alpha=0.5, linewidths=0,
                   rasterized=True)
    styles = ("-", "--", ":", "-.")
    colors = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
    span = max((float(np.ptp(c[:, [0, 2]], axis=0).max()) for _, c, _ in paths if len(c)), default=1.0) or 1.0
    for k, (label, centers, forwards) in enumerate(paths):
        color = colors[k % len(colors)]
        ax.plot(centers[:, 0], centers[:, 2], styles[k % len(styles)], color=color, lw=1.8, label=label)
        ax.plot(centers[0, 0], centers[0, 2], "o", color=color, ms=6)
        if forwards is not None and len(centers):
            every = max(1, len(centers) // 12)
            length = 0.12 * max(span, 1e-3)
            for c, f in zip(centers[::every], forwards[::every]):
                direction = np.array([f[0], f[2]])
                norm = np.linalg.norm(direction)
                if norm > 1e-9:
                    direction = direction / norm * length
                    ax.annotate("", xy=(c[0] + direction[0], c[2] + direction[1]), xytext=(c[0], c[2]),
                                arrowprops=dict(arrowstyle="->", color=color, lw=1.0))
        if k == 0 and len(clip_starts):
            marks = centers[[i for i in clip_starts if i < len(centers)]]
            ax.plot(marks[:, 0], marks[:, 2], "s", color=color, ms=4, label="clip starts")
    ax.set_xlabel("x (right)")
    ax.set_ylabel("z (forward)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal", adjustable="box")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_path_plot(path: str | Path, camera: CameraPath, cloud=None, clip_ranges=(),
                    title: str | None = None) -> Path:
    """``path_topdown.png`` of a camera folder: the requested path over the cloud."""
    forwards = np.transpose(camera.w2c[:, :3, :3], (0, 2, 1))[:, :, 2]  # camera z axis in world coordinates
    return plot_paths_topdown(path, [("camera path", camera.centers(), forwards)], cloud,
                              [start for start, _ in clip_ranges], title or "camera path seen from above")
