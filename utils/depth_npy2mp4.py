"""Depth control videos (SPEC §5): whole-video disparity .npy -> depth_00.mp4, depth_01.mp4, ...

    python utils/depth_npy2mp4.py DEPTH.npy OUT_DIR

The disparity (T, H, W) from get_depth.py is first cut to whole clips (1 + 80k frames; trailing
frames that do not fill a clip are dropped, with a message), then normalised ONCE over all those
frames — p5, p95 = percentiles 5 and 95, d' = (p95 - clip(d, p5, p95)) / (p95 - p5), near = dark —
and written as 8-bit grey RGB H.264 clips of 81 frames at 16 fps (clip i = frames 80i..80i+80).
A depth without variation (p95 == p5) becomes constant mid-grey, with a warning. OUT_DIR must be new,
empty or a condition folder of ours (a folder of other files is refused, exit 2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from longvie.controls.condition_folder import claim_condition_folder, mark_condition_folder
from longvie.controls.depth_video import load_disparity, normalize_depth_for_clips, write_depth_clips
from longvie.media.output_dir import OutputDirError


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

    try:  # OUT_DIR: new, empty or a condition folder of ours (the .npy itself may lie in it)
        claim_condition_folder(args.out_dir, inputs=[args.depth])
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        depth_grey = normalize_depth_for_clips(load_disparity(args.depth), source=args.depth)
        mark_condition_folder(args.out_dir)
        paths = write_depth_clips(depth_grey, args.out_dir, progress=lambda it: tqdm(it, desc="depth", unit="clip"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} depth video(s) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
