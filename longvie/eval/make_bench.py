"""``python -m longvie.eval.make_bench``: build a LongVGenBench-style folder from any set of long videos.

    python -m longvie.eval.make_bench clips/*.mp4 --out bench/ [--min-seconds 60] [--prepare]

For each video long enough (``--min-frames``, default one 81-frame clip; ``--min-seconds`` at 16 fps), writes
``BENCH/<name>/source.mp4`` (a symbolic link, or a copy with ``--copy``). ``--prepare`` also runs
``utils/prepare_controls.py`` into the sub-folder (first.png, depth/track clips, cond.json with placeholder
prompts to edit); otherwise ``python -m longvie.eval.bench`` prepares them on first use.
LongVGenBench itself (100 videos of over a minute, 16 fps) is not released; this makes its layout.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..media.video_io import count_frames

__all__ = ["make_bench", "main"]

logger = logging.getLogger("longvie.eval")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _folder_name(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "video"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def make_bench(videos: list[Path], out: Path, min_frames: int = 81, copy: bool = False,
               prepare: bool = False, prepare_args: list[str] | None = None) -> list[Path]:
    """Make one sub-folder per video of at least ``min_frames`` frames; returns the folders made."""
    out.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in out.iterdir() if p.is_dir()}
    made = []
    for video in videos:
        try:
            frames = count_frames(video)
        except ValueError as err:
            logger.warning("skipping %s: %s", video, err)
            continue
        if frames < min_frames:
            logger.warning("skipping %s: %d frames, fewer than %d", video, frames, min_frames)
            continue
        folder = out / _folder_name(video, taken)
        folder.mkdir()
        target = folder / "source.mp4" if video.suffix.lower() == ".mp4" else folder / f"source{video.suffix}"
        if copy:
            shutil.copy2(video, target)
        else:
            target.symlink_to(video.resolve())
        if prepare:
            command = [sys.executable, str(REPO_ROOT / "utils" / "prepare_controls.py"), str(video), str(folder),
                       *(prepare_args or [])]
            if subprocess.run(command, check=False).returncode != 0:
                raise RuntimeError(f"utils/prepare_controls.py failed for {video}; run `{' '.join(command)}` to see why")
        made.append(folder)
        logger.info("%s: %d frames -> %s", video, frames, folder)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.eval.make_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path, help="long videos")
    parser.add_argument("--out", required=True, type=Path, help="benchmark folder to create or extend")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="keep videos of at least this many seconds at 16 fps (default: one 81-frame clip)")
    parser.add_argument("--min-frames", type=int, default=81,
                        help="keep videos of at least this many frames (default 81: one clip of the released model)")
    parser.add_argument("--copy", action="store_true", help="copy the videos instead of linking them")
    parser.add_argument("--prepare", action="store_true", help="also prepare controls with utils/prepare_controls.py")
    args, prepare_args = parser.parse_known_args(argv)
    if prepare_args and not args.prepare:
        parser.error(f"unrecognized arguments: {' '.join(prepare_args)} (options of prepare_controls.py need --prepare)")
    logging.basicConfig(level=logging.INFO, format="[longvie] %(message)s")
    missing = [v for v in args.videos if not v.is_file()]
    if missing:
        print(f"error: video {missing[0]} not found — check the path", file=sys.stderr)
        return 2
    min_frames = args.min_frames if args.min_seconds is None else max(args.min_frames, round(args.min_seconds * 16))
    made = make_bench(args.videos, args.out, min_frames, args.copy, args.prepare, prepare_args)
    print(f"{len(made)} of {len(args.videos)} video(s) in {args.out}; next: python -m longvie.eval.bench {args.out} "
          f"--out <results>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
