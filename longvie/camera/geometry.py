"""Geometry from one photo: intrinsics, depth maps from files, and the coloured point cloud.

Pixel convention of the whole project: (0, 0) is the centre of the top-left pixel, so a centred
principal point is ((W - 1) / 2, (H - 1) / 2). Unprojection and projection go through kornia's camera
geometry (``depth_to_3d_v2``, ``transform_points``, ``project_points``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import LongVieError

__all__ = ["DEFAULT_FOV_DEG", "DEPTH_SUFFIXES", "CameraInputError", "Intrinsics", "parse_intrinsics", "fit_photo",
           "read_depth_file", "fit_depth", "PointCloud", "cloud_from_depth", "to_camera", "project"]

DEFAULT_FOV_DEG = 60.0  # horizontal field of view when neither --fov nor --intrinsics is given
DEPTH_SUFFIXES = (".npy", ".npz", ".png")
PNG_DEPTH_SCALE = 0.001  # a 16-bit PNG holds millimetres (the common convention), unless --depth-scale says otherwise
NEAR = 1e-3  # points closer than this (scene units) to a camera's image plane are treated as behind it


class CameraInputError(LongVieError, ValueError):
    """An input of the camera command (photo, depth map, intrinsics, settings) cannot be used."""


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera for a ``width`` x ``height`` image, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int) -> "Intrinsics":
        """Square pixels, centred principal point, ``fov_deg`` the horizontal field of view."""
        if not (math.isfinite(fov_deg) and 1.0 <= fov_deg <= 179.0):
            raise CameraInputError(f"--fov {fov_deg}: must be a horizontal field of view in degrees between 1 and 179")
        focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return cls(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_normalised(cls, values, width: int, height: int) -> "Intrinsics":
        """From RealEstate10K's (fx/W, fy/H, cx/W, cy/H) (image-edge coordinates, cx/W = 0.5 is centred)."""
        fx, fy, cx, cy = (float(v) for v in values)
        return cls(fx * width, fy * height, cx * width - 0.5, cy * height - 0.5, width, height)

    def normalised(self) -> tuple[float, float, float, float]:
        return (self.fx / self.width, self.fy / self.height, (self.cx + 0.5) / self.width,
                (self.cy + 0.5) / self.height)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def fov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    def resized(self, width: int, height: int) -> "Intrinsics":
        """The same camera after a plain resize (stretch) of the image to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)

    def covered_and_cropped(self, width: int, height: int) -> "Intrinsics":
        """The same camera after :func:`longvie.media.video_io.resize_center_crop` to ``width`` x ``height``
        (scale to cover, PIL's rounding, centred crop)."""
        new_w, new_h, left, top = _cover_crop_geometry(self.width, self.height, width, height)
        scaled = self.resized(new_w, new_h)
        return Intrinsics(scaled.fx, scaled.fy, scaled.cx - left, scaled.cy - top, width, height)

    def as_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}


def _cover_crop_geometry(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, crop left, crop top) of media.video_io's cover-and-crop rule."""
    if (src_w, src_h) == (width, height):
        return width, height, 0, 0
    scale = max(height / src_h, width / src_w)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    return new_w, new_h, (new_w - width) // 2, (new_h - height) // 2


def parse_intrinsics(text: str, width: int, height: int) -> Intrinsics:
    """``--intrinsics "fx,fy,cx,cy"`` in pixels of the photo as given (commas or spaces)."""
    parts = text.replace(",", " ").split()
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise CameraInputError(f"--intrinsics {text!r}: give four numbers fx,fy,cx,cy in pixels of the photo "
                               f"({width}x{height}), e.g. --intrinsics {width * 0.9:.0f},{width * 0.9:.0f},"
                               f"{(width - 1) / 2:g},{(height - 1) / 2:g}")
    fx, fy, cx, cy = values
    if fx <= 0 or fy <= 0:
        raise CameraInputError(f"--intrinsics {text!r}: focal lengths must be positive")
    if not (-width <= cx <= 2 * width and -height <= cy <= 2 * height):
        raise CameraInputError(f"--intrinsics {text!r}: the principal point ({cx:g}, {cy:g}) is far outside the "
                               f"{width}x{height} photo; give pixels of the photo as given")
    return Intrinsics(fx, fy, cx, cy, width, height)


def fit_photo(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """The photo brought to the control size by scaling to cover and centre-cropping (aspect kept)."""
    from ..media.video_io import resize_center_crop

    return np.ascontiguousarray(resize_center_crop(photo, height, width))


# --------------------------------------------------------------------------------------------------
# Depth maps from files
# --------------------------------------------------------------------------------------------------


def read_depth_file(path: str | Path, scale: float | None = None) -> np.ndarray:
    """A depth map (H, W) float32 in scene units (metres) from .npy, .npz or a 16-bit PNG.

    .npy/.npz hold depth as given (``scale`` multiplies it, default 1); a .npz holds one array (or one
    named ``depth``); a 16-bit PNG holds millimetres (``scale`` default 0.001 m per unit).

    Raises:
        CameraInputError: unreadable file, wrong shape, an 8-bit PNG, non-finite or non-positive values.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraInputError(f"--depth {path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise CameraInputError(f"--depth {path}: unsupported file type {suffix!r}; give a .npy, .npz or 16-bit .png "
                               "depth map in metres")
    try:
        if suffix == ".npy":
            depth = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "depth" in names:
                    depth = archive["depth"]
                elif len(names) == 1:
                    depth = archive[names[0]]
                else:
                    raise CameraInputError(f"--depth {path}: holds {len(names)} arrays ({', '.join(names[:5])}); "
                                           "name the depth array 'depth'")
        else:
            from PIL import Image

            with Image.open(path) as image:
                if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise CameraInputError(f"--depth {path}: a {image.mode} PNG; a depth PNG must be 16-bit "
                                           "greyscale (millimetres), e.g. cv2.imwrite(path, "
                                           "(depth_m * 1000).astype('uint16'))")
                depth = np.asarray(image, dtype=np.float64)
            scale = PNG_DEPTH_SCALE if scale is None else scale
    except CameraInputError:
        raise
    except Exception as err:  # numpy / PIL errors of a damaged file
        raise CameraInputError(f"--depth {path}: cannot read it ({err})") from None
    depth = np.asarray(depth)
    if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
        depth = depth.reshape(depth.shape[1:] if depth.shape[0] == 1 else depth.shape[:-1])
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise CameraInputError(f"--depth {path}: expected an (H, W) depth map, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.number) or depth.dtype == bool:
        raise CameraInputError(f"--depth {path}: holds {depth.dtype} values, expected numbers (metres)")
    depth = depth.astype(np.float64) * (1.0 if scale is None else float(scale))
    if not np.isfinite(depth).all():
        raise CameraInputError(f"--depth {path}: holds NaN or infinite values; give finite depths in metres "
                               "(e.g. the far limit of your depth model for the sky)")
    if (depth <= 0).any():
        count = int((depth <= 0).sum())
        raise CameraInputError(f"--depth {path}: {count} pixel(s) have depth <= 0 (min {depth.min():g}); every pixel "
                               "needs a positive depth in metres (fill invalid pixels before passing the map)")
    return depth.astype(np.float32)


def fit_depth(depth: np.ndarray, photo_height: int, photo_width: int, height: int, width: int,
              source: str = "--depth") -> np.ndarray:
    """Bring a depth map of the photo to the control size exactly as the photo was brought to it.

    The map may have another resolution than the photo (it is resampled, nearest neighbour, so that no
    depth between a near and a far surface is invented) but must have its aspect ratio.

    Raises:
        CameraInputError: the aspect ratios differ by more than one pixel of rounding.
    """
    import cv2

    depth_h, depth_w = depth.shape
    if (abs(round(depth_h * photo_width / photo_height) - depth_w) > 1
            and abs(round(depth_w * photo_height / photo_width) - depth_h) > 1):
        raise CameraInputError(
            f"{source}: the depth map is {depth_w}x{depth_h} (aspect {depth_w / depth_h:.3f}) but the photo is "
            f"{photo_width}x{photo_height} (aspect {photo_width / photo_height:.3f}); give the depth of this photo "
            "(any resolution of the same aspect ratio works)")
    new_w, new_h, left, top = _cover_crop_geometry(photo_width, photo_height, width, height)
    # target pixel centre -> photo pixel -> depth pixel (centres at integers in every frame)
    photo_x = (np.arange(width) + left + 0.5) * photo_width / new_w - 0.5
    photo_y = (np.arange(height) + top + 0.5) * photo_height / new_h - 0.5
    map_x = (photo_x + 0.5) * depth_w / photo_width - 0.5
    map_y = (photo_y + 0.5) * depth_h / photo_height - 0.5
    grid_x, grid_y = np.meshgrid(map_x.astype(np.float32), map_y.astype(np.float32))
    return cv2.remap(np.ascontiguousarray(depth, dtype=np.float32), grid_x, grid_y, interpolation=cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------------------------------
# Point cloud
# --------------------------------------------------------------------------------------------------


@dataclass
class PointCloud:
    """Coloured 3D points in world coordinates.

    ``sizes`` is each point's footprint: the width in scene units of the pixel it was seen through
    (depth / focal length at creation), so a point splats to about one pixel from where it was seen
    and grows as the camera comes closer.
    """

    positions: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    sizes: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.positions)

    def concat(self, other: "PointCloud") -> "PointCloud":
        return PointCloud(np.concatenate([self.positions, other.positions]),
                          np.concatenate([self.colors, other.colors]), np.concatenate([self.sizes, other.sizes]))

    def subset(self, keep: np.ndarray) -> "PointCloud":
        return PointCloud(self.positions[keep], self.colors[keep], self.sizes[keep])


def cloud_from_depth(rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, w2c: np.ndarray,
                     mask: np.ndarray | None = None) -> PointCloud:
    """Lift every pixel (or the pixels of ``mask``) of an RGB-D frame seen from ``w2c`` to world points.

    Args:
        rgb: (H, W, 3) uint8; depth: (H, W) positive depth along the optical axis.
    """
    import kornia
    import torch

    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    matrix = torch.from_numpy(intrinsics.matrix().astype(np.float32))
    points = kornia.geometry.depth.depth_to_3d_v2(depth_t[None], matrix[None])[0]  # (H, W, 3) in the camera frame
    c2w = torch.from_numpy(np.linalg.inv(w2c).astype(np.float32))
    select = np.ones(depth.shape, dtype=bool) if mask is None else mask
    flat = points.reshape(-1, 3)[torch.from_numpy(select.reshape(-1))]
    world = kornia.geometry.linalg.transform_points(c2w[None], flat[None])[0]
    sizes = depth[select].astype(np.float32) / np.float32(intrinsics.fx)
    return PointCloud(world.numpy().astype(np.float32), rgb[select].astype(np.uint8), sizes)


def to_camera(points, w2c):
    """World points (N, 3) torch tensor -> camera coordinates (N, 3) under a (4, 4) world-to-camera matrix."""
    import kornia
    import torch

    w2c = torch.as_tensor(w2c, dtype=points.dtype, device=points.device)
    return kornia.geometry.linalg.transform_points(w2c[None], points[None])[0]


def project(camera_points, intrinsics: Intrinsics):
    """Camera-frame points (N, 3) torch tensor in front of the camera (z > 0) -> pixel positions (N, 2)."""
    import kornia
    import torch

    matrix = torch.as_tensor(intrinsics.matrix(), dtype=camera_points.dtype, device=camera_points.device)
    return kornia.geometry.camera.project_points(camera_points, matrix)
