"""longvie.controls.primitives: depth normalisation, clip split, point grid, colours and track rendering."""
from pathlib import Path

import numpy as np
import pytest

from longvie.controls.primitives import (
    clip_ranges,
    default_point_size,
    disparity_to_grey,
    grey_to_rgb,
    grid_points,
    normalize_depth,
    render_tracks,
    track_colors,
    usable_frames,
)

RIDE_HORSE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "ride_horse"


# ------------------------------------------------------------------------------------------- depth


def test_normalize_depth_matches_hand_computation():
    # 20 values 0..19 spread over 2 frames: p5 = 0.95, p95 = 18.05 (linear interpolation)
    disparity = np.arange(20, dtype=np.float64).reshape(2, 2, 5)
    p5, p95 = 0.95, 18.05
    expected = np.floor((p95 - np.clip(disparity, p5, p95)) / (p95 - p5) * 255).astype(np.uint8)
    out = normalize_depth(disparity)
    assert out.dtype == np.uint8 and out.shape == disparity.shape
    np.testing.assert_array_equal(out, expected)
    assert out[1, 1, 4] == 0 and out[0, 0, 0] == 255  # near (large disparity) dark, far bright


def test_normalize_depth_is_global_not_per_frame():
    near_frame = np.full((4, 4), 10.0)
    far_frame = np.full((4, 4), 1.0)
    out = normalize_depth(np.stack([near_frame, far_frame]))
    assert (out[0] == 0).all() and (out[1] == 255).all()  # per-frame normalisation would give equal frames


def test_constant_depth_gives_mid_grey_with_warning():
    with pytest.warns(RuntimeWarning, match="no variation"):
        out = normalize_depth(np.full((3, 4, 5), 7.0, dtype=np.float32))
    assert (out == 128).all()
    assert (disparity_to_grey(np.zeros((2, 2)), 1.0, 1.0) == 128).all()


def test_normalize_depth_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        normalize_depth(np.array([[[0.0, np.nan]]]))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        normalize_depth(np.zeros((4, 4)))


def test_grey_to_rgb():
    grey = np.array([[[0, 200]]], dtype=np.uint8)
    np.testing.assert_array_equal(grey_to_rgb(grey)[0, 0, 1], [200, 200, 200])


# ------------------------------------------------------------------------------------------- clips


def test_clip_ranges_are_80i_to_80i_plus_80():
    assert clip_ranges(81) == [(0, 81)]
    assert clip_ranges(161) == [(0, 81), (80, 161)]
    assert clip_ranges(801) == [(80 * i, 80 * i + 81) for i in range(10)]
    for start, end in clip_ranges(801):  # inclusive last frame 80i+80
        assert end - 1 == start + 80


@pytest.mark.parametrize("num_frames, clips, used", [(160, 1, 81), (162, 2, 161), (240, 2, 161), (241, 3, 241)])
def test_remainder_frames_are_dropped(num_frames, clips, used):
    assert len(clip_ranges(num_frames)) == clips
    assert usable_frames(num_frames) == used


def test_too_short_video_raises():
    with pytest.raises(ValueError, match="80 frames are fewer than one clip of 81"):
        clip_ranges(80)


# ------------------------------------------------------------------------------------------- tracks


def test_grid_points_layout():
    points = grid_points(480, 832, grid=50)
    assert points.shape == (2500, 2) and points.dtype == np.float32
    # SpatialTracker margins: 9 px at 576x384 -> 13 px and 11.25 px at 832x480
    np.testing.assert_allclose(points[0], [13.0, 11.25], atol=1e-4)
    np.testing.assert_allclose(points[-1], [832 - 13.0, 480 - 11.25], atol=1e-4)
    assert points[1, 1] == points[0, 1] and points[1, 0] > points[0, 0]  # rows first
    assert len(grid_points(480, 832)) == 50 * 50  # issue 10: upstream's script / released example default
    np.testing.assert_allclose(grid_points(10, 20, 1), [[10.0, 5.0]])


def test_track_colors_by_position_and_depth():
    points = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0], [10.0, 20.0]])
    colors = track_colors(points, 30, 40)
    np.testing.assert_array_equal(colors, [[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 0]])
    depth = np.array([0.0, 0.2, 0.5, 1.0])  # far (1.0) must be the bluest
    blue = track_colors(points, 30, 40, depth)[:, 2]
    assert blue[0] == 0 and blue[3] == 255 and np.all(np.diff(blue.astype(int)) >= 0)


def test_render_tracks_expected_pixels():
    tracks = np.array([[[5.0, 5.0], [20.0, 10.0], [-3.0, 5.0]],
                       [[6.5, 5.0], [20.0, 10.0], [10.0, 10.0]]])
    visible = np.array([[True, False, True], [True, True, True]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    # issue 10: hiding occluded points is now an option (upstream draws them); marks whose centre left
    # the frame are drawn where they overlap it (cv2.rectangle clipping), so point 2 at x = -3 is not.
    frames = render_tracks(tracks, visible, colors, height=16, width=32, point_size=3.0, draw_occluded=False)
    assert frames.shape == (2, 16, 32, 3) and frames.dtype == np.uint8

    expected = np.zeros((2, 16, 32, 3), dtype=np.uint8)
    expected[0, 3:8, 0:1] = [0, 0, 255]       # point 2 at x -3 +- 3 -> columns -6..0, clipped to column 0
    expected[0, 3:8, 2:9] = [255, 0, 0]       # x 5 +- 3, y 5 +- 2; point 1 invisible (hidden)
    expected[1, 3:8, 3:10] = [255, 0, 0]      # x 6.5 +- 3 -> 3..9
    expected[1, 8:13, 17:24] = [0, 255, 0]
    expected[1, 8:13, 7:14] = [0, 0, 255]     # drawn last, covers nothing else here
    np.testing.assert_array_equal(frames, expected)
    # The default draws the occluded point 1 too (x 20 +- 3, y 10 +- 2 at frame 0).
    default = render_tracks(tracks, visible, colors, height=16, width=32, point_size=3.0)
    expected[0, 8:13, 17:24] = [0, 255, 0]
    np.testing.assert_array_equal(default, expected)


def test_render_tracks_later_points_on_top_and_clipping():
    tracks = np.array([[[1.0, 1.0], [4.0, 1.0]]])  # x ranges 0..2 (clipped from -1) and 2..5
    colors = np.array([[10, 10, 10], [200, 0, 0]], dtype=np.uint8)
    frame = render_tracks(tracks, np.ones((1, 2), bool), colors, 8, 8, point_size=1.5)[0]
    assert tuple(frame[1, 2]) == (200, 0, 0)  # overlap goes to the later point
    assert tuple(frame[1, 0]) == (10, 10, 10)  # square clipped at the left border, still drawn
    assert tuple(frame[1, 6]) == (0, 0, 0)


def test_default_point_size_follows_grid_spacing():
    assert default_point_size(grid_points(480, 832, 50), 480, 832) == 4.5  # ride_horse: 10 x 7 px squares
    assert default_point_size(grid_points(480, 832, 70), 480, 832) == 3.0
    assert default_point_size(np.array([[1.0, 1.0]]), 480, 832) == 4.5


def test_render_matches_ride_horse_first_track_frame():
    if not RIDE_HORSE.is_dir():
        pytest.skip("shared/examples/ride_horse is not available")
    from longvie.media.video_io import read_video

    reference = read_video(RIDE_HORSE / "track_00.mp4", max_frames=1)[0]
    height, width = reference.shape[:2]
    assert (height, width) == (480, 832)

    def non_black(frame):  # threshold above H.264 ringing on black
        return float((frame.max(-1) > 40).mean())

    target = non_black(reference)
    for grid in (50, 70):  # the example's grid, and the paper's default
        points = grid_points(height, width, grid)
        ours = render_tracks(points[None], np.ones((1, len(points)), bool), track_colors(points, height, width),
                             height, width)[0]
        assert abs(non_black(ours) - target) <= 0.2 * target, (grid, non_black(ours), target)
