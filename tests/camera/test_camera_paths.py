"""Camera paths: presets, the RealEstate10K / CameraCtrl text format, keyframes (spline + slerp)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from longvie.camera.paths import (
    PRESETS,
    CameraPath,
    CameraPathError,
    camera_centers,
    keyframe_path,
    look_at,
    poses_path,
    preset_path,
    read_realestate10k,
    relative_pose,
    rotation_angle_deg,
    write_realestate10k,
)

TIMES = np.arange(33) / 16.0


def forward_of(w2c: np.ndarray) -> np.ndarray:
    return w2c[:3, :3].T[:, 2]  # the camera's z axis in world coordinates


@pytest.mark.parametrize("name", PRESETS)
def test_presets_start_at_the_photo_and_are_rigid(name):
    path = preset_path(name, TIMES, speed=1.0, angle_rate=10.0, pivot_depth=5.0)
    assert path.w2c.shape == (len(TIMES), 4, 4)
    assert np.allclose(path.w2c[0], np.eye(4), atol=1e-12)  # the photo is taken from the first pose
    rotations = path.w2c[:, :3, :3]
    assert np.allclose(rotations @ np.transpose(rotations, (0, 2, 1)), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rotations), 1.0)


def test_preset_directions_follow_their_names():
    end = {name: preset_path(name, TIMES, 1.0, 10.0, 5.0).w2c[-1] for name in PRESETS}
    centre = {name: camera_centers(pose[None])[0] for name, pose in end.items()}
    seconds = TIMES[-1]
    assert np.allclose(centre["dolly_in"], [0, 0, seconds]) and np.allclose(centre["dolly_out"], [0, 0, -seconds])
    assert np.allclose(centre["crane_up"], [0, -seconds, 0])  # OpenCV: up is -y
    assert centre["walk_forward"][2] == pytest.approx(seconds) and abs(centre["walk_forward"][1]) < 0.05
    # pans and tilts turn in place, by angle_rate * t
    assert forward_of(end["pan_left"])[0] < 0 < forward_of(end["pan_right"])[0]
    assert forward_of(end["tilt_up"])[1] < 0 < forward_of(end["tilt_down"])[1]
    for name in ("pan_left", "pan_right", "tilt_up", "tilt_down"):
        assert np.allclose(centre[name], 0)
        assert rotation_angle_deg(end[name][:3, :3]) == pytest.approx(10.0 * seconds)
    # orbits move sideways on a circle around the pivot and keep looking at it
    pivot = np.array([0.0, 0.0, 5.0])
    assert centre["orbit_left"][0] < 0 < centre["orbit_right"][0]
    for name in ("orbit_left", "orbit_right"):
        path = preset_path(name, TIMES, 1.0, 10.0, 5.0)
        centres = path.centers()
        assert np.allclose(np.linalg.norm(centres - pivot, axis=1), 5.0)
        to_pivot = (pivot - centres) / np.linalg.norm(pivot - centres, axis=1, keepdims=True)
        assert np.allclose([forward_of(p) for p in path.w2c], to_pivot, atol=1e-9)


def test_look_at_axes_and_errors():
    pose = look_at([1, 2, 3], [1, 2, 10])
    assert np.allclose(pose[:3, :3], np.eye(3)) and np.allclose(camera_centers(pose[None])[0], [1, 2, 3])
    with pytest.raises(CameraPathError, match="equals the camera position"):
        look_at([0, 0, 0], [0, 0, 0])
    with pytest.raises(CameraPathError, match="parallel to the up direction"):
        look_at([0, 0, 0], [0, -5, 0])


def test_realestate10k_round_trip(tmp_path):
    path = preset_path("orbit_right", TIMES, 1.0, 12.0, 4.0)
    intrinsics = (0.62, 1.1, 0.5, 0.49)
    file = write_realestate10k(tmp_path / "poses.txt", path, intrinsics, url="https://www.youtube.com/watch?v=x")
    lines = file.read_text().splitlines()
    assert lines[0].startswith("https://") and all(len(line.split()) == 19 for line in lines[1:])
    stamps, read_intrinsics, w2c = read_realestate10k(file)
    assert np.allclose(w2c, path.w2c, atol=1e-9)
    assert np.allclose(read_intrinsics, intrinsics) and np.allclose(stamps, np.round(TIMES * 1e6))
    # resampled by its timestamps at the same fps: the same poses; without a URL line it reads the same
    again = poses_path(file, None, fps=16)
    assert len(again) == len(TIMES) and np.allclose(again.w2c, path.w2c, atol=1e-9)
    (tmp_path / "bare.txt").write_text("\n".join(lines[1:]) + "\n")
    assert np.allclose(read_realestate10k(tmp_path / "bare.txt")[2], w2c)


def test_realestate10k_resampling_by_time(tmp_path):
    """A 30 fps pose file is resampled to 16 fps by its microsecond timestamps (slerp + linear)."""
    times_30 = np.arange(31) / 30.0
    source = preset_path("pan_left", times_30, 1.0, 30.0, 1.0)
    write_realestate10k(tmp_path / "p30.txt", source, (0.5, 0.9, 0.5, 0.5))
    resampled = poses_path(tmp_path / "p30.txt", None, fps=16)
    assert len(resampled) == 17  # 1 s at 16 fps
    expected = preset_path("pan_left", np.arange(17) / 16.0, 1.0, 30.0, 1.0)
    assert np.allclose(resampled.w2c, expected.w2c, atol=1e-6)
    with pytest.raises(CameraPathError, match="covers 17 frames at 16 fps"):
        poses_path(tmp_path / "p30.txt", 25, fps=16)


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1", "line 3: 18 values, expected 19"),
    ("0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 abc", "line 3: 'abc' is not a number"),
    ("0 0.5 0.9 0.5 0.5 0 0 2 0 0 0 0 1 0 0 0 0 1 0", "line 3: the 3x3 part of the matrix is not a rotation"),
    ("0 -0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "line 3: intrinsics"),
    ("0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 nan", "line 3: holds NaN"),
])
def test_malformed_pose_line_is_named_by_number(tmp_path, line, message):
    good = "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"
    file = tmp_path / "poses.txt"
    file.write_text(f"https://example.com/video\n{good}\n{line}\n{good}\n")
    with pytest.raises(CameraPathError, match=message):
        read_realestate10k(file)


def keyframes(tmp_path, keys, up=None):
    file = tmp_path / "keys.json"
    file.write_text(json.dumps({"keyframes": keys, **({"up": up} if up else {})}))
    return file


def test_keyframe_path_passes_through_its_keys(tmp_path):
    keys = [{"time": 0.0, "position": [0, 0, 0], "look_at": [0, 0, 5]},
            {"time": 1.0, "position": [1, -0.5, 2], "look_at": [0, 0, 8]},
            {"time": 1.5, "position": [2, 0, 3], "look_at": [4, 0, 8]},
            {"time": 2.5, "position": [1, 0, 5], "target": [0, 0, 9]}]
    fps = 16
    path = keyframe_path(keyframes(tmp_path, keys), None, fps)
    assert len(path) == int(2.5 * fps) + 1
    for key in keys:
        frame = int(round(key["time"] * fps))
        expected = look_at(key["position"], key.get("look_at", key.get("target")))
        assert np.allclose(path.w2c[frame], expected, atol=1e-9), key
    # smooth: no jumps between frames (positions on a spline, rotations by slerp)
    steps = np.linalg.norm(np.diff(path.centers(), axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps)
    angles = [rotation_angle_deg(relative_pose(a, b)[:3, :3]) for a, b in zip(path.w2c[:-1], path.w2c[1:])]
    assert max(angles) < 5.0
    # beyond the last key the camera holds still
    longer = keyframe_path(keyframes(tmp_path, keys), np.arange(50) / fps, fps)
    assert np.allclose(longer.w2c[-1], longer.w2c[int(2.5 * fps)])


@pytest.mark.parametrize("keys, message", [
    ([{"time": 0, "position": [0, 0, 0], "look_at": [0, 0, 1]}], "1 keyframe\\(s\\); a path needs at least two"),
    ([{"time": 1, "position": [0, 0, 0], "look_at": [0, 0, 1]},
      {"time": 1, "position": [1, 0, 0], "look_at": [0, 0, 1]}],
     "keyframe 1 \\(time 1\\) does not come after keyframe 0"),
    ([{"time": 0, "position": [0, 0, 0], "look_at": [0, 0, 1]},
      {"time": 2, "position": [1, 0], "look_at": [0, 0, 1]}],
     "keyframe 1: \"position\" must be a list of three numbers"),
    ([{"time": 0, "position": [0, 0, 0], "look_at": [0, 0, 1]},
      {"position": [1, 0, 0], "look_at": [0, 0, 1]}], "keyframe 1: \"time\" must be a number"),
])
def test_bad_keyframe_files(tmp_path, keys, message):
    with pytest.raises(CameraPathError, match=message):
        keyframe_path(keyframes(tmp_path, keys), None, 16)


def test_unknown_preset_and_bad_speed():
    with pytest.raises(CameraPathError, match="unknown preset"):
        preset_path("fly_around", TIMES, 1.0)
    with pytest.raises(CameraPathError, match="--speed"):
        preset_path("dolly_in", TIMES, float("nan"))
    assert isinstance(preset_path("static", TIMES, 1.0), CameraPath)
