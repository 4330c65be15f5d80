"""The default resize mode "auto": upstream inference's stretch on upstream-like inputs, crop otherwise."""
import logging

import numpy as np
import pytest
from PIL import Image

from longvie.media import video_io
from longvie.media.video_io import (
    ASPECT_TOLERANCE,
    DEFAULT_RESIZE_MODE,
    fit_frames,
    read_video,
    resize_center_crop,
    resolve_resize_mode,
)


def random_frames(num, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num, height, width, 3), dtype=np.uint8)


def upstream_inference_resize(frames, height, width):
    """What upstream's inference.py does to every input: PIL Image.resize with its default filter."""
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height))) for f in frames])


def test_default_is_auto():
    assert DEFAULT_RESIZE_MODE == "auto" and "auto" in video_io.RESIZE_MODES
    assert 0.05 <= ASPECT_TOLERANCE <= 0.15


@pytest.mark.parametrize("src, expected", [
    ((480, 832), "stretch"),    # the released example, 4.9 % off 640x352
    ((720, 1280), "stretch"),   # 16:9
    ((1080, 1920), "stretch"),  # 16:9
    ((352, 640), "stretch"),    # the target itself
    ((1080, 1998), "stretch"),  # 1.85:1
    ((480, 640), "crop"),       # 4:3
    ((1080, 1620), "crop"),     # 3:2
    ((512, 512), "crop"),       # square
    ((832, 480), "crop"),       # portrait
    ((800, 1920), "crop"),      # 2.4:1
])
def test_auto_rule(src, expected):
    assert resolve_resize_mode(*src, 352, 640) == expected
    assert resolve_resize_mode(*src, 352, 640, "crop") == "crop"
    assert resolve_resize_mode(*src, 352, 640, "stretch") == "stretch"


def test_auto_tolerance_boundary():
    # width / height = target aspect * (1 + tol) stretches; a little more crops.
    target = 640 / 352
    inside = round(1000 * target * (1 + ASPECT_TOLERANCE) - 1)
    outside = round(1000 * target * (1 + ASPECT_TOLERANCE) + 2)
    assert resolve_resize_mode(1000, inside, 352, 640) == "stretch"
    assert resolve_resize_mode(1000, outside, 352, 640) == "crop"
    with pytest.raises(ValueError, match="resize mode"):
        resolve_resize_mode(480, 832, 352, 640, "zoom")


def test_auto_equals_upstream_inference_on_832x480():
    frames = random_frames(3, 480, 832)
    expected = upstream_inference_resize(frames, 352, 640)
    np.testing.assert_array_equal(fit_frames(frames, 352, 640), expected)
    np.testing.assert_array_equal(fit_frames(frames, 352, 640, "stretch"), expected)
    # a PIL first image gives the same pixels as upstream's load_image
    image = Image.fromarray(frames[0])
    np.testing.assert_array_equal(np.asarray(fit_frames(image, 352, 640)), np.asarray(image.resize((640, 352))))
    assert not np.array_equal(fit_frames(frames, 352, 640, "crop"), expected)


def test_auto_crops_far_aspect_with_one_notice(caplog):
    frames = random_frames(2, 480, 640, seed=1)
    video_io._CROP_NOTICES.clear()
    with caplog.at_level(logging.WARNING, logger="longvie.media.video_io"):
        out = fit_frames(frames, 352, 640)
        fit_frames(frames, 352, 640)  # same sizes again: no second notice
        fit_frames(frames[0], 352, 640)
    np.testing.assert_array_equal(out, resize_center_crop(frames, 352, 640))
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "\n" not in notices[0], notices
    assert "640x480" in notices[0] and "640x352" in notices[0] and "--resize stretch" in notices[0]


def test_ride_horse_inputs_get_upstream_stretch(ride_horse):
    """The released example (832x480): first image and control videos fitted as upstream inference does."""
    image = Image.open(ride_horse / "first.png").convert("RGB")
    np.testing.assert_array_equal(np.asarray(fit_frames(image, 352, 640)), np.asarray(image.resize((640, 352))))
    for name in ("depth_00.mp4", "track_03.mp4"):
        frames = read_video(ride_horse / name, max_frames=4)
        np.testing.assert_array_equal(fit_frames(frames, 352, 640), upstream_inference_resize(frames, 352, 640))
