"""Depth control videos (SPEC §5): whole-video disparity .npy -> depth_00.mp4, depth_01.mp4, ...

    python utils/depth_npy2mp4.py DEPTH.npy OUT_DIR

The disparity (T, H, W) from get_depth.py is first cut to whole clips (1 + 80k frames; trailing
frames that do not fill a clip are dropped, with a message), then normalised ONCE over all those
frames — p5, p95 = percentiles 5 and 95, d' = (p95 - clip(d, p5, p95)) / (p95 - p5), near = dark —
and written as 8-bit grey RGB H.264 clips of 81 frames at 16 fps (clip i = frames 80i..80i+80).
A depth without variation (p95 == p5) becomes constant mid-grey, with a warning.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterable

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from longvie.controls.driving_video import plan_clips
from longvie.controls.primitives import CONSTANT_DEPTH_GREY, clip_ranges, depth_bounds, disparity_to_grey, grey_to_rgb
from longvie.media.video_io import write_video


def load_disparity(path: str | Path) -> np.ndarray:
    """A (T, H, W) disparity .npy, memory-mapped (a long video's depth need not fit in memory twice).

    Raises:
        ValueError: missing, unreadable or wrongly shaped file (message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"depth file not found: {path} — create it with utils/get_depth.py VIDEO {path}")
    try:
        disparity = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read depth file {path} ({err}) — it must be a .npy written by utils/get_depth.py") from err
    if disparity.ndim != 3 or disparity.shape[0] == 0:
        raise ValueError(f"{path}: expected a (T, H, W) disparity array, got shape {disparity.shape}")
    return disparity


def normalize_depth_for_clips(disparity: np.ndarray, source: str | Path = "depth",
                              log: Callable[[str], None] = print) -> np.ndarray:
    """Cut to whole clips, then normalise globally: (T, H, W) float -> (1 + 80k, H, W) uint8, near = 0."""
    ranges = plan_clips(len(disparity), source, log)
    used = disparity[: ranges[-1][1]]
    p_low, p_high = depth_bounds(used)
    if p_high <= p_low:
        log(f"warning: {source}: the depth has no variation (p95 == p5 == {p_low:g}); writing constant "
            f"mid-grey ({CONSTANT_DEPTH_GREY}) depth — check that the depth estimator ran on the right video")
    # clip by clip, so that only one clip is held as float64 at a time
    grey = np.empty(used.shape, dtype=np.uint8)
    for start in range(0, len(used), 81):
        grey[start:start + 81] = disparity_to_grey(used[start:start + 81], p_low, p_high)
    return grey


def write_depth_clips(depth_grey: np.ndarray, out_dir: str | Path,
                      progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
    """Write depth_XX.mp4 (grey RGB, H.264, 16 fps) for every clip of a normalised depth video.

    Args:
        depth_grey: (1 + 80k, H, W) uint8 globally normalised depth.

    Returns:
        The written paths, in clip order.
    """
    out_dir = Path(out_dir)
    ranges = clip_ranges(len(depth_grey))
    paths = []
    for index, (start, end) in enumerate(progress(ranges) if progress else ranges):
        paths.append(write_video(out_dir / f"depth_{index:02d}.mp4", grey_to_rgb(depth_grey[start:end]), fps=16))
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Turn a whole-video disparity .npy into globally normalised 81-frame depth clips "
                    "depth_00.mp4, depth_01.mp4, ... (near = dark, 16 fps).")
    parser.add_argument("depth", help="(T, H, W) disparity .npy written by utils/get_depth.py")
    parser.add_argument("out_dir", help="output folder for depth_XX.mp4")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    try:
        depth_grey = normalize_depth_for_clips(load_disparity(args.depth), source=args.depth)
        paths = write_depth_clips(depth_grey, args.out_dir, progress=lambda it: tqdm(it, desc="depth", unit="clip"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} depth video(s) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
