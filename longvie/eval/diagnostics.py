"""Long-video diagnostics no benchmark reports: per-clip drift, clip-boundary jumps, colour shift and
control adherence.

Frames are (T, H, W, 3) uint8 RGB. Clips follow the sampler (SPEC §7): clip i covers frames
``(F-1) i .. (F-1) i + F - 1`` with F = 81, one frame shared with the next clip; the boundary frame
of clips i and i+1 is ``b = (F-1)(i+1)``.

* :func:`drift_over_clips` — how far a per-clip metric moves away from clip 0, in the spirit of the
  Video Drift Error (VDE) of long-video work (start-vs-later quality change): the mean absolute
  percentage change ``|m_k - m_0| / |m_0|`` over clips k >= 1, weighted by k so late clips count more.
  Our definition; no paper reports it for LongVie 2.
* :func:`boundary_scores` — for each boundary, the larger mean absolute frame difference of the two
  frame pairs touching the shared frame (``b-1 -> b`` and ``b -> b+1``, so either stitching convention
  is seen) divided by the median adjacent-frame difference inside the two neighbouring clips. About 1
  for a seamless boundary; a hard cut gives many times more (flagged above ``threshold``, default 3).
* :func:`colour_shift` — CIE76 distance between the mean CIELAB colour (D65, sRGB) of each clip and
  that of clip 0 (and of the reference's same clip when given).
* :func:`depth_adherence` / :func:`track_adherence` — the control depth against depth re-estimated on
  the output (error after the best scale and shift, since both are relative disparity), and points
  re-tracked on the output against the same points tracked on the reference.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..controls.primitives import clip_ranges, grid_points
from ..media.video_io import fit_frames

__all__ = ["video_clip_ranges", "drift_over_clips", "frame_differences", "boundary_scores", "rgb_to_lab",
           "clip_mean_lab", "colour_shift", "affine_invariant_error", "depth_adherence", "track_adherence",
           "BOUNDARY_THRESHOLD"]

BOUNDARY_THRESHOLD = 3.0
_EPS = 1e-6


def video_clip_ranges(num_frames: int, clip_frames: int = 81, overlap: int = 1) -> list[tuple[int, int]]:
    """Half-open frame ranges of the clips; a video shorter than one clip is one clip."""
    if num_frames < clip_frames:
        return [(0, num_frames)]
    return clip_ranges(num_frames, clip_frames, overlap)


def drift_over_clips(values: Sequence[float]) -> float | None:
    """VDE-style drift of a per-clip curve: sum_k k |m_k - m_0| / |m_0| / sum_k k over k >= 1.

    Infinite values equal to clip 0's count as no change; when ``m_0`` is 0 the change is absolute.
    Returns None with fewer than two clips or when a value is not a number.
    """
    if len(values) < 2 or any(not isinstance(v, (int, float)) for v in values):
        return None
    m0 = float(values[0])
    total, weights = 0.0, 0.0
    for k, value in enumerate(values[1:], start=1):
        value = float(value)
        if value == m0:
            change = 0.0
        elif math.isinf(value) or math.isinf(m0):
            change = math.inf
        else:
            change = abs(value - m0) / (abs(m0) if m0 != 0 else 1.0)
        total, weights = total + k * change, weights + k
    return total / weights


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (grey levels 0-255) of each adjacent frame pair: (T-1,)."""
    diffs = np.empty(max(len(frames) - 1, 0))
    for t in range(len(frames) - 1):
        diffs[t] = np.abs(frames[t + 1].astype(np.int16) - frames[t].astype(np.int16)).mean()
    return diffs


def boundary_scores(frames: np.ndarray, ranges: Sequence[tuple[int, int]],
                    threshold: float = BOUNDARY_THRESHOLD) -> list[dict]:
    """One record per clip boundary: ``{"boundary", "frame", "difference", "inside_median", "score",
    "flagged"}`` (see the module docstring)."""
    diffs = frame_differences(frames)
    records = []
    for index in range(len(ranges) - 1):
        b = ranges[index + 1][0]  # the shared frame
        across = [d for d in (b - 1, b) if 0 <= d < len(diffs)]
        if not across:
            continue
        inside = [t for t in range(ranges[index][0], ranges[index + 1][1] - 1) if t not in across]
        inside_median = float(np.median(diffs[inside])) if inside else 0.0
        difference = float(max(diffs[d] for d in across))
        if difference <= _EPS:
            score = 1.0 if inside_median <= _EPS else 0.0
        else:
            score = difference / max(inside_median, 1e-3)
        records.append({"boundary": index, "frame": b, "difference": difference, "inside_median": inside_median,
                        "score": score, "flagged": bool(score > threshold)})
    return records


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB (..., 3) float64 under D65 (IEC 61966-2-1 + CIE 1976 L*a*b*)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / m.sum(1)  # the white point is sRGB white (1, 1, 1): D65
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def clip_mean_lab(frames: np.ndarray, ranges: Sequence[tuple[int, int]], stride: int = 4) -> np.ndarray:
    """Mean CIELAB colour of each clip: (num_clips, 3). Pixels are sampled every ``stride`` rows/columns."""
    means = []
    for start, end in ranges:
        means.append(rgb_to_lab(frames[start:end, ::stride, ::stride]).reshape(-1, 3).mean(0))
    return np.stack(means)


def colour_shift(frames: np.ndarray, ranges, reference: np.ndarray | None = None, stride: int = 4) -> dict:
    """``{"lab_mean": (K, 3), "shift_vs_clip0": (K,), "shift_vs_reference": (K,) or None}`` (CIE76 delta E)."""
    lab = clip_mean_lab(frames, ranges, stride)
    result = {"lab_mean": lab.tolist(), "shift_vs_clip0": np.linalg.norm(lab - lab[0], axis=-1).tolist(),
              "shift_vs_reference": None}
    if reference is not None:
        ref_lab = clip_mean_lab(reference, ranges, stride)
        result["shift_vs_reference"] = np.linalg.norm(lab - ref_lab, axis=-1).tolist()
    return result


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
