"""Score one generated long video: VBench's whole-video metrics, a per-clip breakdown, and long-video
diagnostics.

:func:`evaluate_video` returns one plain dict (what ``metrics.json`` holds, see
:mod:`longvie.eval.report`):

* ``video[metric]`` — the whole video. VBench metrics as VBench scores one video file (all frames;
  D.D. one dynamic/static decision; :mod:`longvie.eval.vbench_metrics`); SSIM / LPIPS averaged over
  the compared frames, PSNR from the MSE pooled over them. This is the value compared with the paper's
  LongVGenBench row (:data:`AGGREGATION`).
* ``per_clip[metric]`` — ours: the same definitions on each clip alone (81 frames, one shared with the
  next clip, as the paper generates them; frames after the last full clip form a last, shorter clip,
  listed in ``partial_clips``).
* ``drift[metric]`` — :func:`~longvie.eval.diagnostics.drift_over_clips` of each per-clip curve over the
  full clips (finite: PSNR capped at 100 dB).
* ``boundaries`` (seams and ``colour_jump`` per boundary), ``colour`` (colour drift over clips),
  ``control`` (depth and track adherence) — :mod:`longvie.eval.diagnostics`.
* ``reference_frames`` / ``compared_frames`` and ``warnings`` — a reference shorter than the video is
  compared on its frames only, and says so.

A metric that cannot be computed has the string ``"not computed: ..."`` in ``video`` and no curve.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .availability import MetricUnavailable
from .diagnostics import (
    COLOUR_JUMP_THRESHOLD,
    PSNR_CAP_DB,
    SEAM_THRESHOLD,
    boundary_scores,
    clip_mean_lab,
    colour_drift,
    colour_vs_reference,
    depth_adherence,
    drift_over_clips,
    track_adherence,
    video_clip_ranges,
)
from .inputs import GeneratedVideo
from .quality import LPIPS_MODEL_ID, LpipsMetric, align_reference, ssim_per_frame
from .vbench_metrics import EXTRA_METRICS, MODEL_IDS, VBENCH_METRICS

__all__ = ["EvalSettings", "evaluate_video", "evaluate_files", "REFERENCE_METRICS", "EVAL_FORMAT", "AGGREGATION",
           "DEFAULT_FPS"]

logger = logging.getLogger("longvie.eval")
EVAL_FORMAT = "longvie-eval/2"
REFERENCE_METRICS = ("ssim", "psnr", "lpips")
DEFAULT_FPS = 16.0  # the released model's frame rate (SPEC §4), used when a video records none
_NEEDS_REFERENCE = "not computed: needs --reference"
AGGREGATION = {
    "video": "VBench's own aggregation: each metric over the whole video as one video file (all frames; S.C./B.C. "
             "against the video's first frame; D.D. one dynamic/static decision for the video). SSIM/LPIPS: mean "
             "over the compared frames; PSNR: from the MSE pooled over them.",
    "per_clip": "ours: the same definitions on each clip alone (S.C./B.C. against the clip's first frame, so drift "
                "across clips does not show there); VBench has no per-clip breakdown.",
    "paper_row": "The paper's LongVGenBench row is compared with the whole-video values: LongVie 2 scores each "
                 "generated minute-long video with VBench, and VBench scores a video file as a whole; the paper "
                 "names no per-clip averaging or VBench-Long splitting. Per-clip means would hide the drift "
                 "that S.C./B.C. exist to show. Over several videos (python -m longvie.eval.bench) the videos' "
                 "values are combined as VBench does (mean; S.C./B.C. weighted by frame pairs).",
}


@dataclass
class EvalSettings:
    clip_frames: int = 81
    overlap: int = 1
    resize: str = "crop"  # how a reference or control of another size is brought to the frames' size
    boundary_threshold: float = SEAM_THRESHOLD
    track_grid: int = 16
    fps: float | None = None  # overrides the frame rate the video records (D.D. samples frames by it)


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
    n = len(reference)  # already cut to at most len(frames)
    gen = frames[:n]
    total = len(frames)

    def padded(values):
        out = np.full(total, np.nan)
        out[:n] = values
        return out

    ssim = padded(ssim_per_frame(gen, reference))
    mse = padded([np.mean((g.astype(np.float64) - r.astype(np.float64)) ** 2) for g, r in zip(gen, reference)])
    result["per_clip"]["ssim"] = _clip_means(ssim, ranges)
    result["per_clip"]["psnr"] = [None if m is None else _psnr_from_mse(m) for m in _clip_means(mse, ranges)]
    result["per_clip_compared_frames"] = [max(0, min(e, n) - s) for s, e in ranges]
    result["video"]["ssim"] = float(np.nanmean(ssim))
    result["video"]["psnr"] = _psnr_from_mse(float(np.nanmean(mse)))
    result["models"]["lpips"] = LPIPS_MODEL_ID
    if isinstance(lpips, LpipsMetric):
        values = padded(lpips(gen, reference))
        result["per_clip"]["lpips"] = _clip_means(values, ranges)
        result["video"]["lpips"] = float(np.nanmean(values))
        result["models"]["lpips"] = lpips.model_id
    else:
        result["video"]["lpips"] = lpips.report if isinstance(lpips, MetricUnavailable) else "not computed: disabled"


def _vbench_metrics(frames, ranges, prompts, scorers, fps, result) -> None:
    for name in VBENCH_METRICS + EXTRA_METRICS:
        scorer = scorers.get(name)
        result["models"][name] = getattr(scorer, "model_id", MODEL_IDS[name])
        if scorer is None:
            if name not in EXTRA_METRICS:
                result["video"][name] = "not computed: disabled"
            continue
        if isinstance(scorer, MetricUnavailable):
            result["video"][name] = scorer.report
            continue
        try:
            scored = scorer.score(frames, ranges, list(prompts), fps)
        except MetricUnavailable as err:
            result["video"][name] = err.report
            continue
        result["video"][name] = scored["video"]
        result["per_clip"][name] = scored["per_clip"]
        if scored.get("details"):
            result["details"][name] = scored["details"]


def _drift(result: dict, ranges, partial: list[int]) -> None:
    full = [i for i in range(len(ranges)) if i not in partial]
    for name, curve in result["per_clip"].items():
        values = [curve[i] for i in full]
        result["drift"][name] = drift_over_clips(values, cap=PSNR_CAP_DB if name == "psnr" else None) \
            if None not in values else None


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
        reference: (T, H, W, 3) uint8 ground truth; resized to the generated size with ``settings.resize``
            and cut to the generated length. A shorter reference is compared on its frames only (a warning).
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
    partial = [i for i, (s, e) in enumerate(ranges) if e - s < clip_frames]
    fps, fps_source = (settings.fps, "--fps") if settings.fps else (
        (video.fps, video.fps_source) if video.fps else (DEFAULT_FPS, f"default {DEFAULT_FPS:g} (not recorded)"))
    result = {
        "format": EVAL_FORMAT, "generated": video.source, "reference": reference_source,
        "frames": int(len(frames)), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "fps": float(fps), "fps_source": fps_source,
        "clip_frames": int(min(clip_frames, len(frames))), "clips": len(ranges),
        "clip_ranges": [[int(s), int(e)] for s, e in ranges], "partial_clips": partial,
        "aggregation": AGGREGATION, "warnings": [],
        "models": {}, "video": {}, "per_clip": {}, "details": {}, "drift": {},
    }
    if partial and len(ranges) > 1:
        s, e = ranges[-1]
        result["warnings"].append(f"the last {len(frames) - ranges[-2][1]} frame(s) after the last full "
                                  f"{clip_frames}-frame clip are scored as a last, shorter clip ({e - s} frames, "
                                  "shared frame included); drift figures use the full clips only")
    elif partial:
        result["warnings"].append(f"the video has {len(frames)} frames, fewer than one {clip_frames}-frame clip: "
                                  "it is scored as one short clip")
    if reference is not None:
        result["reference_frames"] = int(len(reference))
        reference = align_reference(reference, frames, settings.resize)
        result["compared_frames"] = int(len(reference))
        if len(reference) < len(frames):
            result["warnings"].append(
                f"the reference has only {len(reference)} frames: SSIM, PSNR, LPIPS, track adherence and the "
                f"colour against the reference compare the first {len(reference)} of the {len(frames)} frames")
        _reference_metrics(frames, reference, ranges, lpips, result)
    else:
        for name in REFERENCE_METRICS:
            result["video"][name] = _NEEDS_REFERENCE
    _vbench_metrics(frames, ranges, video.prompts, scorers or {}, fps, result)
    _drift(result, ranges, partial)

    result["boundaries"] = boundary_scores(frames, ranges, settings.boundary_threshold)
    result["boundaries_flagged"] = sum(b["flagged"] for b in result["boundaries"])
    result["colour"] = _colour(frames, reference, ranges, result["boundaries"])
    result["control"] = _control_adherence(frames, reference, ranges, depth_estimator, depth_model_id,
                                           control_depths, tracker, settings)
    return result


def _colour(frames, reference, ranges, boundaries) -> dict:
    drift = colour_drift(boundaries, len(ranges))
    return {
        "definition": "drift_per_clip: CIE76 ΔE of the summed matched colour steps at the clip boundaries up to "
                      "each clip (colour change the generator introduces at hand-overs; content moving through "
                      "the view is not counted); shift_vs_reference: ΔE of each clip's mean colour against the "
                      f"reference's same frames. Boundary colour jumps are flagged above {COLOUR_JUMP_THRESHOLD} ΔE.",
        "drift_per_clip": drift["per_clip"], "drift": drift["drift"],
        "boundaries_used": drift["boundaries_used"], "boundaries_unmatched": drift["boundaries_unmatched"],
        "lab_mean": clip_mean_lab(frames, ranges).tolist(),
        "shift_vs_reference": colour_vs_reference(frames, reference, ranges) if reference is not None else None,
    }


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
    covered = [i for i, (s, e) in enumerate(ranges) if reference is not None and e <= len(reference)]
    if tracker is None:
        control["tracks"] = "not computed: disabled"
    elif not covered:
        control["tracks"] = ("not computed: needs --reference covering at least one clip (control tracks are "
                             "stored only as rendered videos; the reference's tracks stand for them)")
    else:
        scored = track_adherence(frames, reference, [ranges[i] for i in covered], tracker, settings.track_grid)
        per_clip = [None] * len(ranges)
        for i, value in zip(covered, scored):
            per_clip[i] = value
        errors = [c["error_px"] for c in scored if c["error_px"] is not None]
        control["tracks"] = {"tracker": type(tracker).__name__, "per_clip": per_clip,
                             "clips_compared": len(covered),
                             "mean_error_px": float(np.mean(errors)) if errors else None}
    return control


def evaluate_files(generated, out_dir, reference=None, prompts=None, backends=None, settings=None,
                   name: str = "generated") -> dict:
    """Load ``generated`` (run directory or video), ``reference`` (video) and ``prompts`` (cond.json),
    evaluate with ``backends`` (:class:`~longvie.eval.backends.Backends`), run the extra sections
    (:mod:`longvie.eval.sections`) and write the report into ``out_dir``; returns the result dict."""
    from ..media.video_io import read_video
    from .backends import Backends
    from .inputs import load_generated
    from .report import write_report
    from .sections import SectionContext, run_sections

    backends = backends or Backends()
    settings = settings or EvalSettings()
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
    aligned = None
    if reference_frames is not None:
        aligned = align_reference(reference_frames, video.frames, settings.resize)
    context = SectionContext(video=video, reference=aligned, ranges=[tuple(r) for r in result["clip_ranges"]],
                             fps=result["fps"], settings=settings, backends=backends, result=result,
                             out_dir=Path(out_dir))
    run_sections(context, result)
    write_report(out_dir, result, name)
    return result
