"""The driving video: read it, bring it to the working size, and cut it into whole 81-frame clips.

Every extraction script reads the driving video through :func:`load_driving_video`, so depth,
tracks and the first frame always come from the same frames: same frame step, same size, same
trailing frames dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..media.video_io import fit_frames, read_video
from .primitives import CLIP_FRAMES, CLIP_STRIDE, clip_ranges


def plan_clips(num_frames: int, source: str | Path, log: Callable[[str], None] = print) -> list[tuple[int, int]]:
    """Clip ranges of a ``num_frames`` video; reports dropped trailing frames.

    Clip i covers frames 80i .. 80i+80 (81 frames, one shared with the next clip). A video of
    1 + 80k + r frames (0 < r < 80) gives k clips; its last r frames do not fill a clip and are dropped,
    which is reported through ``log``.

    Raises:
        ValueError: fewer than 81 frames (the message names ``source`` and the fix).
    """
    if num_frames < CLIP_FRAMES:
        raise ValueError(
            f"{source}: {num_frames} frames, but one LongVie clip needs {CLIP_FRAMES} "
            f"(clip i = frames {CLIP_STRIDE}i..{CLIP_STRIDE}i+{CLIP_STRIDE}). Use a longer video"
            + (", or a smaller --frame-step" if num_frames > 1 else "") + ".")
    ranges = clip_ranges(num_frames)
    dropped = num_frames - ranges[-1][1]
    if dropped:
        log(f"{source}: {num_frames} frames -> {len(ranges)} clip(s) of {CLIP_FRAMES} frames using frames "
            f"0..{ranges[-1][1] - 1}; the last {dropped} frame(s) do not fill a clip and are dropped "
            f"(a video of 1 + 80k frames uses every frame).")
    return ranges


def even_size(height: int, width: int) -> tuple[int, int]:
    """The largest even size not above (height, width): H.264 yuv420p needs even dimensions."""
    return height - height % 2, width - width % 2


def load_driving_video(
    path: str | Path,
    height: int | None = None,
    width: int | None = None,
    frame_step: int = 1,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Decode, subsample, resize and trim a driving video to whole clips.

    Args:
        path: any video ffmpeg can decode.
        height, width: working size (both or neither). Resized by scaling to cover then
            centre-cropping (the project's default rule). Default: the source size, rounded down
            to even numbers by a centre crop.
        frame_step: keep every ``frame_step``-th frame (e.g. 2 brings 30 fps near LongVie's 16 fps).

    Returns:
        (T, H, W, 3) uint8 frames, T = 1 + 80k (k >= 1).

    Raises:
        ValueError: unreadable video or fewer than 81 frames after subsampling (message names the file).
    """
    if (height is None) != (width is None):
        raise ValueError("give both --height and --width, or neither (keep the source size)")
    if frame_step < 1:
        raise ValueError(f"--frame-step must be >= 1, got {frame_step}")
    frames = read_video(path)[::frame_step]
    source_h, source_w = frames.shape[1:3]
    if height is None:
        height, width = even_size(source_h, source_w)
        if (height, width) != (source_h, source_w):
            log(f"{path}: {source_w}x{source_h} has an odd side; centre-cropping to {width}x{height} (H.264 needs even sizes)")
    elif height % 2 or width % 2 or height < 2 or width < 2:
        raise ValueError(f"--height/--width must be positive even numbers (H.264 yuv420p), got {height}x{width}")
    ranges = plan_clips(len(frames), path, log)
    frames = frames[: ranges[-1][1]]
    if (height, width) != (source_h, source_w):
        frames = fit_frames(frames, height, width, mode="crop")
    return np.ascontiguousarray(frames)


# Upstream's get_depth.py / get_track.py bring every driving video to 480x832 (scale to cover, centre
# crop) and the released control videos are 832x480: the extraction scripts' default working size.
EXTRACTION_SIZE = (480, 832)


def working_size(args) -> tuple[int | None, int | None]:
    """(height, width) for :func:`load_driving_video` from the script options: --height/--width when
    given, the source size with --keep-size, else :data:`EXTRACTION_SIZE` (832x480, as upstream)."""
    if args.height is not None or args.width is not None:
        return args.height, args.width
    return (None, None) if args.keep_size else EXTRACTION_SIZE


def add_video_arguments(parser) -> None:
    """The driving-video options shared by every extraction script."""
    group = parser.add_argument_group("driving video")
    group.add_argument("--height", type=int, default=None,
                       help="working height (with --width; default 480, as upstream's extraction scripts and the "
                            "released example). The sampler resizes later")
    group.add_argument("--width", type=int, default=None, help="working width (with --height; default 832)")
    group.add_argument("--keep-size", action="store_true",
                       help="keep the source size (rounded down to even numbers) instead of 832x480")
    group.add_argument("--frame-step", type=int, default=1,
                       help="keep every N-th frame (default 1; e.g. 2 for a 30 fps source, LongVie runs at 16 fps)")
