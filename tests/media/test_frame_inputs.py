"""Frames and images given in memory: the accepted forms convert exactly, the others are refused
with a message naming the argument and the accepted forms (issue 11, item 7)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from longvie.media.video_io import load_image, to_frame_array


def test_float_video_in_unit_range_is_scaled_exactly():
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    for dtype in (np.float32, np.float64):
        assert np.array_equal(to_frame_array(uint8.astype(dtype) / 255), uint8)
    with pytest.raises(ValueError, match=r"dense_video: float frames must lie in \[0, 1\], got values in \[0, 2"):
        to_frame_array(uint8.astype(np.float32), "dense_video")
    with pytest.raises(ValueError, match="NaN"):
        to_frame_array(np.full((1, 2, 2, 3), np.nan, np.float32))


def test_grayscale_and_lists_of_arrays():
    gray = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    expected = np.repeat(gray[..., None], 3, axis=-1)
    assert np.array_equal(to_frame_array(gray), expected)                       # (T, H, W)
    assert np.array_equal(to_frame_array(list(gray)), expected)                 # list of (H, W)
    assert np.array_equal(to_frame_array(list(expected)), expected)             # list of (H, W, 3)
    assert np.array_equal(to_frame_array([Image.fromarray(f) for f in gray]), expected)
    rgba = np.concatenate([expected, np.zeros((2, 3, 5, 1), np.uint8)], axis=-1)
    assert np.array_equal(to_frame_array(rgba), expected)


@pytest.mark.parametrize("value, message", [
    ([], "history is empty: it needs at least one frame"),
    ("clip.mp4", "history: got str"),
    (np.zeros((2, 3, 4, 5), np.uint8), r"shape \(2, 3, 4, 5\) is not a video"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], "frames differ in size"),
    (np.full((1, 2, 2, 3), 300, np.int64), r"integer frames must lie in \[0, 255\]"),
    ([None], r"history\[0\]: cannot use NoneType"),
])
def test_refused_forms_name_the_argument(value, message):
    with pytest.raises(ValueError, match=message) as info:
        to_frame_array(value, "history")
    assert "history" in str(info.value)


def test_load_image_accepts_arrays_pil_modes_and_paths(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(np.asarray(load_image(gray)), np.repeat(gray[..., None], 3, axis=-1))
    assert np.array_equal(np.asarray(load_image(gray.astype(np.float32) / 255)), np.asarray(load_image(gray)))
    sixteen = Image.fromarray((gray.astype(np.uint16) * 257))  # 16-bit grayscale: scaled, not clipped
    assert np.array_equal(np.asarray(load_image(sixteen))[..., 0], gray)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png").mode == "RGB"
    with pytest.raises(ValueError, match="image: got int"):
        load_image(3)
    with pytest.raises(ValueError, match=r"float frames must lie in \[0, 1\]"):
        load_image(gray.astype(np.float32))
