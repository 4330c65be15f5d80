"""longvie.controls.point_tracking and utils.get_track: the weight-free LK tracker and per-clip track videos."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `utils` is a top-level folder of the repository
    sys.path.insert(0, str(REPO))

from longvie.controls.point_tracking import CoTrackerTracker, LucasKanadeTracker, build_tracker  # noqa: E402
from longvie.controls.primitives import grid_points  # noqa: E402

SHIFT = np.array([3.0, 2.0])  # the camera window moves right/down by this many px per frame


def textured_pan(num_frames=10, height=96, width=128, seed=0):
    """A smooth random texture seen through a window that pans by SHIFT px per frame."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((height + 60, width + 60)).astype(np.float32), (0, 0), 2.0)
    texture = (255 * (texture - texture.min()) / (texture.max() - texture.min())).astype(np.uint8)
    frames = []
    for t in range(num_frames):
        x, y = (SHIFT * t).astype(int)
        frames.append(np.repeat(texture[y:y + height, x:x + width, None], 3, axis=-1))
    return np.stack(frames)


def test_lk_recovers_translation_and_drops_points_that_leave():
    frames = textured_pan()
    points = grid_points(96, 128, grid=12)
    tracks, visible = LucasKanadeTracker()(frames, points)
    assert tracks.shape == (10, 144, 2) and visible.shape == (10, 144)
    np.testing.assert_array_equal(tracks[0], points)
    assert visible[0].all()

    truth = points[None] - SHIFT[None, None] * np.arange(10)[:, None, None]
    inside = (truth[..., 0] >= 0) & (truth[..., 1] >= 0)
    error = np.linalg.norm(tracks - truth, axis=-1)
    # LK is exact away from the border; within half a window (10 px) of it the window is cut off
    border = np.minimum.reduce([truth[..., 0], truth[..., 1], 127 - truth[..., 0], 95 - truth[..., 1]])
    interior = visible & (border >= 10)
    assert interior.sum() > 500
    assert error[interior].max() < 0.5
    assert error[visible].max() < 2.0
    assert not visible[~inside].any()  # every point that left the frame is invisible
    # and points that stayed inside are mostly still tracked at the end
    assert visible[-1][inside[-1]].mean() > 0.8


def test_lk_lost_points_stay_lost():
    frames = textured_pan()
    frames[5:] = 0  # the picture disappears: nothing can be tracked any more
    _, visible = LucasKanadeTracker()(frames, grid_points(96, 128, grid=6))
    assert visible[:5].all(axis=0).mean() > 0.5
    assert not visible[6:].any()


def test_cotracker_unreachable_gives_clear_error(monkeypatch):
    import torch

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(RuntimeError, match="--track-backend lk"):
        CoTrackerTracker(device="cpu")
    with pytest.raises(ValueError, match="unknown track backend"):
        build_tracker("spatracker")


def test_cotracker_wrapper_plumbing():
    import torch

    class StillModel(torch.nn.Module):  # stands in for the hub model: every point stays put
        def forward(self, video, queries):
            steps = video.shape[1]
            tracks = queries[:, None, :, 1:].repeat(1, steps, 1, 1)
            return tracks, torch.ones(tracks.shape[:3], dtype=torch.bool)

    frames = textured_pan(num_frames=4)
    points = grid_points(96, 128, grid=3)
    tracks, visible = CoTrackerTracker(device="cpu", model=StillModel())(frames, points)
    assert tracks.shape == (4, 9, 2) and visible.all()
    np.testing.assert_allclose(tracks[3], points)


def test_render_clip_tracks_with_depth_colours():
    from longvie.controls.track_video import render_clip_tracks

    frames = textured_pan(num_frames=5)
    depth = np.zeros((96, 128), dtype=np.uint8)
    depth[:, 64:] = 255  # right half far
    video = render_clip_tracks(frames, LucasKanadeTracker(), grid=8, depth_grey=depth)
    assert video.shape == (5, 96, 128, 3) and video.dtype == np.uint8
    first = video[0].astype(int)
    assert first[..., 2][:, :60].max() == 0  # near points: no blue
    assert first[..., 2][:, 70:].max() == 255  # far points: blue
    assert (video[-1].max(-1) > 0).mean() < (video[0].max(-1) > 0).mean()  # points panned out of view


def test_lk_on_a_real_frame_keeps_points_in_view():
    """ride_horse/first.png panned by whole pixels: snow and sky are low-texture, LK must still hold on."""
    image_path = Path(__file__).resolve().parents[3] / "shared" / "examples" / "ride_horse" / "first.png"
    if not image_path.is_file():
        pytest.skip("shared/examples/ride_horse is not available")
    from longvie.media.video_io import load_image

    image = np.asarray(load_image(image_path))
    steps, height, width = 12, 400, 720
    frames = np.stack([image[2 * t:2 * t + height, 4 * t:4 * t + width] for t in range(steps)])  # content moves (-4, -2)
    points = grid_points(height, width, grid=30)
    tracks, visible = LucasKanadeTracker()(frames, points)
    truth = points[None] - np.array([4.0, 2.0]) * np.arange(steps)[:, None, None]
    border = np.minimum.reduce([truth[..., 0], truth[..., 1], width - 1 - truth[..., 0], height - 1 - truth[..., 1]])
    in_view = border >= 10
    assert visible[-1][in_view[-1]].mean() > 0.9
    error = np.linalg.norm(tracks - truth, axis=-1)
    assert np.median(error[visible & in_view]) < 0.1 and np.percentile(error[visible & in_view], 99) < 1.0
    assert not visible[border < 0].any()
