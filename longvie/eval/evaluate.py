"""Score one generated long video: per clip and for the whole video, plus the long-video diagnostics.

:func:`evaluate_video` returns one plain dict (what ``metrics.json`` holds, see
:mod:`longvie.eval.report`):

* ``per_clip[metric]`` — one value per clip (81 frames, one shared with the next clip, as the paper);
* ``video[metric]`` — the whole video: SSIM / LPIPS averaged over all frames, PSNR from the MSE pooled
  over all frames, the VBench metrics averaged over clips (D.D. = the fraction of dynamic clips, as
  VBench's D.D. is a fraction of videos);
* ``drift[metric]`` — :func:`~longvie.eval.diagnostics.drift_over_clips` of each per-clip curve;
* ``boundaries``, ``colour``, ``control`` — :mod:`longvie.eval.diagnostics`.

A metric that cannot be computed has the string ``"not computed: needs ..."`` in ``video`` and no curve.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .availability import MetricUnavailable
from .diagnostics import (
    BOUNDARY_THRESHOLD,
    boundary_scores,
    colour_shift,
    depth_adherence,
    drift_over_clips,
    track_adherence,
    video_clip_ranges,
)
from .inputs import GeneratedVideo
from .quality import LPIPS_MODEL_ID, LpipsMetric, align_reference, ssim_per_frame
from .vbench_metrics import MODEL_IDS, VBENCH_METRICS

__all__ = ["EvalSettings", "evaluate_video", "REFERENCE_METRICS", "EVAL_FORMAT"]

logger = logging.getLogger("longvie.eval")
EVAL_FORMAT = "longvie-eval/1"
REFERENCE_METRICS = ("ssim", "psnr", "lpips")
_NEEDS_REFERENCE = "not computed: needs --reference"


@dataclass
class EvalSettings:
    clip_frames: int = 81
    overlap: int = 1
    resize: str = "crop"  # how a reference or control of another size is brought to the frames' size
    boundary_threshold: float = BOUNDARY_THRESHOLD
    track_grid: int = 16


def _clip_means(per_frame: np.ndarray, ranges) -> list[float | None]:
    out = []
    for start, end in ranges:
        values = per_frame[start:end]
        values = values[~np.isnan(values)]
        out.append(float(values.mean()) if len(values) else None)
    return out


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _reference_metrics(frames, reference, ranges, lpips, result) -> None:
    n = min(len(frames), len(reference))
    gen, ref = frames[:n], reference[:n]
    total = len(frames)

    def padded(values):
        out = np.full(total, np.nan)
        out[:n] = values
        return out

    ssim = padded(ssim_per_frame(gen, ref))
    mse = padded([np.mean((g.astype(np.float64) - r.astype(np.float64)) ** 2) for g, r in zip(gen, ref)])
    result["per_clip"]["ssim"] = _clip_means(ssim, ranges)
    result["per_clip"]["psnr"] = [None if m is None else _psnr_from_mse(m) for m in _clip_means(mse, ranges)]
    result["video"]["ssim"] = float(np.nanmean(ssim))
    result["video"]["psnr"] = _psnr_from_mse(float(np.nanmean(mse)))
    result["models"]["lpips"] = LPIPS_MODEL_ID
    if isinstance(lpips, LpipsMetric):
        values = padded(lpips(gen, ref))
        result["per_clip"]["lpips"] = _clip_means(values, ranges)
        result["video"]["lpips"] = float(np.nanmean(values))
        result["models"]["lpips"] = lpips.model_id
    else:
        result["video"]["lpips"] = lpips.report if isinstance(lpips, MetricUnavailable) else "not computed: disabled"


def _vbench_metrics(frames, ranges, prompts, scorers, result) -> None:
    for name in VBENCH_METRICS:
        scorer = scorers.get(name)
        result["models"][name] = getattr(scorer, "model_id", MODEL_IDS[name])
        if scorer is None:
            result["video"][name] = "not computed: disabled"
            continue
        if isinstance(scorer, MetricUnavailable):
            result["video"][name] = scorer.report
            continue
        try:
            curve = [scorer(frames[start:end], prompts[i] if i < len(prompts) else None)
                     for i, (start, end) in enumerate(ranges)]
        except MetricUnavailable as err:
            result["video"][name] = err.report
            continue
        result["per_clip"][name] = curve
        result["video"][name] = float(np.mean(curve))


def evaluate_video(
    video: GeneratedVideo,
    reference: np.ndarray | None = None,
    *,
    scorers: dict | None = None,
    lpips: LpipsMetric | MetricUnavailable | None = None,
    depth_estimator: Callable | MetricUnavailable | None = None,
    depth_model_id: str | None = None,
    control_depths: list[np.ndarray] | None = None,
    tracker: Callable | None = None,
    settings: EvalSettings | None = None,
    reference_source: str | None = None,
) -> dict:
    """All metrics and diagnostics of ``video`` (see the module docstring for the layout).

    Args:
        reference: (T, H, W, 3) uint8 ground truth; resized to the generated size with ``settings.resize``.
        scorers: :func:`~longvie.eval.vbench_metrics.load_scorers`' dict (metric -> scorer or
            MetricUnavailable); missing metrics are "not computed: disabled".
        depth_estimator: frames -> disparity, for depth adherence against ``control_depths`` (one
            (T, H, W, 3) uint8 control video per clip).
        tracker: :mod:`longvie.controls.point_tracking` tracker for track adherence (needs ``reference``).
    """
    settings = settings or EvalSettings()
    frames = video.frames
    clip_frames = video.clip_frames or settings.clip_frames
    ranges = video_clip_ranges(len(frames), clip_frames, settings.overlap)
    if reference is not None:
        reference = align_reference(reference, frames, settings.resize)
    result = {
        "format": EVAL_FORMAT, "generated": video.source, "reference": reference_source,
        "frames": int(len(frames)), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "clip_frames": int(min(clip_frames, len(frames))), "clips": len(ranges),
        "clip_ranges": [[int(s), int(e)] for s, e in ranges],
        "models": {}, "video": {}, "per_clip": {}, "drift": {},
    }
    if reference is not None:
        _reference_metrics(frames, reference, ranges, lpips, result)
    else:
        for name in REFERENCE_METRICS:
            result["video"][name] = _NEEDS_REFERENCE
    _vbench_metrics(frames, ranges, video.prompts, scorers or {}, result)
    for name, curve in result["per_clip"].items():
        result["drift"][name] = drift_over_clips(curve) if None not in curve else None

    result["boundaries"] = boundary_scores(frames, ranges, settings.boundary_threshold)
    result["boundaries_flagged"] = sum(b["flagged"] for b in result["boundaries"])
    result["colour"] = colour_shift(frames, ranges, reference[:len(frames)] if reference is not None and
                                    len(reference) >= ranges[-1][1] else None)
    result["control"] = _control_adherence(frames, reference, ranges, depth_estimator, depth_model_id,
                                           control_depths, tracker, settings)
    return result


def _control_adherence(frames, reference, ranges, depth_estimator, depth_model_id, control_depths, tracker,
                       settings) -> dict:
    control: dict = {}
    if isinstance(depth_estimator, MetricUnavailable):
        control["depth"] = depth_estimator.report
    elif depth_estimator is None:
        control["depth"] = "not computed: disabled"
    elif control_depths is None or len(control_depths) < len(ranges):
        control["depth"] = "not computed: needs the control depth videos (a run directory, or --prompts cond.json)"
    else:
        errors = depth_adherence(frames, ranges, control_depths, depth_estimator, settings.resize)
        control["depth"] = {"model": depth_model_id, "error_per_clip": errors, "mean": float(np.mean(errors)),
                            "definition": "mean |a*estimate+b - control| after the least-squares scale a and "
                                          "shift b, control disparity in 0-1"}
    if tracker is None:
        control["tracks"] = "not computed: disabled"
    elif reference is None or len(reference) < ranges[-1][1]:
        control["tracks"] = ("not computed: needs --reference covering the whole video (control tracks are "
                             "stored only as rendered videos; the reference's tracks stand for them)")
    else:
        per_clip = track_adherence(frames, reference, ranges, tracker, settings.track_grid)
        errors = [c["error_px"] for c in per_clip if c["error_px"] is not None]
        control["tracks"] = {"tracker": type(tracker).__name__, "per_clip": per_clip,
                             "mean_error_px": float(np.mean(errors)) if errors else None}
    return control


def evaluate_files(generated, out_dir, reference=None, prompts=None, backends=None, settings=None,
                   name: str = "generated") -> dict:
    """Load ``generated`` (run directory or video), ``reference`` (video) and ``prompts`` (cond.json),
    evaluate with ``backends`` (:class:`~longvie.eval.backends.Backends`) and write the report into
    ``out_dir``; returns the result dict."""
    from ..media.video_io import read_video
    from .backends import Backends
    from .inputs import load_generated
    from .report import write_report

    backends = backends or Backends()
    video = load_generated(generated, prompts)
    reference_frames = read_video(reference) if reference is not None else None
    controls = None
    if video.depth_videos and callable(backends.depth_estimator):
        missing = [p for p in video.depth_videos if not p.is_file()]
        if missing:
            logger.warning("control depth video %s not found: depth adherence not computed", missing[0])
        else:
            controls = [read_video(p) for p in video.depth_videos]
    result = evaluate_video(video, reference_frames, scorers=backends.scorers, lpips=backends.lpips,
                            depth_estimator=backends.depth_estimator, depth_model_id=backends.depth_model_id,
                            control_depths=controls,
                            tracker=backends.tracker, settings=settings,
                            reference_source=str(reference) if reference is not None else None)
    from .camera_adherence import evaluate_camera_adherence  # videos made from a camera folder (camera.json)

    result.update(evaluate_camera_adherence(video.frames, out_dir, video.depth_videos, prompts, generated,
                                            backends.tracker))
    write_report(out_dir, result, name)
    return result
