"""Point-track control videos (SPEC §5): track_00.mp4, track_01.mp4, ... for a driving video.

For every 81-frame clip (clip i = frames 80i..80i+80) a regular grid of points (default 50 x 50 as
upstream's script and the released shared/examples/ride_horse; the LongVie 2 paper's 70 x 70 = 4,900
with --grid 70) is placed on the clip's first frame, tracked through the clip, and drawn on black as
small rectangles (aspect 1.5:1), one colour per point from its start position: R = x, G = y and, when
the depth is given, B from the globally normalised depth (far = blue), as upstream. With depth, each
frame's marks are drawn far to near (the depth video sampled under each mark), so nearer points cover
farther ones. Occluded points are drawn too, as upstream (and so the released weights) did;
--hide-occluded leaves them out.

    python utils/get_track.py VIDEO OUT_DIR [--depth DEPTH.npy] [--grid 50] [--track-backend lk]

``--depth`` takes the whole-video disparity written by get_depth.py (it is normalised over the whole
video here, exactly as depth_npy2mp4.py does). Pass the same --height/--width/--frame-step as to
get_depth.py so that both see the same frames. OUT_DIR must be new, empty or a condition folder of ours (a folder
of other files is refused, exit 2; the video and --depth may lie in it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from longvie.controls.condition_folder import claim_condition_folder, mark_condition_folder
from longvie.controls.driving_video import add_video_arguments, load_driving_video, working_size
from longvie.controls.point_tracking import BACKENDS, build_tracker
from longvie.controls.track_video import add_track_arguments, write_track_clips
from longvie.media.output_dir import OutputDirError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Render point-track control videos track_XX.mp4 (one per 81-frame clip) for a driving video.")
    parser.add_argument("video", help="driving video (any format ffmpeg reads)")
    parser.add_argument("out_dir", help="output folder for track_00.mp4, track_01.mp4, ...")
    parser.add_argument("--depth", default=None,
                        help="whole-video disparity .npy from get_depth.py, for depth-aware colours (optional)")
    add_track_arguments(parser)
    parser.add_argument("--track-backend", choices=BACKENDS, default="lk",
                        help="lk: OpenCV Lucas-Kanade, weight-free (default); cotracker: CoTracker3 via torch.hub")
    parser.add_argument("--device", default=None, help="torch device for cotracker (default: cuda when available)")
    add_video_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from utils.depth_npy2mp4 import load_disparity, normalize_depth_for_clips

    try:  # OUT_DIR: new, empty or a condition folder of ours (the video and --depth may lie in it)
        claim_condition_folder(args.out_dir, inputs=[args.video, *([args.depth] if args.depth else [])])
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        frames = load_driving_video(args.video, *working_size(args), args.frame_step)
        depth_grey = None
        if args.depth:
            depth_grey = normalize_depth_for_clips(load_disparity(args.depth), source=args.depth)
            depth_grey = depth_grey[: len(frames)]
        tracker = build_tracker(args.track_backend, args.device)
        mark_condition_folder(args.out_dir)
        paths = write_track_clips(frames, args.out_dir, tracker, args.grid, depth_grey, args.point_size,
                                  progress=lambda it: tqdm(it, desc="tracks", unit="clip"),
                                  draw_occluded=not args.hide_occluded)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} track video(s) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
