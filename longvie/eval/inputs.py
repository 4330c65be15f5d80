"""What is evaluated: a generated video (a LongVie run directory or a plain video file), its prompts and
controls, and the reference video.

A run directory (:mod:`longvie.longvideo.run_state`) gives everything: its frames losslessly from the
clip states, the clip length, fps, the cond.json it was made from and each clip's prompt and control
videos from manifest.json. A plain video needs ``--prompts cond.json`` for prompts and controls and
``--clip-frames`` when its clips are not 81 frames long; its frame rate is read from the file, as
VBench's dynamic degree does (OpenCV's ``CAP_PROP_FPS``, ``vbench/dynamic_degree.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..longvideo.run_state import RunDir
from ..longvideo.sampler import load_run_frames
from ..longvideo.validation import resolve_condition_path
from ..media.video_io import read_video

__all__ = ["GeneratedVideo", "load_generated", "load_cond", "video_fps"]


@dataclass
class GeneratedVideo:
    """Frames (T, H, W, 3) uint8 plus what the run recorded about them."""

    frames: np.ndarray
    source: str
    clip_frames: int | None = None  # None: not recorded (use the default, 81)
    fps: float | None = None
    fps_source: str = "not recorded"  # "file", "run manifest", or "not recorded"
    cond_path: Path | None = None  # the cond.json of the prompts and controls (its folder: the condition folder)
    run_dir: Path | None = None  # a LongVie run directory, when --generated is one
    prompts: list[str] = field(default_factory=list)
    depth_videos: list[Path] = field(default_factory=list)
    track_videos: list[Path] = field(default_factory=list)


def load_cond(path: str | Path) -> tuple[list[str], list[Path], list[Path]]:
    """Prompts and control-video paths of a cond.json (a list of {"text", "depth", "track"})."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"condition list {path} not found — pass the cond.json the video was generated from")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err.msg}, line {err.lineno}) — fix it") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a JSON list of {{\"text\", \"depth\", \"track\"}} objects")
    prompts = [str(e.get("text") or "") for e in entries]
    # the sampler's path rules (relative to the JSON, the working directory, or by name in its folder)
    depth = [resolve_condition_path(e["depth"], path.parent)[0] for e in entries if e.get("depth")]
    track = [resolve_condition_path(e["track"], path.parent)[0] for e in entries if e.get("track")]
    return prompts, depth if len(depth) == len(entries) else [], track if len(track) == len(entries) else []


def video_fps(path: str | Path) -> float | None:
    """The frame rate a video file records (OpenCV, as VBench reads it; PyAV's average rate when OpenCV
    reports none); None when neither does."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    if fps and fps > 0 and fps == fps:
        return float(fps)
    try:
        import av

        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else None
    except Exception:  # noqa: BLE001 - an unreadable header simply records no rate
        return None


def load_generated(path: str | Path, prompts: str | Path | None = None) -> GeneratedVideo:
    """A run directory (manifest.json inside) or a video file; ``prompts`` (cond.json) overrides the run's."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        manifest = run.load_manifest()
        if manifest is None:
            raise ValueError(f"{path} is a folder without manifest.json — pass a LongVie run directory "
                             "(python -m longvie.sample --out DIR) or a video file")
        done = [r for r in manifest["clips"] if r and r.get("status") == "done"]
        if not done:
            raise ValueError(f"run {path} has no finished clip yet — run the sampler to completion first")
        settings = manifest.get("settings", {})
        video = GeneratedVideo(load_run_frames(path), str(path), settings.get("num_frames"), settings.get("fps"))
        video.fps_source = "run manifest" if video.fps else "not recorded"
        video.run_dir = path
        cond = (manifest.get("config") or {}).get("cond")
        video.cond_path = Path(cond) if cond else None
        video.prompts = [r["inputs"].get("text", "") for r in done]
        if all(r["inputs"].get("depth") for r in done):
            video.depth_videos = [Path(r["inputs"]["depth"]["path"]) for r in done]
        if all(r["inputs"].get("track") for r in done):
            video.track_videos = [Path(r["inputs"]["track"]["path"]) for r in done]
    elif path.is_file():
        video = GeneratedVideo(read_video(path), str(path), fps=video_fps(path))
        video.fps_source = "file" if video.fps else "not recorded"
    else:
        raise ValueError(f"--generated {path}: not found — give a run directory or a video file")
    if prompts is not None:
        video.prompts, video.depth_videos, video.track_videos = load_cond(prompts)
        video.cond_path = Path(prompts)
    return video
