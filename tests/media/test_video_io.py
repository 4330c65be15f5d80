"""Tests for longvie.media.video_io and longvie.media.atomic (CPU, a few seconds)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longvie.media import atomic
from longvie.media.video_io import (
    count_frames,
    fit_frames,
    load_image,
    read_video,
    resize_center_crop,
    resize_stretch,
    to_frame_array,
    write_video,
)


def smooth_clip(num_frames=9, height=48, width=64):
    """A smooth moving pattern: H.264 reproduces it closely, so round-trip errors are small."""
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    base = (128 + 60 * np.sin(x / 7 + t / 3) + 50 * np.cos(y / 5)).clip(0, 255)
    return np.stack([base, 0.5 * base, 255 - base], axis=-1).astype(np.uint8)


def temp_files(directory: Path):
    return [p.name for p in directory.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_write_read_round_trip(tmp_path, backend):
    frames = smooth_clip()
    path = write_video(tmp_path / "clip.mp4", frames, fps=16)
    decoded = read_video(path, backend=backend)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 6
    assert count_frames(path) == len(frames)
    assert read_video(path, max_frames=4, backend=backend).shape[0] == 4
    assert temp_files(tmp_path) == []


def test_readers_agree_and_writes_are_deterministic(tmp_path):
    frames = smooth_clip()
    a = write_video(tmp_path / "a.mp4", frames)
    b = write_video(tmp_path / "b.mp4", [Image.fromarray(f) for f in frames])  # list of PIL
    assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(read_video(a, backend="decord"), read_video(a, backend="pyav"))


def test_write_video_streams_a_generator(tmp_path):
    frames = smooth_clip(num_frames=5)
    path = write_video(tmp_path / "gen.mp4", (f for f in frames), quality=10)
    assert count_frames(path) == 5


def test_failed_write_leaves_no_partial_file(tmp_path):
    frames = smooth_clip()
    target = tmp_path / "video.mp4"

    def frames_then_crash():
        yield frames[0]
        yield frames[1]
        raise RuntimeError("killed mid-encode")

    with pytest.raises(RuntimeError):
        write_video(target, frames_then_crash())
    assert not target.exists() and list(tmp_path.iterdir()) == []

    # An existing file survives a failed overwrite unchanged.
    write_video(target, frames)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_video(target, frames_then_crash())
    assert target.read_bytes() == before and temp_files(tmp_path) == []


def test_write_video_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8))


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)
    for call in (read_video, count_frames):
        with pytest.raises(ValueError, match="broken.mp4"):
            call(bad)
    with pytest.raises(ValueError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="broken.mp4"):
        load_image(bad)


def test_load_image_is_rgb(tmp_path):
    Image.new("L", (20, 10), 7).save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.mode == "RGB" and image.size == (20, 10)


def test_resize_rules():
    frames = np.zeros((3, 48, 83, 3), np.uint8)
    frames[:, :, 40:43] = 255  # a white vertical bar in the middle
    cropped = resize_center_crop(frames, 32, 32)
    stretched = resize_stretch(frames, 32, 32)
    assert cropped.shape == stretched.shape == (3, 32, 32, 3)
    # Crop keeps the aspect ratio: the 3-px bar becomes ~2 px wide; stretch squeezes it to ~1.2 px.
    bar_mass = lambda frames: frames[0, 16, :, 0].astype(int).sum()  # noqa: E731
    assert bar_mass(cropped) > 1.4 * bar_mass(stretched)
    # Same kinds in and out; identity when already at size.
    assert fit_frames(frames, 48, 83) is frames
    image = fit_frames(Image.fromarray(frames[0]), 20, 30, mode="stretch")
    assert isinstance(image, Image.Image) and image.size == (30, 20)
    as_list = fit_frames([Image.fromarray(f) for f in frames], 16, 16)
    assert len(as_list) == 3 and as_list[0].size == (16, 16)
    assert fit_frames(frames[0], 10, 12).shape == (10, 12, 3)
    assert to_frame_array(as_list).shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="resize mode"):
        fit_frames(frames, 8, 8, mode="zoom")


def test_center_crop_832x480_to_640x352():
    """The released-model case: 832x480 sources are scaled to 640x369 and 17 rows are cropped."""
    frame = np.zeros((480, 832, 3), np.uint8)
    frame[:240] = 255  # top half white
    out = resize_center_crop(frame, 352, 640)
    assert out.shape == (352, 640, 3)
    # 369 rows after scaling, crop top = 8: white ends near row 184 - 8 = 176.
    assert out[170, 320, 0] > 200 and out[182, 320, 0] < 50


def test_atomic_helpers(tmp_path):
    atomic.atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").read_text().strip().startswith("{")
    with pytest.raises(TypeError):
        atomic.atomic_write_json(tmp_path / "m.json", {"a": object()})
    assert '"a": 1' in (tmp_path / "m.json").read_text()

    with pytest.raises(RuntimeError):
        with atomic.atomic_write(tmp_path / "x.bin") as f:
            f.write(b"partial")
            raise RuntimeError("crash")
    assert not (tmp_path / "x.bin").exists()

    atomic.atomic_save_npy(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
    assert np.load(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]

    import torch
    from safetensors.torch import load_file

    atomic.atomic_save_tensors(tmp_path / "t.safetensors", {"n": torch.ones(2), "f": np.zeros(3, np.uint8)})
    loaded = load_file(tmp_path / "t.safetensors")
    assert loaded["n"].tolist() == [1, 1] and loaded["f"].dtype == torch.uint8
    atomic.atomic_save_tensors(tmp_path / "t.pt", {"n": torch.ones(2)})
    assert torch.load(tmp_path / "t.pt")["n"].sum() == 2
    assert temp_files(tmp_path) == []
