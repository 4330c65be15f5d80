"""Camera adherence: the path recovered from a video rendered along a known camera path (the synthetic
scene's ray caster, independent of the camera module's renderer) matches that path, and a video of
another path is flagged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from longvie.camera.geometry import Intrinsics
from longvie.camera.paths import look_at, preset_path, rotation_angle_deg
from longvie.eval.camera_adherence import (
    ROTATION_BOUND_DEG,
    TRANSLATION_BOUND_DEG,
    camera_adherence,
    relative_pose_from_points,
)

H, W, FRAMES, CLIPS = 96, 160, 9, 2
TOTAL = CLIPS * (FRAMES - 1) + 1
TIMES = np.arange(TOTAL) / 16.0
PIVOT = 6.0


@pytest.fixture(scope="module")
def scene():
    from longvie.examples.synthetic import camera_at, make_scene

    start = camera_at(0.0, H, W)
    rotation = np.stack([start.right, -start.up, start.forward])  # OpenCV axes of the scene's first camera
    first = np.eye(4)
    first[:3, :3], first[:3, 3] = rotation, -rotation @ start.position
    return make_scene(2), first, start.focal


def render_along(scene, name: str) -> tuple[np.ndarray, dict]:
    """Frames of the synthetic scene along preset ``name`` (relative to the scene's first camera), and the
    camera.json the camera module would write for that path."""
    from longvie.examples.synthetic import Camera, render

    world, first, focal = scene
    path = preset_path(name, TIMES, speed=2.0, angle_rate=20.0, pivot_depth=PIVOT)
    frames = []
    for relative in path.w2c:
        w2c = relative @ first
        rotation = w2c[:3, :3]
        frames.append(render(world, Camera(-rotation.T @ w2c[:3, 3], rotation[0], -rotation[1], rotation[2], focal, H,
                                           W))[0])
    return np.stack(frames), camera_json(path, focal)


def camera_json(path, focal) -> dict:
    intrinsics = Intrinsics(focal, focal, (W - 1) / 2, (H - 1) / 2, W, H)
    ranges = [[i * (FRAMES - 1), i * (FRAMES - 1) + FRAMES] for i in range(CLIPS)]
    return {"intrinsics": intrinsics.as_dict(), "frames_w2c": path.w2c.tolist(), "clip_ranges": ranges,
            "scene_depth_median": PIVOT}


@pytest.fixture(scope="module")
def orbit_video(scene):
    return render_along(scene, "orbit_left")


def test_recovers_the_requested_path(orbit_video):
    frames, camera = orbit_video
    result = camera_adherence(frames, camera)
    video = result["video"]
    assert video["follows_path"] and video["clips_flagged"] == []
    assert video["rotation_error_deg"] < ROTATION_BOUND_DEG  # 20 degrees of orbit per second, errors of ~2
    assert video["translation_direction_error_deg"] < TRANSLATION_BOUND_DEG
    for clip in result["per_clip"]:
        assert clip["pairs"] == 2 and clip["pairs_failed"] == 0 and clip["follows_path"]
    # the recovered path (directions from the video, lengths from the request) ends near the requested one
    requested, recovered = np.asarray(result["paths"]["requested"]), np.asarray(result["paths"]["recovered"])
    assert result["paths"]["recovered_frames"][-1] == TOTAL - 1
    travelled = np.linalg.norm(requested[-1] - requested[0])
    assert np.linalg.norm(recovered[-1] - requested[-1]) < 0.35 * travelled


@pytest.mark.parametrize("other", ["orbit_right", "pan_left", "dolly_in"])
def test_flags_a_video_of_another_path(orbit_video, scene, other):
    frames, _ = orbit_video
    wrong = camera_json(preset_path(other, TIMES, speed=2.0, angle_rate=20.0, pivot_depth=PIVOT), scene[2])
    video = camera_adherence(frames, wrong)["video"]
    assert not video["follows_path"] and video["clips_flagged"] == [0, 1]


def test_pure_rotation_has_no_translation_to_score(scene):
    frames, camera = render_along(scene, "pan_left")
    result = camera_adherence(frames, camera)
    assert result["video"]["follows_path"]
    assert result["video"]["rotation_error_deg"] < 1.0
    assert result["video"]["translation_direction_error_deg"] is None  # a pan has no baseline


def test_relative_pose_from_exact_points():
    """Noise-free projections of random 3D points give the exact relative pose (essential matrix)."""
    rng = np.random.default_rng(0)
    intrinsics = Intrinsics.from_fov(60.0, W, H)
    matrix = intrinsics.matrix()
    points = np.c_[rng.uniform(-3, 3, (80, 2)), rng.uniform(4, 12, 80)]
    second = look_at([0.8, -0.2, 0.5], [0.3, 0.0, 8.0])

    def project(w2c):
        camera = points @ w2c[:3, :3].T + w2c[:3, 3]
        return (camera @ matrix.T)[:, :2] / camera[:, 2:]

    estimate = relative_pose_from_points(project(np.eye(4)), project(second), matrix)
    assert estimate["model"] == "essential"
    assert rotation_angle_deg(estimate["R"] @ second[:3, :3].T) < 0.05
    direction = second[:3, 3] / np.linalg.norm(second[:3, 3])
    assert np.degrees(np.arccos(np.clip(estimate["t"] @ direction, -1, 1))) < 0.5
    rotation_only = look_at([0, 0, 0], [2.0, 0.5, 8.0])
    estimate = relative_pose_from_points(project(np.eye(4)), project(rotation_only), matrix)
    assert estimate["model"] == "rotation" and estimate["t"] is None
    assert rotation_angle_deg(estimate["R"] @ rotation_only[:3, :3].T) < 0.05


def test_report_section_finds_camera_json_and_writes_the_plot(orbit_video, tmp_path):
    """The section of python -m longvie.eval: found through the video's cond.json folder (or its run's
    recorded control videos), a plot in the report folder, markdown and a console summary."""
    from longvie.eval import camera_adherence as section
    from longvie.eval.inputs import GeneratedVideo
    from longvie.eval.sections import SECTION_MODULES, SectionContext

    assert "longvie.eval.camera_adherence" in SECTION_MODULES
    frames, camera = orbit_video
    folder = tmp_path / "camera_folder"
    folder.mkdir()
    (folder / "camera.json").write_text(json.dumps(camera))
    video = GeneratedVideo(frames, "video.mp4", cond_path=folder / "cond.json")
    value = section.compute(SectionContext(video=video, reference=None, ranges=[], fps=16.0, settings=None,
                                           out_dir=tmp_path / "report"))
    assert value["video"]["follows_path"] and (tmp_path / "report" / value["plot"]).is_file()
    text = section.markdown(value)
    assert text.startswith("## Camera adherence") and "camera_paths.png" in text and "| 1 | 8-16 |" in text
    assert "follows the path" in section.summary(value)
    by_run = GeneratedVideo(frames, "run", depth_videos=[folder / "depth_00.mp4"])
    assert section.compute(SectionContext(video=by_run, reference=None, ranges=[], fps=16.0, settings=None)) is not None
    elsewhere = GeneratedVideo(frames, "video.mp4", cond_path=tmp_path / "cond.json")
    assert section.compute(SectionContext(video=elsewhere, reference=None, ranges=[], fps=16.0, settings=None)) is None
