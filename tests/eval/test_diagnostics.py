"""Long-video diagnostics against their targets on synthetic pans and against hand computations.

The pans: a blurred random texture seen through a 64x96 window moving 1, 2 or 3 px per frame, cut into
clips of 21 frames sharing one frame (4 clips, 81 frames), as the sampler stitches them. Variants add
an extra shift or a grey-level step right after a shared frame.
"""
import cv2
import numpy as np
import pytest

from longvie.eval.diagnostics import (
    affine_invariant_error,
    boundary_scores,
    colour_drift,
    colour_vs_reference,
    depth_adherence,
    drift_over_clips,
    rgb_to_lab,
    track_adherence,
    video_clip_ranges,
)

CLIP, CLIPS, H, W = 21, 4, 64, 96


def _texture(width, seed=0, colour_ramp=False):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((H, width, 3)).astype(np.float32), (0, 0), 3)
    t = 30 + 195 * (t - t.min()) / (t.max() - t.min())
    if colour_ramp:  # content whose colour changes along the pan: red on the left, blue on the right
        ramp = np.linspace(0, 1, width)[None, :, None]
        t = 0.5 * t + 120 * np.concatenate([1 - ramp, 0.3 + 0 * ramp, ramp], -1)
    return t


def pan(speed, extra=0, step_after=None, grey=0, seed=0, colour_ramp=False):
    """Clips of CLIP frames sharing one frame; clip k+1 starts ``extra`` px further than the motion says;
    from boundary ``step_after`` on, frames are ``grey`` levels brighter."""
    frames_total = CLIPS * (CLIP - 1) + 1
    texture = _texture(W + speed * frames_total + extra * CLIPS + 8, seed, colour_ramp)
    frames, base = [], 0
    for k in range(CLIPS):
        for j in range(0 if k == 0 else 1, CLIP):  # frame 0 of clip k > 0 is the shared frame
            offset = base + speed * j
            frame = texture[:, offset:offset + W] + (grey if step_after is not None and k > step_after else 0)
            frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
        base += speed * (CLIP - 1) + extra
    return np.stack(frames)


RANGES = video_clip_ranges(CLIPS * (CLIP - 1) + 1, CLIP)


@pytest.fixture(scope="module")
def scored():
    cases = {f"plain{v}": pan(v) for v in (1, 2, 3)}
    cases.update({"shift3_at1": pan(1, extra=3), "shift16_at2": pan(2, extra=16),
                  "grey8_at1": pan(1, step_after=1, grey=8), "grey16_at1": pan(1, step_after=1, grey=16),
                  "colour_content": pan(3, colour_ramp=True)})
    return {name: (frames, boundary_scores(frames, RANGES)) for name, frames in cases.items()}


def _l_star_of_grey(value):
    """CIE L* of an sRGB grey level, written out by hand (IEC 61966-2-1, CIE 1976)."""
    c = value / 255.0
    y = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 116 * y ** (1 / 3) - 16 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def test_clip_ranges_follow_the_paper_layout_and_keep_trailing_frames():
    assert video_clip_ranges(241) == [(0, 81), (80, 161), (160, 241)]
    assert video_clip_ranges(25, 9) == [(0, 9), (8, 17), (16, 25)]
    assert video_clip_ranges(29, 9) == [(0, 9), (8, 17), (16, 25), (24, 29)]  # 4 trailing frames: a last clip
    assert video_clip_ranges(26, 9) == [(0, 9), (8, 17), (16, 25), (24, 26)]
    assert video_clip_ranges(5, 9) == [(0, 5)]
    assert RANGES == [(0, 21), (20, 41), (40, 61), (60, 81)]


@pytest.mark.parametrize("speed", [1, 2, 3])
def test_plain_pans_have_no_seam_and_no_colour_jump(scored, speed):
    _, bounds = scored[f"plain{speed}"]
    assert [b["frame"] for b in bounds] == [20, 40, 60]
    assert not any(b["flagged"] for b in bounds), bounds
    assert all(b["score"] < 1 and b["colour_jump"] < 1 for b in bounds)
    assert all(b["colour_jump_region"] == "matched" for b in bounds)
    assert colour_drift(bounds, len(RANGES))["drift"] < 1


@pytest.mark.parametrize("case", ["shift3_at1", "shift16_at2"])
def test_an_extra_shift_is_flagged_at_every_boundary(scored, case):
    _, bounds = scored[case]
    assert all(b["seam_flagged"] and b["flagged"] for b in bounds), bounds
    if case == "shift3_at1":  # the flow sees a 4 px step where the pan moves 1 px: 3 px unexplained
        assert all(b["motion_jump_px"] == pytest.approx(3.0, abs=0.2) and "motion" in b["reasons"] for b in bounds)
        assert all(b["colour_jump"] < 1 for b in bounds)


@pytest.mark.parametrize("grey", [8, 16])
def test_a_grey_level_step_is_flagged_with_its_colour_jump(scored, grey):
    frames, bounds = scored[f"grey{grey}_at1"]
    jump = bounds[1]
    assert jump["flagged"] and jump["colour_jump_flagged"] and jump["colour_jump"] >= 2
    assert "residual" in jump["reasons"] and "colour" in jump["reasons"]
    assert not bounds[0]["flagged"] and not bounds[2]["flagged"]
    assert bounds[0]["colour_jump"] < 1 and bounds[2]["colour_jump"] < 1
    # independently: the ΔE76 of the same texture window's mean colour with and without the step
    window = frames[40].astype(np.float64)
    expected = np.linalg.norm(rgb_to_lab(np.clip(window + grey, 0, 255)).reshape(-1, 3).mean(0)
                              - rgb_to_lab(window).reshape(-1, 3).mean(0))
    assert jump["colour_jump"] == pytest.approx(expected, rel=0.1)
    drift = colour_drift(bounds, len(RANGES))
    assert drift["per_clip"][:2] == pytest.approx([0, 0], abs=0.1)
    assert drift["per_clip"][2] == pytest.approx(jump["colour_jump"], abs=0.1) and drift["drift"] >= 2


def test_colour_drift_is_not_content_change(scored):
    """A pan across content that turns from red to blue: each clip's mean colour moves far, but nothing
    changes colour at the hand-overs, so there is no colour drift and no colour jump."""
    frames, bounds = scored["colour_content"]
    lab = [rgb_to_lab(frames[s:e]).reshape(-1, 3).mean(0) for s, e in RANGES]
    assert np.linalg.norm(lab[-1] - lab[0]) > 5  # what "mean colour vs clip 0" used to report as drift
    assert colour_drift(bounds, len(RANGES))["drift"] < 1
    assert not any(b["flagged"] for b in bounds)
    assert colour_vs_reference(frames, frames, RANGES) == [0.0] * 4  # against itself: no shift


def test_colour_drift_sums_matched_steps_and_says_when_it_cannot_measure():
    def record(i, step, region="matched"):
        return {"boundary": i, "colour_step_lab": step, "colour_jump_region": region}

    steps = [record(0, [3.0, 0, 0]), record(1, [0, 4.0, 0]), record(2, [-3.0, -4.0, 0], "whole frame"),
             record(3, [0, 0, 0])]
    drift = colour_drift(steps, 5)
    assert drift["per_clip"] == pytest.approx([0, 3, 5, 5, 5]) and drift["drift"] == pytest.approx(5)
    assert drift["boundaries_used"] == 3 and drift["boundaries_unmatched"] == [2]
    cancelling = colour_drift([record(0, [2.0, 1, 0]), record(1, [-2.0, -1, 0])], 3)
    assert cancelling["drift"] == 0  # a step and its undoing: no drift left
    assert colour_drift([record(0, [9.0, 0, 0], "whole frame")], 2)["drift"] is None  # nothing measurable
    assert colour_drift([], 1)["drift"] == 0.0  # one clip: no hand-over, no drift


def test_hard_cut_is_flagged_and_a_static_video_is_not():
    smooth = pan(1)
    cut = smooth.copy()
    cut[21:] = pan(1, seed=5)[21:]  # new content right after the shared frame 20
    bounds = boundary_scores(cut, RANGES)
    assert bounds[0]["flagged"] and bounds[0]["score"] > 3 and not bounds[1]["flagged"]
    static = np.full((17, 16, 16, 3), 99, np.uint8)
    assert [b["flagged"] for b in boundary_scores(static, video_clip_ranges(17, 9))] == [False]


def test_colour_against_a_shorter_reference():
    frames = pan(1)
    brighter = np.clip(frames.astype(int) + 10, 0, 255).astype(np.uint8)
    shifts = colour_vs_reference(brighter, frames[:30], RANGES)
    assert shifts[2:] == [None, None] and 2 < shifts[0] and shifts[1] == pytest.approx(shifts[0], rel=0.05)


def test_brightness_ramp_lab_hand_computed():
    values = np.array([40, 90, 200])
    lab = rgb_to_lab(np.broadcast_to(values[:, None], (3, 3)).astype(np.uint8))
    np.testing.assert_allclose(lab[:, 0], [_l_star_of_grey(v) for v in values], atol=1e-9)
    np.testing.assert_allclose(lab[:, 1:], 0, atol=1e-9)  # grey: a* = b* = 0


def test_rgb_to_lab_agrees_with_opencv():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 3), dtype=np.uint8)
    ours = rgb_to_lab(rgb)
    theirs = cv2.cvtColor(rgb[None].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0]
    np.testing.assert_allclose(ours, theirs, atol=0.5)  # OpenCV interpolates its gamma curve


def test_vde_drift_hand_computed_and_always_finite():
    assert drift_over_clips([0.5, 0.5, 0.5]) == 0.0
    # (1 * |0.6-0.5|/0.5 + 2 * |0.3-0.5|/0.5) / (1 + 2)
    assert drift_over_clips([0.5, 0.6, 0.3]) == pytest.approx((0.2 + 2 * 0.4) / 3)
    # PSNR of an identical first clip: inf counts as the 100 dB cap -> (1 * 0.7 + 2 * 0.7) / 3
    assert drift_over_clips([float("inf"), 30.0, 30.0], cap=100.0) == pytest.approx(0.7)
    assert drift_over_clips([float("inf"), float("inf")], cap=100.0) == 0.0
    with pytest.raises(ValueError, match="cap"):
        drift_over_clips([float("inf"), 30.0])
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

    frames = pan(2)[:9]
    result = track_adherence(frames, frames, [(0, 9)], LucasKanadeTracker(), grid=4)
    assert result[0]["error_px"] == 0.0 and result[0]["visible"] > 0.5

