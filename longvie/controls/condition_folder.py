"""A LongVie condition folder on disk (first.png, depth_XX.mp4, track_XX.mp4, cond.json), built in a
hidden staging folder and moved into place only when complete.

Used by ``utils/prepare_controls.py`` and the app's extraction stage.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..media.atomic import atomic_path, atomic_write_json
from .captioning import PLACEHOLDER_KEY, placeholder_entry_text
from .depth_video import load_disparity


def placeholder_captions(count: int) -> list[str]:
    return [placeholder_entry_text(i) for i in range(count)]


def save_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG")


def disparity_from_file(path: str | Path, frames: np.ndarray) -> np.ndarray:
    """A precomputed (T, H, W) disparity for ``frames``, resized to their size when it differs.

    Raises:
        ValueError: it has fewer frames than the clips use.
    """
    import cv2

    disparity = load_disparity(path)
    if len(disparity) < len(frames):
        raise ValueError(f"{path}: {len(disparity)} depth frames, but the clips use {len(frames)} video frames; "
                         "compute the depth from the same video with the same --frame-step")
    disparity = disparity[: len(frames)]
    height, width = frames.shape[1:3]
    if disparity.shape[1:] == (height, width):
        return np.asarray(disparity, dtype=np.float32)
    return np.stack([cv2.resize(np.asarray(d, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
                     for d in disparity])


def write_cond(out: Path, texts: list[str], depth_paths: list[Path], track_paths: list[Path],
               placeholder: bool = False) -> Path:
    """cond.json: one {"text", "depth", "track"} object per clip, paths relative to the JSON file.

    With ``placeholder`` every entry also gets ``"placeholder": true`` (see the module docstring).
    """
    cond = [{"text": text, "depth": depth.name, "track": track.name, **({PLACEHOLDER_KEY: True} if placeholder else {})}
            for text, depth, track in zip(texts, depth_paths, track_paths, strict=True)]
    atomic_write_json(out / "cond.json", cond)
    return out / "cond.json"


CONTROLS_KIND = "controls"  # the marker kind of a condition folder (longvie.media.output_dir)


def claim_condition_folder(out: str | Path, flag: str = "", inputs=(), kind: str = CONTROLS_KIND,
                           what: str = "condition folder") -> Path:
    """Check that ``out`` may be written: new, empty, or a condition folder of ours.

    Raises:
        longvie.media.output_dir.OutputDirError: ``out`` is a file or holds files that are not ours
            (one sentence: the folder, why, what to do). ``inputs`` (files the command reads) do not count.
    """
    from ..media.output_dir import claim_output_dir

    return claim_output_dir(out, what, kind=kind, flag=flag, inputs=inputs)


def mark_condition_folder(out: str | Path, kind: str = CONTROLS_KIND) -> Path:
    """Create ``out`` and mark it as a condition folder of ours (so that running again may replace its files);
    ``kind``: the marker kind of the command that writes it (``controls``; ``camera`` for longvie.camera)."""
    from ..media.output_dir import mark_output_dir

    return mark_output_dir(out, kind)


def staging_folder(out: Path, inputs=(), kind: str = CONTROLS_KIND, what: str = "condition folder") -> Path:
    """A fresh hidden folder next to ``out`` (same file system, so moving it into place is a rename),
    marked as ours (marker ``kind``). ``out`` itself must be new, empty or ours (:func:`claim_condition_folder`)."""
    claim_condition_folder(out, inputs=inputs, kind=kind, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    mark_condition_folder(staging, kind)
    return staging


def publish(staging: Path, out: Path) -> None:
    """Move the finished folder into place: a rename when ``out`` is new, else file by file."""
    if not out.exists():
        os.rename(staging, out)
        return
    for item in sorted(staging.iterdir()):
        os.replace(item, out / item.name)
    staging.rmdir()
