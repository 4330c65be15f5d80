"""Long-video diagnostics no benchmark reports: clip layout, seams at clip boundaries, colour jumps and
colour drift, per-clip drift of a metric, and control adherence.

Frames are (T, H, W, 3) uint8 RGB. Clips follow the sampler (SPEC §7): clip i covers frames
``(F-1) i .. (F-1) i + F - 1`` with F = 81, one frame shared with the next clip; the boundary frame of
clips i and i+1 is ``b = (F-1)(i+1)``. Frames after the last full clip form a last, shorter clip
(:func:`video_clip_ranges`), reported as partial.

Seams (:func:`boundary_scores`; our definitions). A seam is a change across the boundary that the
motion around it does not explain. Dense optical flow (OpenCV DIS, on frames scaled to at most
:data:`FLOW_MAX_SIDE` px) is computed for the two frame pairs touching the shared frame (``b-1 -> b``,
``b -> b+1``: either stitching convention is seen) and for up to :data:`SEAM_WINDOW` pairs on each
side inside the two clips. For every pair:

* **residual** — mean absolute difference (grey levels) between a frame and the next frame warped
  back along the flow, over pixels whose source lies inside the frame: content the motion does not
  predict (a brightness or colour step, a cut, new content). Expected value: the median over the
  inside pairs, at least :data:`RESIDUAL_FLOOR`.
* **motion jump** — the median over pixels of the distance (px) between the pair's flow and the
  mean flow of the other inside pairs: a jump in position where the camera moves smoothly (an extra
  shift at the seam). Expected value: the median of the same distance over the inside pairs (each
  against the others), at least :data:`MOTION_FLOOR_PX`.

The seam score is the larger ratio of the boundary pairs' value to the expected value; above
``threshold`` (:data:`SEAM_THRESHOLD`, 3) the boundary is flagged. Smooth motion of any speed scores
well below 1; a cut, a 3 px extra shift at 1 px/frame or a +8 grey-level step scores over 3.

Colour jump (``colour_jump``, CIE76 ΔE): the mean CIELAB colour of the :data:`COLOUR_WINDOW` frames
before the shared frame against that of the :data:`COLOUR_WINDOW` frames after it, each frame warped
onto the shared frame by optical flow and averaged over the region matched in all of them (flow
forward-backward consistent), so that content moving through the view is not a colour change. When
less than :data:`MATCHED_MIN_FRACTION` of the frame is matched (a cut), the whole frames' mean colours
are compared instead (``colour_jump_region: "whole frame"``, reported but never flagged: it moves with
the content; such a boundary is flagged as a seam by its residual). Flagged above
:data:`COLOUR_JUMP_THRESHOLD` = 2.3 ΔE, the just-noticeable difference of ΔE76 (Sharma, "Digital
Color Imaging Handbook", 2003).

Colour drift (:func:`colour_drift`): the vector sum of the matched boundary colour steps (after -
before, Lab) up to each clip, as ΔE: how far the colour has moved across the clip hand-overs, where
nothing but the generator changes colour. Colour change of the content inside a clip (a pan towards a
red wall) is not drift and does not count. With a reference, each clip's mean colour is also compared
with the reference's same frames (``shift_vs_reference``).

Metric drift (:func:`drift_over_clips`): how far a per-clip metric moves away from clip 0, in the
spirit of the Video Drift Error (VDE) of long-video work: the mean relative change ``|m_k - m_0| /
|m_0|`` over full clips k >= 1, weighted by k. Finite always: PSNR is capped at :data:`PSNR_CAP_DB`.

Control adherence (:func:`depth_adherence`, :func:`track_adherence`): the control depth against depth
re-estimated on the output (error after the best scale and shift, since both are relative
disparity), and points re-tracked on the output against the same points tracked on the reference.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..controls.primitives import clip_ranges, grid_points
from ..media.video_io import fit_frames

__all__ = ["video_clip_ranges", "drift_over_clips", "frame_differences", "boundary_scores", "rgb_to_lab",
           "clip_mean_lab", "colour_drift", "colour_vs_reference", "affine_invariant_error", "depth_adherence",
           "track_adherence", "SEAM_THRESHOLD", "BOUNDARY_THRESHOLD", "COLOUR_JUMP_THRESHOLD", "PSNR_CAP_DB",
           "OpticalFlow"]

SEAM_THRESHOLD = 3.0
BOUNDARY_THRESHOLD = SEAM_THRESHOLD  # the name the CLI and EvalSettings used before
RESIDUAL_FLOOR = 1.0  # grey levels: below this a residual is noise (8-bit rounding, interpolation)
MOTION_FLOOR_PX = 0.5  # px of the analysed frame: below this a flow difference is estimation noise
SEAM_WINDOW = 4  # inside frame pairs on each side of a boundary
COLOUR_WINDOW = 4  # frames on each side of the shared frame for the colour jump
COLOUR_JUMP_THRESHOLD = 2.3  # ΔE76 just-noticeable difference (Sharma 2003)
MATCHED_MIN_FRACTION = 0.25
FLOW_MAX_SIDE = 640
FLOW_MIN_SIDE = 32  # DIS needs >= 12 px; smaller frames are scaled up for the flow
PSNR_CAP_DB = 100.0  # PSNR of identical frames (inf) counts as 100 dB in drift figures
_WARP_MARGIN = 2


def video_clip_ranges(num_frames: int, clip_frames: int = 81, overlap: int = 1) -> list[tuple[int, int]]:
    """Half-open frame ranges of the clips: the full clips of the sampler's layout, then the frames after
    the last full clip as a last, shorter clip (sharing ``overlap`` frames with it, as a next clip would);
    a video shorter than one clip is one (short) clip."""
    if num_frames < clip_frames:
        return [(0, num_frames)]
    ranges = clip_ranges(num_frames, clip_frames, overlap)
    if ranges[-1][1] < num_frames:
        ranges.append((ranges[-1][1] - overlap, num_frames))
    return ranges


def drift_over_clips(values: Sequence[float], cap: float | None = None) -> float | None:
    """VDE-style drift of a per-clip curve: ``sum_k k |m_k - m_0| / |m_0| / sum_k k`` over k >= 1.

    ``cap`` bounds the values first (PSNR: an identical clip's ``inf`` counts as ``cap`` dB), so the
    result is always finite; when ``m_0`` is 0 the change is absolute. Returns None with fewer than two
    clips or when a value is not a number.
    """
    if len(values) < 2 or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return None
    curve = [min(float(v), cap) if cap is not None else float(v) for v in values]
    if any(not math.isfinite(v) for v in curve):
        raise ValueError("drift of a curve with infinite values needs a cap")
    m0 = curve[0]
    total = sum(k * abs(v - m0) / (abs(m0) if m0 != 0 else 1.0) for k, v in enumerate(curve[1:], start=1))
    return total / sum(range(1, len(curve)))


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (grey levels 0-255) of each adjacent frame pair: (T-1,)."""
    diffs = np.empty(max(len(frames) - 1, 0))
    for t in range(len(frames) - 1):
        diffs[t] = np.abs(frames[t + 1].astype(np.int16) - frames[t].astype(np.int16)).mean()
    return diffs


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) 0-255 (uint8 or float) -> CIELAB (..., 3) float64 under D65 (IEC 61966-2-1 + CIE 1976)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / m.sum(1)  # the white point is sRGB white (1, 1, 1): D65
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def clip_mean_lab(frames: np.ndarray, ranges: Sequence[tuple[int, int]], stride: int = 4) -> np.ndarray:
    """Mean CIELAB colour of each clip: (num_clips, 3). Pixels are sampled every ``stride`` rows/columns."""
    return np.stack([rgb_to_lab(frames[s:e, ::stride, ::stride]).reshape(-1, 3).mean(0) for s, e in ranges])


class OpticalFlow:
    """Dense optical flow of two RGB frames (OpenCV DIS, medium preset, on grey levels; DIS normalises
    each patch's mean, so a brightness step does not move the flow). Frames are scaled so the longer
    side is at most :data:`FLOW_MAX_SIDE` and the shorter at least :data:`FLOW_MIN_SIDE`; flows are in
    pixels of that analysed size (``scale`` = analysed / original)."""

    def __init__(self, height: int, width: int):
        import cv2

        self.scale = min(1.0, FLOW_MAX_SIDE / max(height, width))
        self.scale = max(self.scale, FLOW_MIN_SIDE / min(height, width))
        self.size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))  # (w, h) for cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._grey: dict[int, np.ndarray] = {}
        self._colour: dict[int, np.ndarray] = {}

    def frame(self, frames: np.ndarray, t: int) -> np.ndarray:
        """Frame t at the analysed size, float32 RGB 0-255 (cached)."""
        import cv2

        if t not in self._colour:
            image = frames[t]
            if (image.shape[1], image.shape[0]) != self.size:
                interpolation = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
                image = cv2.resize(image, self.size, interpolation=interpolation)
            self._colour[t] = image.astype(np.float32)
        return self._colour[t]

    def grey(self, frames: np.ndarray, t: int) -> np.ndarray:
        import cv2

        if t not in self._grey:
            self._grey[t] = cv2.cvtColor(np.clip(self.frame(frames, t) + 0.5, 0, 255).astype(np.uint8),
                                         cv2.COLOR_RGB2GRAY)
        return self._grey[t]

    def __call__(self, frames: np.ndarray, a: int, b: int) -> np.ndarray:
        """Flow (h, w, 2) from frame a to frame b: frame_b(x + flow(x)) ~ frame_a(x)."""
        return self._dis.calc(self.grey(frames, a), self.grey(frames, b), None)


def _warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` sampled at x + flow(x) (bilinear) and the mask of samples inside the frame."""
    import cv2

    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    m = _WARP_MARGIN
    valid = (map_x >= m) & (map_x <= w - 1 - m) & (map_y >= m) & (map_y <= h - 1 - m)
    return warped, valid


def _residual(flows: OpticalFlow, frames: np.ndarray, t: int, flow: np.ndarray) -> float:
    warped, valid = _warp(flows.frame(frames, t + 1), flow)
    difference = np.abs(warped - flows.frame(frames, t)).mean(-1)
    return float(difference[valid].mean()) if valid.any() else float(difference.mean())


def _colour_jump(flows: OpticalFlow, frames: np.ndarray, b: int, before: list[int], after: list[int]) -> dict:
    """The colour jump at shared frame ``b`` (see the module docstring)."""
    reference = flows.frame(frames, b)
    warped, mask = [], np.ones(reference.shape[:2], bool)
    for t in before + after:
        forward, backward = flows(frames, b, t), flows(frames, t, b)
        image, valid = _warp(flows.frame(frames, t), forward)
        back_at_target, _ = _warp(backward, forward)
        consistent = np.linalg.norm(forward + back_at_target, axis=-1) < 0.5 + 0.05 * np.linalg.norm(forward, axis=-1)
        warped.append(image)
        mask &= valid & consistent
    matched = float(mask.mean())
    if matched >= MATCHED_MIN_FRACTION:
        sampled = mask.copy()
        if mask[::2, ::2].sum() >= 1000:  # every other row and column is plenty for a mean colour
            sampled[1::2] = False
            sampled[:, 1::2] = False
        labs = np.stack([rgb_to_lab(np.clip(image[sampled], 0, 255)).mean(0) for image in warped])
        region = "matched"
    else:
        labs = np.stack([rgb_to_lab(flows.frame(frames, t)[::2, ::2]).reshape(-1, 3).mean(0) for t in before + after])
        region = "whole frame"
    step = labs[len(before):].mean(0) - labs[:len(before)].mean(0)
    jump = float(np.linalg.norm(step))
    # only a matched region measures colour; the whole frames' means also move with the content
    return {"colour_jump": jump, "colour_jump_flagged": bool(region == "matched" and jump > COLOUR_JUMP_THRESHOLD),
            "colour_step_lab": step.tolist(), "colour_jump_region": region, "colour_matched_fraction": matched}


def boundary_scores(frames: np.ndarray, ranges: Sequence[tuple[int, int]],
                    threshold: float = SEAM_THRESHOLD) -> list[dict]:
    """One record per clip boundary (see the module docstring for every quantity)::

        {"boundary", "frame", "score", "flagged", "reasons", "seam_flagged", "residual", "residual_inside",
         "motion_jump_px", "motion_inside_px", "colour_jump", "colour_jump_flagged", "colour_step_lab",
         "colour_jump_region", "colour_matched_fraction"}

    ``flagged`` is ``seam_flagged or colour_jump_flagged``; ``reasons`` lists which of "residual",
    "motion" and "colour" made it so. Motion figures are in pixels of the original frames.
    """
    if len(ranges) < 2:
        return []
    flows = OpticalFlow(frames.shape[1], frames.shape[2])
    records = []
    last = len(frames) - 1
    for index in range(len(ranges) - 1):
        b = ranges[index + 1][0]  # the shared frame
        lo, hi = ranges[index][0], ranges[index + 1][1] - 1  # frames of the two clips
        across = [t for t in (b - 1, b) if lo <= t and t + 1 <= min(hi, last)]
        if not across:
            continue
        inside = [t for t in range(b - 1 - SEAM_WINDOW, b + 1 + SEAM_WINDOW)
                  if t not in across and t not in (b - 1, b) and lo <= t and t + 1 <= min(hi, last)]
        pairs = {t: flows(frames, t, t + 1) for t in across + inside}
        residual = {t: _residual(flows, frames, t, pairs[t]) for t in pairs}

        def deviation(t):
            others = [pairs[u] for u in inside if u != t]
            if not others:
                return 0.0
            return float(np.median(np.linalg.norm(pairs[t] - np.mean(others, axis=0), axis=-1)))

        motion = {t: deviation(t) for t in pairs}
        residual_inside = max(float(np.median([residual[t] for t in inside])) if inside else 0.0, RESIDUAL_FLOOR)
        motion_inside = max(float(np.median([motion[t] for t in inside])) if len(inside) > 1 else 0.0,
                            MOTION_FLOOR_PX)
        residual_b, motion_b = max(residual[t] for t in across), max(motion[t] for t in across)
        ratios = {"residual": residual_b / residual_inside, "motion": motion_b / motion_inside}
        seam_score = max(ratios.values())
        before = [t for t in range(b - COLOUR_WINDOW, b) if t >= lo]
        after = [t for t in range(b + 1, b + 1 + COLOUR_WINDOW) if t <= min(hi, last)]
        colour = _colour_jump(flows, frames, b, before, after)
        reasons = [name for name, ratio in ratios.items() if ratio > threshold]
        if colour["colour_jump_flagged"]:
            reasons.append("colour")
        records.append({"boundary": index, "frame": int(b), "score": seam_score, "flagged": bool(reasons),
                        "reasons": reasons, "seam_flagged": seam_score > threshold, "residual": residual_b,
                        "residual_inside": residual_inside, "motion_jump_px": motion_b / flows.scale,
                        "motion_inside_px": motion_inside / flows.scale, **colour})
    return records


def colour_drift(boundaries: Sequence[dict], num_clips: int) -> dict:
    """Colour drift over clips from the boundaries' matched colour steps (module docstring).

    Returns ``{"per_clip": [ΔE of the summed steps up to clip k; 0 for clip 0], "drift": last value (None
    when no boundary had a matched region: not measurable), "boundaries_used": n, "boundaries_unmatched":
    [boundary indices left out: no matched region]}``.
    """
    total = np.zeros(3)
    per_clip = [0.0]
    unmatched = []
    steps = {b["boundary"]: b for b in boundaries}
    for index in range(num_clips - 1):
        record = steps.get(index)
        if record is None or record["colour_jump_region"] != "matched":
            unmatched.append(index)
        else:
            total = total + np.asarray(record["colour_step_lab"])
        per_clip.append(float(np.linalg.norm(total)))
    used = num_clips - 1 - len(unmatched)
    return {"per_clip": per_clip, "drift": per_clip[-1] if used or num_clips == 1 else None,
            "boundaries_used": used, "boundaries_unmatched": unmatched}


def colour_vs_reference(frames: np.ndarray, reference: np.ndarray, ranges, stride: int = 4) -> list[float | None]:
    """Per clip: ΔE76 between the mean CIELAB colour of the clip and of the reference's same frames
    (over the frames the reference covers; None for a clip it does not reach)."""
    out = []
    for start, end in ranges:
        end = min(end, len(reference))
        if end <= start:
            out.append(None)
            continue
        ours = rgb_to_lab(frames[start:end, ::stride, ::stride]).reshape(-1, 3).mean(0)
        theirs = rgb_to_lab(reference[start:end, ::stride, ::stride]).reshape(-1, 3).mean(0)
        out.append(float(np.linalg.norm(ours - theirs)))
    return out


def affine_invariant_error(estimate: np.ndarray, target: np.ndarray) -> float:
    """Mean |a * estimate + b - target| with (a, b) the least-squares fit (scale- and shift-invariant)."""
    x, y = estimate.reshape(-1).astype(np.float64), target.reshape(-1).astype(np.float64)
    design = np.stack([x, np.ones_like(x)], 1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.mean(np.abs(a * x + b - y)))


def depth_adherence(frames: np.ndarray, ranges, control_depths: Sequence[np.ndarray],
                    estimator: Callable[[np.ndarray], np.ndarray], resize: str = "crop") -> list[float]:
    """Per clip: the control depth (grey 0-255 disparity video, (T, H, W, 3) uint8) against the estimator's
    disparity of the output clip, as :func:`affine_invariant_error` in units of the control's 0-1 range.
    Controls of another size are brought to the frames' size with the sampler's ``resize`` rule."""
    errors = []
    for (start, end), control in zip(ranges, control_depths):
        clip = frames[start:end]
        n = min(len(clip), len(control))
        h, w = clip.shape[1:3]
        if control.shape[1:3] != (h, w):
            control = np.asarray(fit_frames(control[:n], h, w, resize))
        target = control[:n, ..., 0].astype(np.float64) / 255.0
        errors.append(affine_invariant_error(np.asarray(estimator(clip[:n]), dtype=np.float64), target))
    return errors


def track_adherence(frames: np.ndarray, reference: np.ndarray, ranges, tracker, grid: int = 16) -> list[dict]:
    """Per clip: a grid of points tracked through the output and through the reference from each clip's
    first frame; ``{"error_px": mean end-point distance over points visible in both, "visible": fraction}``.

    The control tracks of :mod:`longvie.examples.synthetic` and ``utils/prepare_controls.py`` are the
    reference's motion rendered as a video, so the reference's tracks stand for them.
    """
    results = []
    for start, end in ranges:
        clip, ref = frames[start:end], reference[start:end]
        points = grid_points(clip.shape[1], clip.shape[2], grid)
        tracks, visible = tracker(clip, points)
        ref_tracks, ref_visible = tracker(ref, points)
        both = visible & ref_visible
        error = float(np.linalg.norm(tracks - ref_tracks, axis=-1)[both].mean()) if both.any() else None
        results.append({"error_px": error, "visible": float(both.mean())})
    return results
