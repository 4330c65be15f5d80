"""Input checks of LongViePipeline.__call__: accepted forms run, refused ones name the argument,
seeds outside [0, 2^64) are refused before any model runs (issue 11, item 7)."""
from __future__ import annotations

import numpy as np
import pytest

FRAMES, HEIGHT, WIDTH = 5, 32, 48


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    video = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    return image, video


def call(pipe, image, dense, sparse, **kwargs):
    return pipe(image, "a prompt", dense, sparse, num_frames=FRAMES, height=HEIGHT, width=WIDTH,
                num_inference_steps=1, progress=False, **kwargs)


def test_float_gray_and_list_forms_give_the_uint8_result(tiny_pipeline, inputs):
    image, video = inputs
    reference = call(tiny_pipeline, image, video, video).frames
    as_float = call(tiny_pipeline, image.astype(np.float32) / 255, video.astype(np.float64) / 255,
                    list(video)).frames
    assert np.array_equal(as_float, reference)
    gray_image = image[..., 0]
    gray = call(tiny_pipeline, gray_image, video[..., 0], list(video[..., 0])).frames
    assert gray.shape == reference.shape == (FRAMES, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("which, value, message", [
    ("dense_video", [], "dense_video is empty"),
    ("sparse_video", "track.mp4", "sparse_video: got str"),
    ("image", "first.png", "image: got str"),
    ("dense_video", "float255", r"dense_video: float frames must lie in \[0, 1\]"),
    ("image", "float255", r"image: float frames must lie in \[0, 1\]"),
])
def test_refused_inputs_name_the_argument(tiny_pipeline, inputs, which, value, message):
    image, video = inputs
    args = {"image": image, "dense_video": video, "sparse_video": video}
    args[which] = args[which].astype(np.float32) if value == "float255" else value
    with pytest.raises(ValueError, match=message):
        call(tiny_pipeline, args["image"], args["dense_video"], args["sparse_video"])


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_seeds_outside_the_range_are_refused(tiny_pipeline, inputs, seed):
    image, video = inputs
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^64\)"):
        call(tiny_pipeline, image, video, video, seed=seed)


def test_largest_seed_is_accepted(tiny_pipeline, inputs):
    image, video = inputs
    assert call(tiny_pipeline, image, video, video, seed=2**64 - 1).frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
