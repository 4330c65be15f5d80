"""One command from a driving video to a ready LongVie condition folder.

    python utils/prepare_controls.py VIDEO OUT [--vda-checkpoint video_depth_anything_vitl.pth] [--grid 50]
                                     [--caption-model Qwen/Qwen2.5-VL-7B-Instruct]

writes
    OUT/first.png                  the first frame (the sampler's input image; edit it if you like)
    OUT/depth_00.mp4 ...           globally normalised depth clips (near = dark), 81 frames, 16 fps
    OUT/track_00.mp4 ...           point-track clips on black, 81 frames, 16 fps
    OUT/cond.json                  [{"text", "depth", "track"}, ...] one object per clip, paths relative

Clip i covers frames 80i..80i+80; trailing frames that do not fill a clip are dropped (reported).
Without --caption-model every "text" is a placeholder that you must replace with a description of
the clip before sampling: such entries carry ``"placeholder": true`` and their text starts with
"PLACEHOLDER for clip " (longvie.controls.captioning.is_placeholder_prompt), and the sampler refuses
them unless --allow-placeholder-prompts is given. With --depth-npy (a disparity you already have,
e.g. from a renderer) no depth model is needed, and the default tracker (lk) needs no weights either.

OUT must be new, empty, or a folder this script (or another control tool of ours) wrote: a folder
holding other files is refused (exit 2) before anything is read, so nothing of yours is overwritten;
the driving video and --depth-npy may lie inside OUT. The folder is built in a hidden temporary
folder next to OUT and moved into place only when every file is written, so a failed or interrupted
run leaves no half-made OUT (an existing OUT of ours keeps its old files until the new ones replace
them).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvie.controls.condition_folder import (
    disparity_from_file,
    placeholder_captions,
    publish,
    save_png,
    staging_folder,
    write_cond,
)
from longvie.controls.depth_estimators import add_depth_arguments, depth_estimator_from_args
from longvie.controls.driving_video import add_video_arguments, load_driving_video, working_size
from longvie.controls.point_tracking import BACKENDS as TRACK_BACKENDS
from longvie.controls.primitives import clip_ranges
from longvie.controls.track_video import add_track_arguments
from longvie.media.atomic import atomic_save_npy
from longvie.media.output_dir import OutputDirError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Driving video -> LongVie condition folder: first.png, depth_XX.mp4, track_XX.mp4, cond.json.")
    parser.add_argument("video", help="driving video (any format ffmpeg reads), at least 81 frames")
    parser.add_argument("out", help="output folder")
    add_video_arguments(parser)
    add_depth_arguments(parser)
    parser.add_argument("--depth-npy", default=None,
                        help="use this (T, H, W) disparity .npy (large = near) instead of running a depth model")
    parser.add_argument("--save-depth-npy", action="store_true", help="also keep the raw disparity as OUT/depth.npy")
    tracks = parser.add_argument_group("point tracks")
    tracks.add_argument("--track-backend", choices=TRACK_BACKENDS, default="lk",
                        help="lk: OpenCV Lucas-Kanade, weight-free (default); cotracker: CoTracker3 via torch.hub")
    add_track_arguments(tracks)
    captions = parser.add_argument_group("captions")
    captions.add_argument("--caption-model", default=None,
                          help="Qwen2.5-VL hub id or local directory (e.g. Qwen/Qwen2.5-VL-7B-Instruct); "
                               "without it cond.json gets placeholder texts for you to edit")
    return parser.parse_args(argv)


def build_folder(args, work: Path, log=print) -> tuple[bool, str | None]:
    """Write the whole condition folder into ``work``; returns (captioned, caption error or None)."""
    from tqdm import tqdm

    from longvie.controls.depth_video import normalize_depth_for_clips, write_depth_clips
    from longvie.controls.point_tracking import build_tracker
    from longvie.controls.track_video import write_track_clips

    frames = load_driving_video(args.video, *working_size(args), args.frame_step)
    ranges = clip_ranges(len(frames))
    log(f"{args.video}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} -> {len(ranges)} clip(s)")
    tracker = build_tracker(args.track_backend, args.device)  # fail early, before the slow depth stage
    save_png(work / "first.png", frames[0])

    if args.depth_npy:
        disparity = disparity_from_file(args.depth_npy, frames)
    else:
        estimator = depth_estimator_from_args(args, precomputed="pass --depth-npy DEPTH.npy")
        disparity = estimator(frames, progress=lambda it: tqdm(it, desc="depth estimation", unit="batch"))
        del estimator
    if args.save_depth_npy:
        atomic_save_npy(work / "depth.npy", disparity)
    depth_grey = normalize_depth_for_clips(disparity, source=args.depth_npy or args.video)
    del disparity
    depth_paths = write_depth_clips(depth_grey, work, progress=lambda it: tqdm(it, desc="depth videos", unit="clip"))
    track_paths = write_track_clips(frames, work, tracker, args.grid, depth_grey, args.point_size,
                                    progress=lambda it: tqdm(it, desc="track videos", unit="clip"),
                                    draw_occluded=not args.hide_occluded)

    # Placeholders first: the folder is complete (after editing) even if captioning fails below.
    write_cond(work, placeholder_captions(len(ranges)), depth_paths, track_paths, placeholder=True)
    if not args.caption_model:
        return False, None
    try:
        from longvie.controls.captioning import QwenCaptioner

        captioner = QwenCaptioner.from_pretrained(args.caption_model, args.local_files, args.device)
        texts = [captioner.describe(frames[start:end]) for start, end in tqdm(ranges, desc="captions", unit="clip")]
    except (ValueError, RuntimeError, OSError) as err:
        return False, str(err)
    write_cond(work, texts, depth_paths, track_paths)
    return True, None


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        work = staging_folder(out, inputs=[args.video, *([args.depth_npy] if args.depth_npy else [])])
    except OutputDirError as err:  # the user's folder (or a file): nothing was read or written
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        captioned, caption_error = build_folder(args, work)
        publish(work, out)
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as err:
        print(f"error: {err} (nothing was written to {out})", file=sys.stderr)
        return 1
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    cond_path = out / "cond.json"
    if caption_error is not None:
        print(f"error: captioning failed ({caption_error}); {cond_path} holds placeholder captions (marked "
              "\"placeholder\": true) — edit them by hand or rerun with a reachable --caption-model", file=sys.stderr)
        return 1
    print(f"wrote {cond_path}, plus first.png, depth_XX.mp4 and track_XX.mp4")
    if not captioned:
        print(f"NOTE: the captions in {cond_path} are placeholders — replace each \"text\" with a description "
              "of its clip and delete its \"placeholder\" key (or rerun with --caption-model "
              "Qwen/Qwen2.5-VL-7B-Instruct); the sampler refuses placeholders unless --allow-placeholder-prompts.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
