"""All video and image IO of the project: reading, writing and bringing frames to a resolution.

Frames are numpy ``uint8`` arrays of shape (T, H, W, 3) in RGB order unless stated otherwise.

Reading tries decord first (fast, random access) and falls back to PyAV. Writing goes through
imageio-ffmpeg (H.264, yuv420p, 16 fps by default) and is atomic: the target file appears only once
the encoder has finished (see :mod:`longvie.media.atomic`).

Three resize modes exist (SPEC §4):

* ``"auto"`` (the default): ``"stretch"`` when the source aspect ratio is within
  :data:`ASPECT_TOLERANCE` (10 %) of the target's, so upstream-like inputs (832x480, 16:9) give exactly
  upstream inference's result; otherwise ``"crop"``, with a one-line notice (a strongly different aspect
  ratio is better cropped than distorted).
* ``"crop"`` (the upstream *training* rule): scale so the frame covers the target, then centre-crop.
  Aspect ratio is preserved.
* ``"stretch"`` (the upstream *inference* rule, e.g. 832x480 -> 640x352): a plain resize.

All use PIL bicubic resampling, like upstream (inference.py resizes with PIL ``Image.resize``, whose
default filter for RGB images is bicubic).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Literal, Sequence, Union

import numpy as np
from PIL import Image

from .atomic import atomic_path

__all__ = [
    "read_video",
    "count_frames",
    "probe_video",
    "write_video",
    "load_image",
    "resize_center_crop",
    "resize_stretch",
    "fit_frames",
    "resolve_resize_mode",
    "aspect_mismatch",
    "ASPECT_TOLERANCE",
    "DEFAULT_RESIZE_MODE",
    "to_frame_array",
    "RESIZE_MODES",
]

RESIZE_MODES = ("auto", "crop", "stretch")
ResizeMode = Literal["auto", "crop", "stretch"]
DEFAULT_RESIZE_MODE: ResizeMode = "auto"
# "auto" stretches when max(a_src / a_dst, a_dst / a_src) - 1 <= ASPECT_TOLERANCE (a = width / height).
# 832x480 -> 640x352 differs by 4.9 %, 16:9 (1280x720, 1920x1080) by 2.3 %, 1.85:1 by 1.8 %; 3:2 (21 %),
# 4:3 (36 %), 1:1 and portrait sources are cropped.
ASPECT_TOLERANCE = 0.10

logger = logging.getLogger(__name__)
_CROP_NOTICES: set = set()
Frames = Union[np.ndarray, Image.Image, Sequence[Image.Image], Sequence[np.ndarray]]

_REENCODE_HINT = (
    "check that the file is a complete, readable video; if it is, re-encode it with "
    "`ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p fixed.mp4`"
)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence what native decoders (decord's bundled FFmpeg) print to file descriptor 2 while the block
    runs, e.g. "moov atom not found" for a truncated mp4: their errors reach us as exceptions, which our
    messages name, and the raw lines would come before our message. Python-level ``sys.stderr`` is
    untouched (this redirects the descriptor only, for the few milliseconds of an open)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_decord(path: Path):
    import decord

    with _native_stderr_silenced():
        return decord.VideoReader(str(path), ctx=decord.cpu(0))


def _read_with_decord(path: Path, max_frames: int | None) -> np.ndarray:
    reader = _open_decord(path)
    num = len(reader) if max_frames is None else min(len(reader), max_frames)
    if num == 0:
        raise ValueError("the video has no frames")
    return reader.get_batch(list(range(num))).asnumpy()


def _read_with_pyav(path: Path, max_frames: int | None) -> np.ndarray:
    import av

    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError("the video has no frames")
    return np.stack(frames)


_READERS = {"decord": _read_with_decord, "pyav": _read_with_pyav}


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise ValueError(f"{what} not found: {path} — check the path (relative paths are resolved from "
                         f"{Path.cwd()} unless documented otherwise)")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes), so it cannot be read — it was not written "
                         "completely (an interrupted copy or export?); write or copy it again")


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    *,
    backend: Literal["auto", "decord", "pyav"] = "auto",
) -> np.ndarray:
    """Decode a video into a (T, H, W, 3) uint8 RGB array.

    Args:
        path: video file.
        max_frames: decode at most this many frames from the start (all when None).
        backend: "auto" tries decord, then PyAV; "decord" or "pyav" forces one reader.

    Raises:
        ValueError: the file is missing or no reader can decode it; the message names the file and
            the fix.
    """
    path = Path(path)
    _check_exists(path, "video")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    names = ("decord", "pyav") if backend == "auto" else (backend,)
    errors = []
    for name in names:
        try:
            frames = _READERS[name](path, max_frames)
        except ImportError as err:
            errors.append(f"{name}: not installed ({err})")
            continue
        except Exception as err:  # decord raises its own error types; PyAV raises av.error.*
            errors.append(f"{name}: {err}".strip())
            continue
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            errors.append(f"{name}: unexpected decoded array {frames.shape} {frames.dtype}")
            continue
        return frames
    raise ValueError(
        f"cannot read video {path} ({'; '.join(errors)}) — " + _REENCODE_HINT.format(path=path)
    )


def _header_probe(path: Path) -> tuple[int, int, int] | None:
    """(frames, width, height) from the container header (PyAV; only the first frame is decoded, to
    check that the stream decodes), or None where the container does not record a frame count (e.g.
    some MKV/WebM files) or the first frame does not decode (the decoding readers then name the error)."""
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            frames, width, height = int(stream.frames or 0), stream.codec_context.width, stream.codec_context.height
            next(container.decode(stream))  # the first frame decodes (milliseconds): not just a header
    except Exception:  # noqa: BLE001 - any failure: fall back to the decoding readers
        return None
    return (frames, width, height) if frames > 0 and width > 0 and height > 0 else None


def probe_video(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(frames, width, height)`` of a video, from the container header where it records them
    (milliseconds), else by decoding (:func:`count_frames` and the first frame).

    Raises:
        ValueError: the file is missing or unreadable (message names the file and the fix).
    """
    path = Path(path)
    _check_exists(path, "video")
    probed = _header_probe(path)
    if probed is not None:
        return probed
    frames = count_frames(path)
    first = read_video(path, max_frames=1)[0]
    return frames, first.shape[1], first.shape[0]


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video (container header when it records it, else the decoder's index,
    else a full decode).

    Raises:
        ValueError: the file is missing or unreadable (message names the file and the fix).
    """
    path = Path(path)
    _check_exists(path, "video")
    probed = _header_probe(path)
    if probed is not None:
        return probed[0]
    errors = []
    try:
        num = len(_open_decord(path))
        if num > 0:
            return num
        errors.append("decord: the video has no frames")
    except Exception as err:
        errors.append(f"decord: {err}".strip())
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            num = sum(1 for _ in container.decode(stream))
        if num > 0:
            return num
        errors.append("pyav: the video has no frames")
    except Exception as err:
        errors.append(f"pyav: {err}".strip())
    raise ValueError(
        f"cannot read video {path} ({'; '.join(errors)}) — " + _REENCODE_HINT.format(path=path)
    )


def load_image(path, name: str = "image") -> Image.Image:
    """Load an image as an RGB PIL image.

    ``path`` is an image file, or an image already in memory: a PIL image (any mode; 16-bit and
    float grayscale are scaled to 8 bits) or an (H, W), (H, W, 1|3|4) array (uint8 in [0, 255] or
    float in [0, 1]).

    Raises:
        ValueError: the file is missing or not a decodable image, or the object is not an image
            (message names ``name``, the file and the fix).
    """
    if isinstance(path, Image.Image) or isinstance(path, np.ndarray) or hasattr(path, "__array__"):
        return Image.fromarray(_frame_to_uint8(path, name))
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name}: got {type(path).__name__}; give an image file path, a PIL image or an "
                         "(H, W, 3) / (H, W) array (uint8, or float in [0, 1])")
    path = Path(path)
    _check_exists(path, "image")
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_rgb(image)
    except Exception as err:
        raise ValueError(
            f"cannot read image {path} ({err}) — provide a PNG or JPEG file, e.g. re-save it with an "
            f"image editor or `ffmpeg -i {path} first.png`"
        ) from err


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _as_uint8_frame(frame) -> np.ndarray:
    if isinstance(frame, Image.Image):
        frame = np.asarray(frame.convert("RGB"))
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frame.dtype}")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | os.PathLike,
    frames: Frames | Iterable,
    fps: float = 16,
    crf: int | None = None,
    quality: float | None = None,
) -> Path:
    """Encode frames as an H.264 (yuv420p) mp4, atomically.

    Args:
        path: output file (its directory is created).
        frames: a (T, H, W, 3) uint8 array, or any iterable of (H, W, 3) uint8 arrays / PIL images
            (a generator streams frames without holding the whole video in memory). H and W must
            be even (a yuv420p requirement).
        fps: frame rate (16 for LongVie).
        crf: x264 constant rate factor (0 = visually lossless .. 51); default 18.
        quality: alternative to ``crf`` on imageio's 0..10 scale (10 = best, maps to crf 0).

    Returns:
        ``path`` as a Path. The output is deterministic: the same frames give the same bytes.
    """
    import imageio_ffmpeg

    if crf is not None and quality is not None:
        raise ValueError("pass crf or quality, not both")
    if quality is not None:
        if not 0 <= quality <= 10:
            raise ValueError(f"quality must be in [0, 10], got {quality}")
        crf = int((1 - quality / 10.0) * 51)
    crf = 18 if crf is None else int(crf)
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")

    iterator = iter(frames)
    try:
        first = _as_uint8_frame(next(iterator))
    except StopIteration:
        raise ValueError(f"write_video({path}): no frames to write") from None
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(
            f"write_video({path}): frame size {height}x{width} (HxW) must be even for H.264 yuv420p; "
            "crop or resize the frames (e.g. with longvie.media.video_io.fit_frames)"
        )

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            # bitexact + no metadata: identical frames give byte-identical files (resume tests).
            output_params=["-crf", str(crf), "-map_metadata", "-1", "-fflags", "+bitexact",
                           "-flags:v", "+bitexact"],
        )
        writer.send(None)  # start the encoder
        try:
            writer.send(first)
            for frame in iterator:
                frame = _as_uint8_frame(frame)
                if frame.shape[:2] != (height, width):
                    raise ValueError(
                        f"write_video({path}): frame of size {frame.shape[:2]} differs from the first "
                        f"frame's {(height, width)}"
                    )
                writer.send(frame)
        finally:
            writer.close()
    return path


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


def _resize_crop_image(image: Image.Image, height: int, width: int) -> Image.Image:
    src_w, src_h = image.size
    if (src_h, src_w) == (height, width):
        return image
    scale = max(height / src_h, width / src_w)
    new_w = max(width, round(src_w * scale))
    new_h = max(height, round(src_h * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left = (new_w - width) // 2
    top = (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def _resize_stretch_image(image: Image.Image, height: int, width: int) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.BICUBIC)


def _apply_per_frame(frames: Frames, height: int, width: int, resize_one):
    """Apply a PIL resize to every frame, returning the same kind of container as given."""
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    if isinstance(frames, Image.Image):
        return resize_one(frames.convert("RGB"), height, width)
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:  # a single (H, W, 3) frame
            return np.asarray(resize_one(Image.fromarray(frames), height, width))
        if frames.ndim != 4:
            raise ValueError(f"expected (T, H, W, 3) or (H, W, 3) frames, got shape {frames.shape}")
        if frames.shape[1:3] == (height, width):
            return frames
        return np.stack([np.asarray(resize_one(Image.fromarray(f), height, width)) for f in frames])
    # A sequence of PIL images or arrays: keep the element type.
    out = []
    for frame in frames:
        if isinstance(frame, Image.Image):
            out.append(resize_one(frame.convert("RGB"), height, width))
        else:
            out.append(np.asarray(resize_one(Image.fromarray(np.asarray(frame)), height, width)))
    return out


def resize_center_crop(frames: Frames, height: int, width: int):
    """Scale so the frames cover ``height`` x ``width`` (short side first), then centre-crop.

    Accepts a (T, H, W, 3) or (H, W, 3) uint8 array, a PIL image, or a list of either; returns the
    same kind. This is the upstream training rule.
    """
    return _apply_per_frame(frames, height, width, _resize_crop_image)


def resize_stretch(frames: Frames, height: int, width: int):
    """Plain resize to ``height`` x ``width`` (aspect ratio not kept): the upstream inference rule."""
    return _apply_per_frame(frames, height, width, _resize_stretch_image)


def aspect_mismatch(src_height: int, src_width: int, height: int, width: int) -> float:
    """Relative aspect-ratio difference max(a/b, b/a) - 1 of a source and a target size (0 = same)."""
    ratio = (src_width / src_height) / (width / height)
    return max(ratio, 1 / ratio) - 1


def resolve_resize_mode(src_height: int, src_width: int, height: int, width: int,
                        mode: ResizeMode = DEFAULT_RESIZE_MODE) -> str:
    """The concrete rule ("crop" or "stretch") ``mode`` applies to a source of this size."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; use one of {RESIZE_MODES}")
    if mode != "auto":
        return mode
    # A small epsilon keeps sizes exactly at the tolerance on the stretch side despite float rounding.
    if aspect_mismatch(src_height, src_width, height, width) <= ASPECT_TOLERANCE + 1e-9:
        return "stretch"
    return "crop"


def _source_size(frames: Frames) -> tuple[int, int] | None:
    """(H, W) of the first frame, or None for an empty sequence."""
    if isinstance(frames, Image.Image):
        return frames.size[1], frames.size[0]
    if isinstance(frames, np.ndarray):
        return tuple(frames.shape[-3:-1]) if frames.ndim == 4 else tuple(frames.shape[:2])
    for frame in frames:
        if isinstance(frame, Image.Image):
            return frame.size[1], frame.size[0]
        return tuple(np.asarray(frame).shape[:2])
    return None


def _notice_crop(src: tuple[int, int], height: int, width: int) -> None:
    """One line per distinct source/target size pair and process (not one per frame or clip)."""
    key = (src, height, width)
    if key in _CROP_NOTICES:
        return
    _CROP_NOTICES.add(key)
    logger.warning("resize auto: %dx%d differs from %dx%d in aspect ratio by %.0f%% (> %.0f%%), so it is "
                   "resized to cover and centre-cropped; --resize stretch distorts it instead",
                   src[1], src[0], width, height, 100 * aspect_mismatch(*src, height, width), 100 * ASPECT_TOLERANCE)


def fit_frames(frames: Frames, height: int, width: int, mode: ResizeMode = DEFAULT_RESIZE_MODE):
    """Bring frames to ``height`` x ``width`` with ``mode`` "auto" (default), "crop" or "stretch".

    "auto" decides from the first frame's size (see :func:`resolve_resize_mode`); frames already at the
    target size are returned unchanged by every mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; use one of {RESIZE_MODES}")
    if mode == "auto":
        src = _source_size(frames)
        if src is None or min(src) < 1:
            mode = "crop"  # nothing to measure; _apply_per_frame reports bad shapes
        else:
            mode = resolve_resize_mode(src[0], src[1], height, width, "auto")
            if mode == "crop" and src != (height, width):
                _notice_crop(src, height, width)
    if mode == "crop":
        return resize_center_crop(frames, height, width)
    return resize_stretch(frames, height, width)


FRAME_FORMS = ("a (T, H, W, 3) or grayscale (T, H, W) array, uint8 in [0, 255] or float in [0, 1]; a PIL "
               "image; or a list of PIL images / (H, W, 3) / (H, W) arrays")


def _frame_to_uint8(frame, name: str) -> np.ndarray:
    """One frame (PIL image, (H, W), (H, W, 1|3|4) array; uint8/int or float in [0, 1]) -> (H, W, 3) uint8."""
    if isinstance(frame, Image.Image):
        return np.asarray(_pil_to_rgb(frame))
    try:
        array = np.asarray(frame)
    except Exception:  # noqa: BLE001 - anything numpy cannot take is the caller's type error
        array = None
    if array is None or array.dtype == object or array.dtype.kind not in "uif":
        raise ValueError(f"{name}: cannot use {type(frame).__name__} as a frame; give {FRAME_FORMS}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"{name}: a frame of shape {array.shape} is not an image; give {FRAME_FORMS}")
    array = array[..., :3] if array.shape[-1] == 4 else array  # RGBA: alpha dropped
    array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
    return _values_to_uint8(array, name)


def _values_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: float frames hold NaN or infinite values; give values in [0, 1]")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(f"{name}: float frames must lie in [0, 1], got values in [{low:g}, {high:g}] (for "
                             "0-255 values pass a uint8 array; for [-1, 1] values pass (x + 1) / 2)")
        return np.ascontiguousarray(np.rint(array * 255.0).astype(np.uint8))
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(f"{name}: integer frames must lie in [0, 255], got values in [{low}, {high}]")
    return np.ascontiguousarray(array.astype(np.uint8))


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of any PIL image; 16/32-bit integer and float grayscale are scaled to 8 bits
    (by 255 when the values fit 8 bits, else by 65535; float images in [0, 1] by 1), not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image).astype(np.float64)
        peak = float(values.max()) if values.size else 0.0
        scale = 1.0 if image.mode == "F" and peak <= 1 else (255.0 if peak <= 255 else 65535.0)
        return Image.fromarray(np.rint(np.clip(values / scale, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def to_frame_array(frames: Frames, name: str = "frames") -> np.ndarray:
    """Convert frames to one (T, H, W, 3) uint8 array.

    Accepted: a (T, H, W, 3|1|4) or grayscale (T, H, W) array (uint8/int in [0, 255] or float in
    [0, 1]); a PIL image or an (H, W, 1|3|4) array (one frame; a 3-D array whose last axis is 1, 3
    or 4 is read as one frame, any other as a grayscale video); a list/tuple of PIL images or
    (H, W, 3) / (H, W) arrays.
    Anything else raises a ``ValueError`` that names ``name`` and the accepted forms.
    """
    if isinstance(frames, Image.Image):
        return _frame_to_uint8(frames, name)[None]
    if hasattr(frames, "detach") and hasattr(frames, "numpy"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:  # one (H, W, 1|3|4) frame, else a grayscale video (T, H, W)
            frames = frames[None] if frames.shape[-1] in (1, 3, 4) else frames[..., None]
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or 0 in frames.shape:
            raise ValueError(f"{name}: an array of shape {frames.shape} is not a video; give {FRAME_FORMS}")
        if frames.dtype == object or frames.dtype.kind not in "uif":
            raise ValueError(f"{name}: an array of dtype {frames.dtype} is not a video; give {FRAME_FORMS}")
        frames = frames[..., :3] if frames.shape[-1] == 4 else frames
        frames = np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames
        return _values_to_uint8(frames, name)
    if isinstance(frames, (str, bytes, os.PathLike)) or not hasattr(frames, "__iter__"):
        raise ValueError(f"{name}: got {type(frames).__name__}; give {FRAME_FORMS}")
    converted = [_frame_to_uint8(frame, f"{name}[{i}]") for i, frame in enumerate(frames)]
    if not converted:
        raise ValueError(f"{name} is empty: it needs at least one frame ({FRAME_FORMS})")
    shapes = {f.shape for f in converted}
    if len(shapes) > 1:
        first = converted[0].shape
        odd = next(i for i, f in enumerate(converted) if f.shape != first)
        raise ValueError(f"{name}: frames differ in size ({name}[0] is {first[1]}x{first[0]}, {name}[{odd}] is "
                         f"{converted[odd].shape[1]}x{converted[odd].shape[0]}); give frames of one size")
    return np.stack(converted)
