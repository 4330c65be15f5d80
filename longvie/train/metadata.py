"""Build a training metadata file from videos and their extracted controls.

    python utils/prepare_controls.py videos/ride.mp4 controls/ride --caption-model Qwen/Qwen2.5-VL-7B-Instruct
    python -m longvie.train.metadata --videos videos --controls controls --out data/metadata.json

For every ``videos/NAME.*`` with a ``controls/NAME/cond.json`` (written by prepare_controls), one
row per clip: clip i starts at frame (clip_frames - 1) * i of the video (clips share a frame,
SPEC §5) and uses ``depth_ii.mp4`` / ``track_ii.mp4`` and its caption. Paths in the output are
relative to the output file's folder. Videos without controls are listed and skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..media.atomic import atomic_write_json

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
PLACEHOLDER_PREFIX = "PLACEHOLDER"  # utils/prepare_controls.py writes these without a caption model


def rows_from_conditions(video, cond_json, relative_to, clip_frames: int = 81, frame_step: int = 1) -> list[dict]:
    """Metadata rows for one video and its ``cond.json`` (paths relative to ``relative_to``)."""
    video, cond_json, relative_to = Path(video), Path(cond_json), Path(relative_to)
    clips = json.loads(cond_json.read_text(encoding="utf-8"))
    rows = []
    for i, clip in enumerate(clips):
        if str(clip["text"]).startswith(PLACEHOLDER_PREFIX):
            raise ValueError(f"{cond_json}: clip {i} still has a placeholder caption; write the captions "
                             "(or run prepare_controls.py with --caption-model) before training")
        rows.append({
            "video": os.path.relpath(video, relative_to),
            "start": (clip_frames - 1) * i,
            "frame_step": frame_step,
            "depth": os.path.relpath(cond_json.parent / clip["depth"], relative_to),
            "track": os.path.relpath(cond_json.parent / clip["track"], relative_to),
            "text": clip["text"],
        })
    return rows


def build_metadata(videos_dir, controls_dir, out_path, clip_frames: int = 81, frame_step: int = 1) -> list[dict]:
    """Rows for every video of ``videos_dir`` with controls in ``controls_dir/<stem>/cond.json``; writes ``out_path``."""
    videos_dir, controls_dir, out_path = Path(videos_dir), Path(controls_dir), Path(out_path)
    rows, missing = [], []
    for video in sorted(p for p in videos_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        cond = controls_dir / video.stem / "cond.json"
        if not cond.is_file():
            missing.append(video.name)
            continue
        rows.extend(rows_from_conditions(video, cond, out_path.parent, clip_frames, frame_step))
    if missing:
        print(f"no controls for {len(missing)} video(s), skipped: {', '.join(missing[:10])}"
              f"{' ...' if len(missing) > 10 else ''}", file=sys.stderr)
    if not rows:
        raise ValueError(f"no clips found: expected {controls_dir}/<video name>/cond.json for the videos in {videos_dir}")
    atomic_write_json(out_path, rows)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.train.metadata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", required=True, help="folder of source videos")
    parser.add_argument("--controls", required=True, help="folder with one prepare_controls output per video")
    parser.add_argument("--out", required=True, help="metadata JSON to write")
    parser.add_argument("--clip-frames", type=int, default=81)
    parser.add_argument("--frame-step", type=int, default=1, help="the --frame-step given to prepare_controls.py")
    args = parser.parse_args(argv)
    try:
        rows = build_metadata(args.videos, args.controls, args.out, args.clip_frames, args.frame_step)
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(rows)} clip(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
