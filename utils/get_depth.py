"""Relative depth (disparity) of a WHOLE driving video, saved as one (T, H, W) float32 .npy.

    python utils/get_depth.py VIDEO DEPTH.npy      # Video Depth Anything ViT-L via the HF cache (upstream)
    python utils/get_depth.py VIDEO DEPTH.npy --vda-checkpoint video_depth_anything_vitl.pth
    python utils/get_depth.py VIDEO DEPTH.npy --depth-backend depth-anything-v2   # per frame, flickers more

Then ``utils/depth_npy2mp4.py DEPTH.npy OUT_DIR`` normalises it over the whole video and writes the
depth clips. T is the number of frames the clips use (1 + 80k; trailing frames that do not fill a
clip are dropped, with a message), after --frame-step and at the working size (default 832x480: bicubic
resize to cover, centre crop, as upstream; --height/--width or --keep-size change it).
See :mod:`longvie.controls.depth_estimators` for the backends.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvie.controls.depth_estimators import add_depth_arguments, depth_estimator_from_args
from longvie.controls.driving_video import add_video_arguments, load_driving_video, working_size
from longvie.media.atomic import atomic_save_npy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Estimate per-frame relative depth (disparity, large = near) for a whole video -> .npy (T, H, W) float32.")
    parser.add_argument("video", help="driving video (any format ffmpeg reads)")
    parser.add_argument("out", help="output .npy path")
    add_depth_arguments(parser)
    add_video_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    try:
        frames = load_driving_video(args.video, *working_size(args), args.frame_step)
        estimator = depth_estimator_from_args(
            args, precomputed="skip this step with `python utils/depth_npy2mp4.py DEPTH.npy OUT_DIR`")
        disparity = estimator(frames, progress=lambda it: tqdm(it, desc="depth", unit="batch"))
        atomic_save_npy(args.out, disparity)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"saved depth {disparity.shape} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
