"""Our VBench preprocessing against reference transforms written from VBench's documented pipeline
(Vchitect/VBench vbench/utils.py clip_transform / dino_transform, vbench/imaging_quality.py transform,
RAFT's InputPadder, vbench/dynamic_degree.py): identical tensors on fixed frames.

The references below are torchvision transforms composed as VBench documents them; ours compute the
sizes and crop offsets by hand and call torch's interpolation directly. The frame sizes are chosen so
that the easy-to-get-wrong rules show: a long side that truncates (407.27 -> 407, not 407 by rounding
or 408), a crop margin of 75 px (offset 38 by round-half-even, not 37 by floor), portrait frames,
frames that need no resize, and frames smaller than the model size.
"""
import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from longvie.eval.vbench_preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    centre_crop_offsets,
    clip_preprocess,
    dino_position_embedding,
    dino_preprocess,
    dynamic_frame_interval,
    dynamic_params,
    is_dynamic,
    middle_frame_indices,
    musiq_preprocess,
    musiq_size,
    raft_padding,
    short_side_size,
    top_flow_score,
)

SIZES = [(352, 640), (480, 641), (100, 233), (640, 352), (224, 299), (224, 224), (20, 28), (600, 1024), (513, 300)]


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return {size: rng.integers(0, 256, (2, *size, 3), dtype=np.uint8) for size in SIZES}


def _vbench_tensor(video):
    """vbench/utils.py load_video: torch.Tensor(frames) (float32 0-255), permuted to (T, C, H, W)."""
    return torch.Tensor(video).permute(0, 3, 1, 2)


def _reference_clip(n_px):
    return transforms.Compose([
        transforms.Resize(n_px, interpolation=InterpolationMode.BICUBIC, antialias=False),
        transforms.CenterCrop(n_px),
        transforms.Lambda(lambda x: x.float().div(255.0)),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def _reference_dino(n_px):
    return transforms.Compose([
        transforms.Resize(size=n_px, antialias=False),
        transforms.Lambda(lambda x: x.float().div(255.0)),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _reference_musiq(images):
    """vbench/imaging_quality.py transform(images, 'longer')."""
    _, _, h, w = images.size()
    if max(h, w) > 512:
        scale = 512. / max(h, w)
        images = transforms.Resize(size=(int(scale * h), int(scale * w)), antialias=False)(images)
    return images / 255.


@pytest.mark.parametrize("size", SIZES)
def test_clip_dino_and_musiq_inputs_are_identical_to_vbench(frames, size):
    video = frames[size]
    for n_px in (224, 16):  # the real models' size and the tiny test models'
        assert torch.equal(clip_preprocess(video, n_px), _reference_clip(n_px)(_vbench_tensor(video)))
        assert torch.equal(dino_preprocess(video, n_px), _reference_dino(n_px)(_vbench_tensor(video)))
    assert torch.equal(musiq_preprocess(video), _reference_musiq(_vbench_tensor(video)))


def test_the_rules_that_differ_from_the_obvious_resize():
    assert short_side_size(352, 640, 224) == (224, 407)  # 407.27: torchvision truncates
    assert short_side_size(100, 233, 224) == (224, 521)  # 521.92 truncates; rounding would give 522
    assert short_side_size(640, 352, 224) == (407, 224)
    assert short_side_size(480, 641, 224) == (224, 299)
    assert centre_crop_offsets(224, 299, 224, 224) == (0, 38)  # margin 75: round(37.5) = 38, floor = 37
    assert centre_crop_offsets(224, 297, 224, 224) == (0, 36)  # margin 73: round(36.5) = 36 (half to even)
    assert musiq_size(352, 640) == (281, 512)  # 0.8 * 352 = 281.6 -> 281
    assert musiq_size(512, 300) == (512, 300) and musiq_size(513, 300) == (512, 299)


def test_raft_padding_and_frame_interval():
    assert raft_padding(352, 640) == (0, 0, 0, 0)
    assert raft_padding(37, 53) == (1, 2, 1, 2)  # 3 px each: 1 before, 2 after
    assert raft_padding(36, 50) == (3, 3, 2, 2)
    for fps, interval in ((8, 1), (12, 2), (16, 2), (20, 2), (24, 3), (25, 3), (30, 4), (60, 8), (4, 1)):
        assert dynamic_frame_interval(fps) == interval, fps


def test_dynamic_rule_hand_computed():
    threshold, needed = dynamic_params(352, 640, 41)  # 81 frames at 16 fps -> 41 sampled
    assert threshold == pytest.approx(6.0 * 352 / 256) and needed == 10  # round(10.25)
    assert dynamic_params(480, 832, 30) == (pytest.approx(11.25), 8)  # round(7.5) = 8 (half to even)
    assert dynamic_params(480, 832, 26)[1] == 6  # round(6.5) = 6
    over, under = threshold + 0.01, threshold - 0.01
    assert is_dynamic([over] * 10 + [under] * 30, 352, 640, 41)
    assert not is_dynamic([over] * 9 + [under] * 31, 352, 640, 41)
    assert is_dynamic([under], 352, 640, 2)  # round(0.5) = 0 pairs needed: VBench calls any 2-frame video dynamic
    assert not is_dynamic([], 352, 640, 1)


def test_top_flow_score_is_the_mean_of_the_top_five_percent():
    flow = torch.zeros(2, 10, 10)
    flow[0].view(-1)[:5] = torch.tensor([3.0, 4.0, 5.0, 6.0, 7.0])
    flow[1].view(-1)[:5] = torch.tensor([4.0, 3.0, 0.0, 8.0, 0.0])  # magnitudes 5, 5, 5, 10, 7
    assert top_flow_score(flow) == pytest.approx((10 + 7 + 5 + 5 + 5) / 5)
    assert top_flow_score(torch.ones(2, 4, 4)) == 0.0  # int(16 * 0.05) = 0 pixels


def test_viclip_middle_frames():
    # 81 frames in 8 intervals: edges 0,10,20,30,40,50,60,70,81 -> middles (a + b - 1) // 2
    assert middle_frame_indices(8, 81) == [4, 14, 24, 34, 44, 54, 64, 75]
    assert middle_frame_indices(8, 5) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_dino_position_grid_follows_dino_not_an_exact_resize():
    """DINO interpolates with scale factor (n + 0.1) / 14; an exact resize to the grid gives other values."""
    torch.manual_seed(0)
    grid = torch.randn(1, 1 + 14 * 14, 8, dtype=torch.float64)
    out = dino_position_embedding(grid, 224, 407, 16)  # a 352x640 frame after dino_preprocess
    assert out.shape == (1, 1 + 14 * 25, 8) and torch.equal(out[:, :1], grid[:, :1])
    patch = grid[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    by_hand = torch.nn.functional.interpolate(patch, scale_factor=(14.1 / 14, 25.1 / 14), mode="bicubic")
    assert torch.equal(out[:, 1:], by_hand.permute(0, 2, 3, 1).reshape(1, -1, 8))
    exact = torch.nn.functional.interpolate(patch, size=(14, 25), mode="bicubic", align_corners=False)
    assert not torch.allclose(out[:, 1:], exact.permute(0, 2, 3, 1).reshape(1, -1, 8), atol=1e-3)
    assert dino_position_embedding(grid, 224, 224, 16) is grid  # square with the training grid: unchanged
