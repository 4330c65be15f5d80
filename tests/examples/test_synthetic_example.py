"""The generated example (longvie.examples.synthetic): geometry, files, SPEC §5 conventions (CPU)."""

import json

import numpy as np

from longvie.examples.synthetic import Camera, Scene, main, make_synthetic_example, project, render
from longvie.longvideo.validation import validate_inputs
from longvie.media.video_io import count_frames, load_image, read_video


def straight_camera(height=21, width=31, focal=20.0):
    return Camera(position=np.array([0.0, 1.0, 0.0]), right=np.array([1.0, 0.0, 0.0]), up=np.array([0.0, 1.0, 0.0]),
                  forward=np.array([0.0, 0.0, 1.0]), focal=focal, height=height, width=width)


def empty_scene(**objects):
    empty3, empty = np.zeros((0, 3)), np.zeros((0,))
    fields = dict(box_min=empty3, box_max=empty3, box_color=empty3, sphere_center=empty3, sphere_radius=empty,
                  sphere_color=empty3)
    fields.update({k: np.asarray(v, dtype=np.float64) for k, v in objects.items()})
    return Scene(**fields)


def test_render_depth_is_exact():
    camera = straight_camera()
    rgb, depth = render(empty_scene(), camera)
    assert rgb.shape == (21, 31, 3) and rgb.dtype == np.uint8
    assert np.isinf(depth[0]).all()  # sky above the horizon
    # Ground: the hit point of every finite-depth pixel lies on y = 0.
    ys, xs = np.nonzero(np.isfinite(depth))
    rays = camera.pixel_rays(np.stack([xs, ys], axis=-1).astype(np.float64))
    points = camera.position + depth[ys, xs, None] * rays
    assert np.abs(points[:, 1]).max() < 1e-3

    sphere = empty_scene(sphere_center=[[0.0, 1.0, 5.0]], sphere_radius=[1.0], sphere_color=[[1.0, 0.0, 0.0]])
    box = empty_scene(box_min=[[-1.0, 0.0, 3.0]], box_max=[[1.0, 2.0, 4.0]], box_color=[[0.0, 1.0, 0.0]])
    assert abs(render(sphere, camera)[1][10, 15] - 4.0) < 1e-4  # depth along the axis to the surface
    assert abs(render(box, camera)[1][10, 15] - 3.0) < 1e-4


def test_projection_inverts_pixel_rays():
    camera = straight_camera(48, 64, 40.0)
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [63, 47], size=(50, 2))
    depth = rng.uniform(0.5, 30.0, size=50)
    world = camera.position + depth[:, None] * camera.pixel_rays(xy)
    projected, projected_depth = project(world, camera)
    assert np.allclose(projected, xy, atol=1e-6) and np.allclose(projected_depth, depth)


def test_example_files_follow_the_spec(tmp_path):
    cond = make_synthetic_example(tmp_path, clips=2, height=32, width=48, frames_per_clip=9)
    entries = json.loads(cond.read_text())
    assert [e["depth"] for e in entries] == ["depth_00.mp4", "depth_01.mp4"]
    assert all(e["text"] for e in entries) and entries[0]["text"] != entries[1]["text"]
    assert load_image(tmp_path / "first.png").size == (48, 32)
    assert count_frames(tmp_path / "reference.mp4") == 17  # 2 clips sharing one frame

    inputs = validate_inputs(tmp_path / "first.png", cond, num_frames=9, height=32, width=48)
    assert inputs.notes == [] and len(inputs.clips) == 2

    depth0, depth1 = read_video(tmp_path / "depth_00.mp4"), read_video(tmp_path / "depth_01.mp4")
    assert depth0.shape == depth1.shape == (9, 32, 48, 3)
    assert np.abs(depth0[..., 0].astype(int) - depth0[..., 2]).max() <= 4  # grey
    # Global normalisation: clip 1's first frame is clip 0's last frame, with the same grey levels.
    assert np.abs(depth0[-1].astype(int) - depth1[0]).mean() < 3
    # Near = dark, far (sky) = bright.
    assert depth0[0, -1].mean() < depth0[0, 0].mean() and depth0[0, 0].mean() > 240

    tracks = read_video(tmp_path / "track_00.mp4")
    lit = tracks.max(-1) > 40
    assert lit.any(axis=(1, 2)).all()  # points drawn in every frame
    assert lit.mean() < 0.7  # on black


def test_generation_is_deterministic_and_cli(tmp_path, capsys):
    make_synthetic_example(tmp_path / "a", clips=1, height=16, width=32, frames_per_clip=5)
    assert main([str(tmp_path / "b"), "--clips", "1", "--height", "16", "--width", "32", "--frames-per-clip", "5"]) == 0
    assert "cond.json" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["cond.json", "depth_00.mp4", "first.png", "reference.mp4", "track_00.mp4"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
