"""Camera paths: presets, RealEstate10K / CameraCtrl pose files and smooth keyframe paths.

Conventions (those of OpenCV, RealEstate10K and CameraCtrl): camera axes x right, y down, z forward;
a pose is the 4x4 **world-to-camera** matrix ``w2c`` (a world point X is at ``R X + t`` in the
camera); the photo is taken from the path's first pose. Presets and keyframes live in the first
camera's frame: ``[0, 0, 0]`` is where the photo was taken, ``+z`` is straight ahead, ``-y`` is up.
Distances are in the depth map's units (metres for metric depth), times in seconds.

RealEstate10K text format (Zhou et al., "Stereo Magnification", SIGGRAPH 2018; the files CameraCtrl,
arXiv 2404.02101, reads): an optional first line holding the source video's URL, then one line per
frame of 19 numbers::

    timestamp_us  fx fy cx cy  0 0  r11 r12 r13 t1  r21 r22 r23 t2  r31 r32 r33 t3

with the intrinsics divided by the image width (fx, cx) and height (fy, cy), and the 3x4
world-to-camera matrix row by row.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import LongVieError

__all__ = ["PRESETS", "DEFAULT_ANGLE_RATE", "DEFAULT_SPEED_FRACTION", "CameraPathError", "CameraPath",
           "look_at", "camera_centers", "preset_path", "read_realestate10k", "write_realestate10k",
           "poses_path", "read_keyframes", "keyframe_path", "relative_pose", "rotation_angle_deg"]

PRESETS = ("static", "dolly_in", "dolly_out", "pan_left", "pan_right", "tilt_up", "tilt_down", "orbit_left",
           "orbit_right", "crane_up", "walk_forward")
DEFAULT_ANGLE_RATE = 6.0  # degrees per second for pans, tilts and orbits: 30 degrees per 81-frame clip at 16 fps
# Without --speed, translations move this fraction of the scene's median depth per second: a dolly of one
# 81-frame clip (5 s) covers a quarter of the way to the middle of the scene, whatever its scale.
DEFAULT_SPEED_FRACTION = 0.05
WORLD_UP = np.array([0.0, -1.0, 0.0])  # the first camera's up direction (OpenCV: y points down)
# walk_forward: step bounce and sway of a hand-held camera (about 2 cm at 1.4 m/s, 1.8 steps per second)
_WALK_BOB_PER_SPEED, _WALK_STEP_HZ, _WALK_YAW_DEG = 0.015, 1.8, 1.0


class CameraPathError(LongVieError, ValueError):
    """A camera path (preset settings, pose file or keyframe file) cannot be used; the message says why."""


@dataclass
class CameraPath:
    """Per-frame world-to-camera poses at the video's frame times.

    ``intrinsics`` holds the normalised (fx/W, fy/H, cx/W, cy/H) of the first frame when the path came
    from a pose file (None otherwise); ``source`` describes how the path was made (for camera.json).
    """

    w2c: np.ndarray  # (T, 4, 4) float64
    times: np.ndarray  # (T,) seconds
    intrinsics: tuple[float, float, float, float] | None = None
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.w2c)

    def centers(self) -> np.ndarray:
        """(T, 3) camera centres in world coordinates."""
        return camera_centers(self.w2c)


# --------------------------------------------------------------------------------------------------
# Small pose helpers
# --------------------------------------------------------------------------------------------------


def _w2c_from(rotation_c2w: np.ndarray, position: np.ndarray) -> np.ndarray:
    w2c = np.eye(4)
    w2c[:3, :3] = rotation_c2w.T
    w2c[:3, 3] = -rotation_c2w.T @ position
    return w2c


def look_at(position, target, up=WORLD_UP) -> np.ndarray:
    """The world-to-camera matrix of a camera at ``position`` looking at ``target`` (OpenCV axes).

    Raises:
        CameraPathError: ``target == position``, or the view direction is parallel to ``up``.
    """
    position, target, up = (np.asarray(v, dtype=np.float64) for v in (position, target, up))
    forward = target - position
    if np.linalg.norm(forward) < 1e-9:
        raise CameraPathError(f"look-at target {target.tolist()} equals the camera position")
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-6:
        raise CameraPathError(f"the view direction {forward.round(3).tolist()} is parallel to the up direction "
                              f"{up.tolist()}; move the look-at target or give another \"up\"")
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return _w2c_from(np.stack([right, down, forward], axis=1), position)


def camera_centers(w2c: np.ndarray) -> np.ndarray:
    """(T, 3) camera centres -R^T t of (T, 4, 4) world-to-camera matrices."""
    w2c = np.asarray(w2c, dtype=np.float64)
    return -np.einsum("tji,tj->ti", w2c[:, :3, :3], w2c[:, :3, 3])


def relative_pose(w2c_a: np.ndarray, w2c_b: np.ndarray) -> np.ndarray:
    """The 4x4 transform from camera a's coordinates to camera b's: ``w2c_b @ inv(w2c_a)``."""
    return np.asarray(w2c_b) @ np.linalg.inv(np.asarray(w2c_a))


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Geodesic angle of a 3x3 rotation in degrees (arccos((trace - 1) / 2))."""
    cosine = (np.trace(rotation) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _axis_rotation(axis: str, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler(axis, degrees, degrees=True).as_matrix()


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def preset_path(name: str, times: np.ndarray, speed: float, angle_rate: float = DEFAULT_ANGLE_RATE,
                pivot_depth: float = 1.0) -> CameraPath:
    """A named camera move, starting at the identity pose.

    Args:
        name: one of :data:`PRESETS`.
        times: (T,) frame times in seconds (frame i at i / fps).
        speed: translation speed (scene units per second) of dolly, crane and walk moves.
        angle_rate: degrees per second of pans, tilts and orbits.
        pivot_depth: distance of the orbit's pivot straight ahead (the scene's median depth).

    Moves: dolly_in/out along the view axis; pan_left/right turn about the vertical axis; tilt_up/down
    turn about the horizontal axis; orbit_left/right circle the pivot while looking at it (the camera
    moves to its left for orbit_left); crane_up rises straight up; walk_forward moves ahead with a step
    bounce and a slight sway.
    """
    if name not in PRESETS:
        raise CameraPathError(f"--path {name!r}: unknown preset; choose one of {', '.join(PRESETS)}")
    for label, value in (("--speed", speed), ("--angle", angle_rate)):
        if not math.isfinite(value) or value < 0:
            raise CameraPathError(f"{label} {value}: must be a finite number >= 0")
    times = np.asarray(times, dtype=np.float64)
    poses = []
    for t in times:
        position, rotation = np.zeros(3), np.eye(3)  # rotation: camera-to-world
        angle = angle_rate * t
        if name == "dolly_in":
            position = np.array([0.0, 0.0, speed * t])
        elif name == "dolly_out":
            position = np.array([0.0, 0.0, -speed * t])
        elif name in ("pan_left", "pan_right"):  # about the camera's y (down) axis; negative turns left
            rotation = _axis_rotation("y", -angle if name == "pan_left" else angle)
        elif name in ("tilt_up", "tilt_down"):  # about x (right): positive raises the view (towards -y)
            rotation = _axis_rotation("x", angle if name == "tilt_up" else -angle)
        elif name in ("orbit_left", "orbit_right"):
            sign = -1.0 if name == "orbit_left" else 1.0
            a = math.radians(angle)
            pivot = np.array([0.0, 0.0, pivot_depth])
            position = pivot + pivot_depth * np.array([sign * math.sin(a), 0.0, -math.cos(a)])
            poses.append(look_at(position, pivot))
            continue
        elif name == "crane_up":
            position = np.array([0.0, -speed * t, 0.0])
        elif name == "walk_forward":
            bob = _WALK_BOB_PER_SPEED * speed * abs(math.sin(math.pi * _WALK_STEP_HZ * t))
            sway = 0.5 * bob * math.sin(math.pi * _WALK_STEP_HZ * t)
            position = np.array([sway, -bob, speed * t])
            rotation = _axis_rotation("y", _WALK_YAW_DEG * math.sin(math.pi * _WALK_STEP_HZ * t / 2.0))
        poses.append(_w2c_from(rotation, position))
    return CameraPath(np.stack(poses), times, None,
                      {"kind": "preset", "preset": name, "speed": speed, "angle_deg_per_s": angle_rate,
                       "pivot_depth": pivot_depth})


# --------------------------------------------------------------------------------------------------
# RealEstate10K / CameraCtrl pose files
# --------------------------------------------------------------------------------------------------


def read_realestate10k(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a RealEstate10K-format file.

    Returns:
        ``(timestamps_us, intrinsics, w2c)``: (T,) float, (T, 4) normalised fx fy cx cy, (T, 4, 4).

    Raises:
        CameraPathError: unreadable file, or a malformed line (named by its line number and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise CameraPathError(f"--poses {path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CameraPathError(f"--poses {path}: cannot read it as text ({err})") from None
    stamps, intrinsics, poses = [], [], []
    fix = ("each frame line needs 19 numbers: timestamp fx fy cx cy 0 0 and the 3x4 world-to-camera matrix "
           "row by row (RealEstate10K format)")
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        fields = text.split()
        if number == 1 and not _is_number(fields[0]):
            continue  # the source video's URL
        where = f"--poses {path} line {number}"
        if len(fields) != 19:
            raise CameraPathError(f"{where}: {len(fields)} values, expected 19 — {fix}")
        try:
            values = np.array([float(v) for v in fields])
        except ValueError:
            bad = next(v for v in fields if not _is_number(v))
            raise CameraPathError(f"{where}: {bad!r} is not a number — {fix}") from None
        if not np.isfinite(values).all():
            raise CameraPathError(f"{where}: holds NaN or infinite values — {fix}")
        if (values[1:5] <= 0).any() or values[1] > 10 or values[2] > 10:
            raise CameraPathError(f"{where}: intrinsics {values[1:5].tolist()} must be positive and normalised by "
                                  "the image size (fx/W, fy/H, cx/W, cy/H, e.g. 0.5 0.9 0.5 0.5)")
        pose = np.eye(4)
        pose[:3] = values[7:].reshape(3, 4)
        rotation = pose[:3, :3]
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0:
            raise CameraPathError(f"{where}: the 3x3 part of the matrix is not a rotation (R R^T != I or det < 0) — "
                                  "write a world-to-camera rotation and translation row by row")
        stamps.append(values[0])
        intrinsics.append(values[1:5])
        poses.append(pose)
    if len(poses) < 1:
        raise CameraPathError(f"--poses {path}: no frame lines — {fix}")
    return np.array(stamps), np.array(intrinsics), np.stack(poses)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_realestate10k(path: str | Path, path_or_poses: CameraPath, intrinsics_normalised, url: str = "") -> Path:
    """Write poses in the RealEstate10K format (atomically); timestamps are the frame times in microseconds."""
    from ..media.atomic import atomic_write_text

    fx, fy, cx, cy = (float(v) for v in intrinsics_normalised)
    lines = [url or "https://github.com/Vchitect/LongVie (longvie.camera)"]
    for time_s, pose in zip(path_or_poses.times, path_or_poses.w2c):
        numbers = [f"{int(round(time_s * 1e6))}", *(f"{v:.9g}" for v in (fx, fy, cx, cy)), "0", "0",
                   *(f"{v:.12g}" for v in pose[:3].reshape(-1))]
        lines.append(" ".join(numbers))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def _slerp_poses(times_in: np.ndarray, w2c_in: np.ndarray, times_out: np.ndarray) -> np.ndarray:
    """Poses at ``times_out``: rotations by quaternion slerp, positions linearly (clamped to the ends)."""
    from scipy.spatial.transform import Rotation, Slerp

    clamped = np.clip(times_out, times_in[0], times_in[-1])
    c2w_rot = np.transpose(w2c_in[:, :3, :3], (0, 2, 1))
    centers = camera_centers(w2c_in)
    if len(times_in) == 1:
        return np.repeat(w2c_in[:1], len(times_out), axis=0)
    rotations = Slerp(times_in, Rotation.from_matrix(c2w_rot))(clamped).as_matrix()
    positions = np.stack([np.interp(clamped, times_in, centers[:, k]) for k in range(3)], axis=1)
    return np.stack([_w2c_from(r, p) for r, p in zip(rotations, positions)])


def poses_path(path: str | Path, num_frames: int | None, fps: float, scale: float = 1.0) -> CameraPath:
    """A :class:`CameraPath` from a RealEstate10K-format file, at the video's frame rate.

    With strictly increasing timestamps (microseconds, as RealEstate10K) the poses are resampled to
    ``fps`` by time (slerp for rotations, linear for positions); otherwise consecutive lines are
    consecutive frames. ``scale`` multiplies the translations (pose files from SLAM have no metric
    scale). ``num_frames`` None: as many frames as the file covers.

    Raises:
        CameraPathError: a malformed file, or fewer frames than ``num_frames``.
    """
    stamps, intrinsics, w2c = read_realestate10k(path)
    w2c = w2c.copy()
    w2c[:, :3, 3] *= scale
    timed = len(stamps) > 1 and bool(np.all(np.diff(stamps) > 0))
    if timed:
        seconds = (stamps - stamps[0]) / 1e6
        available = int(math.floor(seconds[-1] * fps + 1e-6)) + 1
    else:
        available = len(w2c)
    if num_frames is None:
        num_frames = available
    if num_frames > available:
        span = f"{seconds[-1]:.2f} s" if timed else f"{len(w2c)} lines"
        raise CameraPathError(f"--poses {path}: covers {available} frames at {fps:g} fps ({span}), the video needs "
                              f"{num_frames} — lower --clips/--seconds or give a longer pose file")
    times = np.arange(num_frames) / fps
    poses = _slerp_poses(seconds, w2c, times) if timed else w2c[:num_frames]
    return CameraPath(poses, times, tuple(float(v) for v in intrinsics[0]),
                      {"kind": "poses", "file": str(path), "timing": "timestamps" if timed else "one line per frame",
                       "scale": scale})


# --------------------------------------------------------------------------------------------------
# Keyframes
# --------------------------------------------------------------------------------------------------


def read_keyframes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a keyframe file.

    Format (JSON)::

        {"up": [0, -1, 0],                       # optional; the first camera's up direction
         "keyframes": [{"time": 0.0, "position": [0, 0, 0], "look_at": [0, 0, 5]},
                       {"time": 4.0, "position": [1, 0, 2], "look_at": [0, 0, 6]}, ...]}

    (a bare list of keyframes works too). Times in seconds, strictly increasing; positions and look-at
    targets in the first camera's frame (x right, y down, z forward).

    Returns:
        ``(times, positions, targets, up)``.

    Raises:
        CameraPathError: unreadable JSON, fewer than two keys, missing or malformed fields,
            non-increasing times.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraPathError(f"--keyframes {path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CameraPathError(f"--keyframes {path}: not valid JSON ({err})") from None
    example = '{"keyframes": [{"time": 0, "position": [0, 0, 0], "look_at": [0, 0, 5]}, ...]}'
    keys = data.get("keyframes") if isinstance(data, dict) else data
    up = data.get("up", WORLD_UP.tolist()) if isinstance(data, dict) else WORLD_UP.tolist()
    if not isinstance(keys, list):
        raise CameraPathError(f"--keyframes {path}: expected a list of keyframes, e.g. {example}")
    if len(keys) < 2:
        raise CameraPathError(f"--keyframes {path}: {len(keys)} keyframe(s); a path needs at least two — "
                              f"e.g. {example}")
    times, positions, targets = [], [], []
    for number, key in enumerate(keys):
        where = f"--keyframes {path} keyframe {number}"
        if not isinstance(key, dict):
            raise CameraPathError(f"{where}: must be an object like {{\"time\": 0, \"position\": [0, 0, 0], "
                                  "\"look_at\": [0, 0, 5]}")
        target = key.get("look_at", key.get("target"))
        time = key.get("time")
        if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
            raise CameraPathError(f"{where}: \"time\" must be a number of seconds, got {time!r}")
        for name, value in (("position", key.get("position")), ("look_at", target)):
            if (not isinstance(value, list) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in value)):
                raise CameraPathError(f"{where}: \"{name}\" must be a list of three numbers, got {value!r}")
        times.append(float(time))
        positions.append(key["position"])
        targets.append(target)
    times = np.array(times)
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        i = int(bad[0])
        raise CameraPathError(f"--keyframes {path}: times must increase strictly; keyframe {i + 1} (time "
                              f"{times[i + 1]:g}) does not come after keyframe {i} (time {times[i]:g})")
    if not (isinstance(up, list) and len(up) == 3 and np.linalg.norm(np.asarray(up, dtype=float)) > 0):
        raise CameraPathError(f"--keyframes {path}: \"up\" must be a non-zero list of three numbers, got {up!r}")
    return times, np.asarray(positions, dtype=np.float64), np.asarray(targets, dtype=np.float64), np.asarray(up, float)


def keyframe_path(path: str | Path, times: np.ndarray | None, fps: float) -> CameraPath:
    """A smooth path through the keyframes of ``path``: positions on a natural cubic spline through the
    key positions (straight between two keys), rotations by quaternion slerp between the key rotations.
    Before the first key and after the last the camera holds still. ``times`` None: from 0 to the last key.
    """
    from scipy.interpolate import CubicSpline
    from scipy.spatial.transform import Rotation, Slerp

    key_times, positions, targets, up = read_keyframes(path)
    try:
        key_poses = np.stack([look_at(p, t, up) for p, t in zip(positions, targets)])
    except CameraPathError as err:
        raise CameraPathError(f"--keyframes {path}: {err}") from None
    if times is None:
        times = np.arange(int(math.floor(key_times[-1] * fps + 1e-6)) + 1) / fps
    clamped = np.clip(times, key_times[0], key_times[-1])
    spline = CubicSpline(key_times, positions, axis=0, bc_type="natural")
    rotations = Slerp(key_times, Rotation.from_matrix(np.transpose(key_poses[:, :3, :3], (0, 2, 1))))(clamped)
    poses = np.stack([_w2c_from(r, p) for r, p in zip(rotations.as_matrix(), spline(clamped))])
    return CameraPath(poses, np.asarray(times, dtype=np.float64), None,
                      {"kind": "keyframes", "file": str(path), "keys": len(key_times)})
