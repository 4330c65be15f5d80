"""Long-video diagnostics against hand computations."""
import cv2
import numpy as np
import pytest

from longvie.eval.diagnostics import (
    affine_invariant_error,
    boundary_scores,
    colour_shift,
    depth_adherence,
    drift_over_clips,
    rgb_to_lab,
    track_adherence,
    video_clip_ranges,
)


def _l_star_of_grey(value):
    """CIE L* of an sRGB grey level, written out by hand (IEC 61966-2-1, CIE 1976)."""
    c = value / 255.0
    y = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 116 * y ** (1 / 3) - 16 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def test_clip_ranges_follow_the_paper_layout():
    assert video_clip_ranges(241) == [(0, 81), (80, 161), (160, 241)]
    assert video_clip_ranges(25, 9) == [(0, 9), (8, 17), (16, 25)]
    assert video_clip_ranges(5, 9) == [(0, 5)]


def test_brightness_ramp_gives_the_hand_computed_colour_drift():
    values = 40 + 5 * np.arange(25)  # one grey level per frame, 3 clips of 9 frames
    frames = np.broadcast_to(values[:, None, None, None], (25, 8, 8, 3)).astype(np.uint8)
    ranges = video_clip_ranges(25, 9)
    result = colour_shift(frames, ranges, reference=frames)
    clip_l = [np.mean([_l_star_of_grey(v) for v in values[s:e]]) for s, e in ranges]
    expected = [abs(m - clip_l[0]) for m in clip_l]
    np.testing.assert_allclose(result["shift_vs_clip0"], expected, atol=1e-9)
    assert expected[2] > expected[1] > 10  # the curve rises with the ramp
    np.testing.assert_allclose(result["shift_vs_reference"], 0, atol=1e-12)
    np.testing.assert_allclose(np.array(result["lab_mean"])[:, 1:], 0, atol=1e-9)  # grey: a* = b* = 0


def test_rgb_to_lab_agrees_with_opencv():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 3), dtype=np.uint8)
    ours = rgb_to_lab(rgb)
    theirs = cv2.cvtColor(rgb[None].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0]
    np.testing.assert_allclose(ours, theirs, atol=0.5)  # OpenCV interpolates its gamma curve


def _panning(num_frames, seed=0, size=(24, 32)):
    texture = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, (size[0], size[1] * 3, 3))
                               .astype(np.uint8), (0, 0), 4)
    return np.stack([texture[:, t:t + size[1]] for t in range(num_frames)])


def test_hard_cut_at_a_boundary_is_flagged_and_a_smooth_boundary_is_not():
    smooth = _panning(25)
    ranges = video_clip_ranges(25, 9)
    cut = smooth.copy()
    cut[9:] = _panning(16, seed=1)  # new content right after the shared frame 8 (boundary 0)
    smooth_scores = boundary_scores(smooth, ranges)
    cut_scores = boundary_scores(cut, ranges)
    assert [b["frame"] for b in smooth_scores] == [8, 16]
    assert not any(b["flagged"] for b in smooth_scores)
    assert all(0.5 < b["score"] < 2.0 for b in smooth_scores)
    assert cut_scores[0]["flagged"] and cut_scores[0]["score"] > 3
    assert not cut_scores[1]["flagged"]


def test_static_video_has_no_flagged_boundary():
    frames = np.full((17, 8, 8, 3), 99, np.uint8)
    assert [b["score"] for b in boundary_scores(frames, video_clip_ranges(17, 9))] == [1.0]


def test_vde_drift_hand_computed_and_zero_for_a_flat_curve():
    assert drift_over_clips([0.5, 0.5, 0.5]) == 0.0
    # (1 * |0.6-0.5|/0.5 + 2 * |0.3-0.5|/0.5) / (1 + 2)
    assert drift_over_clips([0.5, 0.6, 0.3]) == pytest.approx((0.2 + 2 * 0.4) / 3)
    assert drift_over_clips([float("inf"), float("inf")]) == 0.0
    assert drift_over_clips([0.5]) is None and drift_over_clips([0.5, None]) is None


def test_depth_adherence_is_scale_and_shift_invariant():
    rng = np.random.default_rng(0)
    disparity = rng.random((9, 16, 16))
    control = np.repeat((disparity * 255).round().astype(np.uint8)[..., None], 3, -1)
    frames = np.zeros((9, 16, 16, 3), np.uint8)
    ranges = [(0, 9)]
    good = depth_adherence(frames, ranges, [control], lambda f: 3.0 * disparity + 7.0)
    bad = depth_adherence(frames, ranges, [control], lambda f: rng.random((9, 16, 16)))
    assert good[0] < 0.003 < 0.1 < bad[0]
    assert affine_invariant_error(np.arange(10.0), 2 * np.arange(10.0) + 1) == pytest.approx(0, abs=1e-12)


def test_track_adherence_is_zero_against_itself():
    from longvie.controls.point_tracking import LucasKanadeTracker

    frames = _panning(9, size=(48, 64))
    result = track_adherence(frames, frames, [(0, 9)], LucasKanadeTracker(), grid=4)
    assert result[0]["error_px"] == 0.0 and result[0]["visible"] > 0.5
