"""A driving video -> a condition folder, the way ``utils/prepare_controls.py`` makes it, in stages
the page shows one progress bar each for.

The stages call the same library functions as the script (:mod:`longvie.controls`: reading the video,
depth estimation, tracking, ``depth_video`` / ``track_video`` / ``condition_folder`` for normalising,
writing the clips and cond.json); nothing is re-implemented here. Captions are the script's placeholders, which the page's prompt table replaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..controls.driving_video import load_driving_video
from ..controls.primitives import DEFAULT_GRID, clip_ranges

__all__ = ["ExtractionOptions", "extract_controls", "STAGES"]

STAGES = ("reading the video", "depth estimation", "depth videos", "track videos")

# progress(stage, done, total): one call when a stage starts (done 0) and after each unit of work.
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExtractionOptions:
    """The options of ``utils/prepare_controls.py`` the page offers (same defaults).

    ``depth_npy`` (a (T, H, W) disparity you already have) replaces the depth model; otherwise
    ``vda_checkpoint`` selects Video Depth Anything, else Depth Anything V2 ``depth_model``.
    """

    height: int | None = None
    width: int | None = None
    frame_step: int = 1
    depth_npy: str | None = None
    vda_checkpoint: str | None = None
    depth_model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    local_files_only: bool = False
    track_backend: str = "lk"
    grid: int = DEFAULT_GRID  # 50x50, as upstream and the released example
    device: str | None = None


def _counting(stage: str, progress: StageProgress | None, total: int | None = None):
    """A ``progress=`` wrapper for the utils functions: reports each item of the iterable."""

    def wrap(items: Iterable) -> Iterable:
        items = list(items)
        count = total or len(items)
        if progress:
            progress(stage, 0, count)
        for done, item in enumerate(items, 1):
            yield item
            if progress:
                progress(stage, done, count)

    return wrap


def extract_controls(video: str | Path, out: str | Path, options: ExtractionOptions = ExtractionOptions(),
                     progress: StageProgress | None = None, log: Callable[[str], None] = print) -> Path:
    """Write first.png, depth_XX.mp4, track_XX.mp4 and cond.json (placeholder captions) into ``out``.

    Returns:
        The path of cond.json.

    Raises:
        ValueError, RuntimeError, FileNotFoundError: an unreadable or too short video, a missing
            depth model or checkpoint (messages from the extraction library, naming the fix).
    """
    from ..controls import condition_folder as prepare
    from ..controls import depth_video as depth_tools
    from ..controls import track_video as track_tools
    from ..controls.depth_estimators import build_depth_estimator
    from ..controls.point_tracking import build_tracker

    out = Path(out)
    o = options

    if progress:
        progress(STAGES[0], 0, 1)
    frames = load_driving_video(video, o.height, o.width, o.frame_step, log=log)
    ranges = clip_ranges(len(frames))
    tracker = build_tracker(o.track_backend, o.device)  # fail early, before the slow depth stage
    prepare.save_png(out / "first.png", frames[0])
    if progress:
        progress(STAGES[0], 1, 1)

    if o.depth_npy:
        if progress:
            progress(STAGES[1], 0, 1)
        disparity = prepare.disparity_from_file(o.depth_npy, frames)
        if progress:
            progress(STAGES[1], 1, 1)
    else:
        estimator = build_depth_estimator("auto", o.depth_model, o.vda_checkpoint, o.local_files_only, o.device)
        disparity = estimator(frames, progress=_counting(STAGES[1], progress))
        del estimator
    depth_grey = depth_tools.normalize_depth_for_clips(disparity, source=o.depth_npy or video, log=log)
    del disparity
    depth_paths = depth_tools.write_depth_clips(depth_grey, out, progress=_counting(STAGES[2], progress))
    track_paths = track_tools.write_track_clips(frames, out, tracker, o.grid, depth_grey,
                                                progress=_counting(STAGES[3], progress))
    return prepare.write_cond(out, prepare.placeholder_captions(len(ranges)), depth_paths, track_paths)
