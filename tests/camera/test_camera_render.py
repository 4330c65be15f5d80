"""Rendering on analytic scenes: planes, projections, occlusion, hole filling, and the static camera
against the extraction pipeline run on a still video of the same image."""
from __future__ import annotations

import numpy as np
import pytest

from longvie.camera.geometry import Intrinsics, PointCloud, cloud_from_depth
from longvie.camera.paths import look_at, preset_path
from longvie.camera.render import (
    clip_tracks,
    depth_to_disparity,
    normalise_path_depth,
    render_path_depth,
    render_view,
)
from longvie.controls.primitives import normalize_depth

H, W = 48, 80
K = Intrinsics.from_fov(60.0, W, H)
RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
PLANE_TOLERANCE = 1e-4  # metres: the splatted depth of a plane is exact up to float32 rounding


def pose(translation=(0.0, 0.0, 0.0), yaw_deg=0.0) -> np.ndarray:
    """World-to-camera of a camera at ``translation`` turned by ``yaw_deg`` (positive: to the right)."""
    from scipy.spatial.transform import Rotation

    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    c2w[:3, 3] = translation
    return np.linalg.inv(c2w)


def analytic_projection(world: np.ndarray, w2c: np.ndarray, k: Intrinsics = K) -> tuple[np.ndarray, np.ndarray]:
    camera = world @ w2c[:3, :3].T + w2c[:3, 3]
    pixels = np.stack([k.fx * camera[:, 0] / camera[:, 2] + k.cx, k.fy * camera[:, 1] / camera[:, 2] + k.cy], 1)
    return pixels, camera[:, 2]


def test_identity_view_renders_the_depth_map_and_photo_unchanged():
    depth = RNG.uniform(1.0, 30.0, (H, W)).astype(np.float32)
    view, colors = render_view(cloud_from_depth(PHOTO, depth, K, np.eye(4)), np.eye(4), K, with_colors=True)
    assert view.covered.all() and np.array_equal(view.depth, depth) and np.array_equal(colors, PHOTO)


@pytest.mark.parametrize("translation", [(0.0, 0.0, 1.0), (0.3, -0.2, 1.5), (0.0, 0.0, -2.0)])
def test_fronto_parallel_plane_from_a_known_translation(translation):
    """A plane z = 4 seen from a translated camera has depth 4 - tz wherever a point lands."""
    cloud = cloud_from_depth(PHOTO, np.full((H, W), 4.0, np.float32), K, np.eye(4))
    view = render_view(cloud, pose(translation), K)
    expected = 4.0 - translation[2]
    assert np.abs(view.depth[view.covered] - expected).max() < PLANE_TOLERANCE
    if translation[2] > 0 and translation[:2] == (0.0, 0.0):
        assert view.covered.all()  # moving closer: footprints grow, no cracks
    # pixels the photo never saw are filled, not left empty
    assert np.isfinite(view.depth).all()


def test_plane_seen_from_a_turned_camera():
    """The same plane after a 10 degree pan: depth along the optical axis is 4 / d_z of each pixel's ray
    (within 1 %: the splat of the nearest point stands for the pixel centre)."""
    cloud = cloud_from_depth(PHOTO, np.full((H, W), 4.0, np.float32), K, np.eye(4))
    w2c = pose(yaw_deg=10.0)
    view = render_view(cloud, w2c, K)
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u, dtype=float)], -1)
    world_rays = rays @ np.linalg.inv(w2c)[:3, :3].T
    expected = 4.0 / world_rays[..., 2]
    relative = np.abs(view.depth - expected) / expected
    assert view.covered.mean() > 0.7 and relative[view.covered].max() < 0.01


def test_track_lands_on_its_analytic_projection():
    depth = np.full((H, W), 6.0, np.float32)
    path = preset_path("orbit_left", np.arange(9) / 16.0, speed=0.0, angle_rate=40.0, pivot_depth=6.0)
    rendered = render_path_depth(cloud_from_depth(PHOTO, depth, K, np.eye(4)), path.w2c, K)
    points, tracks, visible = clip_tracks(rendered[0], path.w2c, rendered, K, grid=7)
    world = np.stack([(points[:, 0] - K.cx) / K.fx * 6.0, (points[:, 1] - K.cy) / K.fy * 6.0,
                      np.full(len(points), 6.0)], 1)
    for t, w2c in enumerate(path.w2c):
        expected, _ = analytic_projection(world, w2c)
        assert np.abs(tracks[t] - expected).max() < 1e-3, t
    assert np.array_equal(tracks[0], points)  # frame 0 is exactly the grid


def box_scene() -> tuple[np.ndarray, tuple[slice, slice]]:
    """A far wall at 10 m with a near box at 2 m in the middle of the view."""
    depth = np.full((H, W), 10.0, np.float32)
    box = (slice(16, 32), slice(36, 48))
    depth[box] = 2.0
    return depth, box


def test_near_box_hides_a_far_point():
    depth, box = box_scene()
    camera = [pose((x, 0.0, 0.0)) for x in np.linspace(0.0, 0.6, 9)]  # moving right: the box slides left fastest
    w2c = np.stack(camera)
    rendered = render_path_depth(cloud_from_depth(PHOTO, depth, K, np.eye(4)), w2c, K)
    points, tracks, visible = clip_tracks(rendered[0], w2c, rendered, K, grid=16)
    # the analytic box outline in the last frame: its corners at 2 m
    corners = np.array([[box[1].start - 0.5, box[0].start - 0.5], [box[1].stop - 0.5, box[0].stop - 0.5]])
    world_corners = np.stack([(corners[:, 0] - K.cx) / K.fx * 2, (corners[:, 1] - K.cy) / K.fy * 2, [2.0, 2.0]], 1)
    (x0, y0), (x1, y1) = analytic_projection(world_corners, w2c[-1])[0]
    start_depth = depth[np.rint(points[:, 1]).astype(int), np.rint(points[:, 0]).astype(int)]
    far = start_depth == 10.0
    x, y = tracks[-1, :, 0], tracks[-1, :, 1]
    inside = (x > x0 + 1) & (x < x1 - 1) & (y > y0 + 1) & (y < y1 - 1)
    hidden = far & inside
    assert hidden.any(), "the scene must move a far point behind the box"
    assert visible[0, hidden].all() and not visible[-1, hidden].any()
    clear = far & ~inside & (np.abs(tracks[-1, :, 1] - (y0 + y1) / 2) > (y1 - y0))  # rows away from the box
    assert visible[-1, clear & (tracks[-1, :, 0] > 0) & (tracks[-1, :, 0] < W - 1)].all()


def test_disocclusion_is_filled_with_the_background():
    """What the near box uncovers when the camera moves is filled with the wall behind it, not with the box."""
    depth, box = box_scene()
    view = render_view(cloud_from_depth(PHOTO, depth, K, np.eye(4)), pose((0.4, 0.0, 0.0)), K)
    revealed = ~view.covered
    revealed[:, :4] = revealed[:, -4:] = False  # leave the frame edges out: only the disocclusion
    assert revealed.sum() > 20
    assert np.allclose(view.depth[revealed], 10.0, rtol=0.02)


def test_path_normalisation_is_the_extraction_normalisation():
    depth = RNG.uniform(1.0, 50.0, (5, H, W)).astype(np.float32)
    grey, bounds = normalise_path_depth(depth)
    assert np.array_equal(grey, normalize_depth(depth_to_disparity(depth)))
    again, same = normalise_path_depth(depth[:2], bounds)  # fixed bounds (--explore) give the same grey
    assert same == bounds and np.array_equal(again, grey[:2])


def test_point_footprint_grows_with_nearness():
    """One point seen from twice as close covers about twice the pixels per side."""
    cloud = PointCloud(np.array([[0.0, 0.0, 8.0]], np.float32), np.full((1, 3), 255, np.uint8),
                       np.array([8.0 / K.fx * 3], np.float32))  # three pixels wide at 8 m
    far = render_view(cloud, np.eye(4), K).covered.sum()
    near = render_view(cloud, look_at([0, 0, 4.0], [0, 0, 8.0]), K).covered.sum()
    assert far >= 4 and near >= 3.5 * far


def test_static_camera_equals_extraction_of_a_still_video(tmp_path):
    """python -m longvie.camera --path static renders exactly what utils/prepare_controls.py extracts from a
    still video of the same image with the same depth (no holes to fill)."""
    import sys

    from longvie.camera.folder import CameraSettings, PathSpec, make_camera_folder
    from longvie.media.video_io import read_video, write_video

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from utils import prepare_controls

    height, width = 64, 112
    scene_depth = np.full((height, width), 12.0, np.float32)
    scene_depth[:, :40] = np.linspace(2.0, 6.0, height, dtype=np.float32)[:, None]  # a slanted near wall
    scene_depth[20:44, 60:90] = 3.5  # a box
    photo = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    np.save(tmp_path / "depth_m.npy", scene_depth)
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "photo.png")
    settings = CameraSettings(frames_per_clip=81, height=height, width=width, clips=1,
                              depth=str(tmp_path / "depth_m.npy"), prompts=("a still photo",))
    camera = make_camera_folder(tmp_path / "photo.png", PathSpec(preset="static"), settings, tmp_path / "camera",
                                log=lambda _: None)

    write_video(tmp_path / "still.mp4", np.repeat(photo[None], 81, axis=0))
    disparity = np.repeat(depth_to_disparity(scene_depth)[None], 81, axis=0)
    np.save(tmp_path / "disparity.npy", disparity)
    assert prepare_controls.main([str(tmp_path / "still.mp4"), str(tmp_path / "extracted"), "--height", str(height),
                                  "--width", str(width), "--depth-npy", str(tmp_path / "disparity.npy")]) == 0
    for kind in ("depth", "track"):
        ours = read_video(camera.out / f"{kind}_00.mp4")
        theirs = read_video(tmp_path / "extracted" / f"{kind}_00.mp4")
        assert ours.shape == theirs.shape == (81, height, width, 3)
        assert np.array_equal(ours, theirs), f"{kind}: max difference {np.abs(ours.astype(int) - theirs).max()}"


def test_intrinsics_and_depth_follow_the_photo_to_the_control_size():
    """The photo is scaled to cover and centre-cropped; the intrinsics and a depth map of another
    resolution follow it exactly (a marked square lands where the transformed camera projects it)."""
    from longvie.camera.geometry import fit_depth, fit_photo

    photo = np.zeros((100, 300, 3), np.uint8)
    photo[45:57, 195:207] = 255  # centred on pixel (200.5, 50.5)
    photo_k = Intrinsics.from_fov(60.0, 300, 100)
    k = photo_k.covered_and_cropped(80, 48)
    ray = np.array([(200.5 - photo_k.cx) / photo_k.fx, (50.5 - photo_k.cy) / photo_k.fy, 1.0]) * 7.0
    (u, v), = analytic_projection(ray[None], np.eye(4), k)[0]
    assert (u, v) == pytest.approx(((200.5 + 0.5) * 0.48 - 0.5 - 32, (50.5 + 0.5) * 0.48 - 0.5))
    fitted = fit_photo(photo, 48, 80).astype(float).mean(-1)
    ys, xs = np.mgrid[0:48, 0:80]
    assert (xs * fitted).sum() / fitted.sum() == pytest.approx(u, abs=0.3)
    assert (ys * fitted).sum() / fitted.sum() == pytest.approx(v, abs=0.3)
    depth = np.full((50, 150), 5.0, np.float32)  # half the photo's resolution
    depth[22:29, 97:104] = 1.0  # the same square (photo pixels 194..207, 44..57)
    near = fit_depth(depth, 100, 300, 48, 80) == 1.0
    assert (xs[near].mean(), ys[near].mean()) == pytest.approx((u, v), abs=0.75)
