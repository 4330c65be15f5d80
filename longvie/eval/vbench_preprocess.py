"""VBench's input pipelines, written out: resizes, crops, frame sampling and the dynamic-degree rule.

Each function states the VBench source it follows (Vchitect/VBench, ``vbench/*.py``; read for facts,
no code taken). The numbers that matter and where they differ from "the obvious" resize:

* Frames reach every VBench model as a float tensor of 0-255 values (``vbench/utils.py``
  ``load_video`` builds ``torch.Tensor(frames)``), so resizing happens on 0-255 floats, without
  clamping, and the division by 255 comes after the resize.
* CLIP (``utils.clip_transform``, A.Q., B.C.): ``Resize(224, BICUBIC, antialias=False)`` — the short
  side to 224, the long side ``int(224 * long / short)`` (torchvision truncates) — then
  ``CenterCrop(224)`` whose offsets are ``int(round((size - 224) / 2.0))`` (Python rounds halves to
  even, so an odd margin of 75 px starts the crop at 38, not 37), /255, CLIP's mean and std.
* DINO (``utils.dino_transform``, S.C.): ``Resize(224, antialias=False)`` (torchvision's default
  interpolation, bilinear), no crop, /255, ImageNet mean and std. The DINO ViT then interpolates its
  position grid with ``scale_factor = (h/16 + 0.1) / 14`` (facebookresearch/dino
  ``vision_transformer.py`` ``interpolate_pos_encoding``), see :func:`dino_position_embedding`.
* MUSIQ (``vbench/imaging_quality.py`` ``transform``, default mode ``"longer"`` in
  ``evaluate.py``): when the longer side exceeds 512, ``Resize((int(s * h), int(s * w)),
  antialias=False)`` (bilinear) with ``s = 512 / longer``; then /255.
* RAFT (``vbench/dynamic_degree.py``): frames every ``max(1, round(fps / 8))`` of the file's frame
  rate (OpenCV's ``CAP_PROP_FPS``), padded to a multiple of 8 by RAFT's ``InputPadder`` ("sintel":
  replicate, split evenly, the odd pixel after), flow with 20 iterations, the pair's score is the
  mean of the top ``int(H' W' 0.05)`` flow magnitudes over the padded H' x W' flow; the video is
  dynamic when at least ``round(4 n / 16)`` pair scores exceed ``6 min(H, W) / 256`` (``n`` sampled
  frames, ``H, W`` unpadded).
* ViCLIP (``vbench/overall_consistency.py``): 8 frames, ``utils.get_frame_indices(..., "middle")``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "VBENCH_SIZE", "MUSIQ_LONGER_SIDE",
           "short_side_size", "centre_crop_offsets", "frames_to_float255", "clip_preprocess", "dino_preprocess",
           "musiq_size", "musiq_preprocess", "raft_padding", "raft_pad", "dynamic_frame_interval",
           "dynamic_params", "is_dynamic", "top_flow_score", "middle_frame_indices", "dino_position_embedding"]

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VBENCH_SIZE = 224
MUSIQ_LONGER_SIDE = 512


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling the short side to ``size``: the long side is ``int(size * long / short)``
    (torchvision's rule for ``Resize(int)``, which truncates)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def centre_crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``CenterCrop``: ``int(round(margin / 2.0))``, halves to even."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def frames_to_float255(frames: np.ndarray, device=None):
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 tensor of 0-255 values (VBench's ``load_video``)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()


def _resize(x, size: tuple[int, int], mode: str):
    """Interpolation without antialiasing on float values; identity when the size does not change
    (torchvision returns its input unchanged then)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=False)


def _normalise(x, mean, std):
    import torch

    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_preprocess(frames: np.ndarray, size: int = VBENCH_SIZE, device=None):
    """VBench's ``clip_transform(size)`` of (T, H, W, 3) uint8 frames: (T, 3, size, size) float32."""
    x = frames_to_float255(frames, device)
    h, w = short_side_size(x.shape[-2], x.shape[-1], size)
    x = _resize(x, (h, w), "bicubic")
    if h < size or w < size:  # cannot happen after a short-side resize; kept as torchvision would pad
        raise ValueError(f"frames of {h}x{w} after resizing are smaller than the {size}px crop")
    top, left = centre_crop_offsets(h, w, size, size)
    x = x[..., top:top + size, left:left + size]
    return _normalise(x / 255.0, CLIP_MEAN, CLIP_STD)


def dino_preprocess(frames: np.ndarray, size: int = VBENCH_SIZE, device=None):
    """VBench's ``dino_transform(size)``: short side to ``size`` (bilinear, no antialias), no crop."""
    x = frames_to_float255(frames, device)
    x = _resize(x, short_side_size(x.shape[-2], x.shape[-1], size), "bilinear")
    return _normalise(x / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def musiq_size(height: int, width: int, longer: int = MUSIQ_LONGER_SIDE) -> tuple[int, int]:
    """Frame size MUSIQ sees in VBench's default "longer" mode: unchanged up to ``longer`` px, else
    ``(int(s * h), int(s * w))`` with ``s = longer / max(h, w)``."""
    if max(height, width) <= longer:
        return height, width
    scale = float(longer) / max(height, width)
    return int(scale * height), int(scale * width)


def musiq_preprocess(frames: np.ndarray, device=None):
    """(T, 3, h, w) float32 in [0, 1] as VBench's imaging-quality ``transform(images, "longer")``."""
    x = frames_to_float255(frames, device)
    x = _resize(x, musiq_size(x.shape[-2], x.shape[-1]), "bilinear")
    return x / 255.0


def raft_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of RAFT's ``InputPadder`` in its default "sintel" mode: up to the next
    multiple of 8, half before (rounded down) and the rest after; 0 where already a multiple of 8."""
    pad_h = (((height // 8) + 1) * 8 - height) % 8
    pad_w = (((width // 8) + 1) * 8 - width) % 8
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def raft_pad(x):
    """Replicate-pad (N, C, H, W) to RAFT's multiple of 8 (:func:`raft_padding`)."""
    import torch.nn.functional as F

    pad = raft_padding(x.shape[-2], x.shape[-1])
    return F.pad(x, pad, mode="replicate") if any(pad) else x


def dynamic_frame_interval(fps: float) -> int:
    """Every n-th frame goes to RAFT: ``max(1, round(fps / 8))`` (Python rounding: 12 fps -> 2, 20 -> 2)."""
    return max(1, round(float(fps) / 8))


def dynamic_params(height: int, width: int, sampled_frames: int) -> tuple[float, int]:
    """(flow threshold in px, number of pairs that must exceed it) of VBench's ``set_params``."""
    return 6.0 * (min(height, width) / 256.0), round(4 * (sampled_frames / 16.0))


def is_dynamic(pair_scores, height: int, width: int, sampled_frames: int) -> bool:
    """VBench's ``check_move``: walks the pairs, True as soon as ``count_num`` of them exceed the
    threshold (so with ``count_num == 0`` any video with at least one pair is dynamic)."""
    threshold, needed = dynamic_params(height, width, sampled_frames)
    count = 0
    for score in pair_scores:
        if score > threshold:
            count += 1
        if count >= needed:
            return True
    return False


def top_flow_score(flow) -> float:
    """Mean of the largest ``int(H W 0.05)`` flow magnitudes of one (2, H, W) flow (VBench's
    ``get_score``; NaN-free: an empty cut gives 0, where numpy's mean of nothing would be NaN)."""
    import torch

    magnitude = torch.sqrt((flow.double() ** 2).sum(0)).flatten()
    cut = int(flow.shape[-2] * flow.shape[-1] * 0.05)
    if cut == 0:
        return 0.0
    return float(torch.topk(magnitude, cut).values.mean())


def middle_frame_indices(num_frames: int, length: int) -> list[int]:
    """ViCLIP's 8 frames: ``length`` split into ``num_frames`` equal intervals (``np.linspace`` cut to
    int), the middle frame of each; padded with the last index when the video is shorter."""
    count = min(num_frames, length)
    edges = np.linspace(0, length, count + 1).astype(int)
    indices = [(int(a) + int(b) - 1) // 2 for a, b in zip(edges[:-1], edges[1:])]
    return indices + [indices[-1]] * (num_frames - len(indices))


def dino_position_embedding(position_embeddings, height: int, width: int, patch_size: int):
    """DINO's own interpolation of a square ViT position grid to an ``height x width`` input.

    facebookresearch/dino ``vision_transformer.py`` ``interpolate_pos_encoding``: unchanged when the
    patch count matches and the input is square; else bicubic with ``scale_factor = ((h0 + 0.1) / g,
    (w0 + 0.1) / g)`` for a g x g grid and h0 = height // patch, w0 = width // patch (the 0.1 avoids
    float error in the output size; PyTorch then maps coordinates with that scale, so the values
    differ slightly from a resize to the exact size, which is what transformers' ViT does).
    """
    import torch
    import torch.nn.functional as F

    grid = position_embeddings.shape[1] - 1
    h0, w0 = height // patch_size, width // patch_size
    if h0 * w0 == grid and height == width:
        return position_embeddings
    side = int(math.sqrt(grid))
    dim = position_embeddings.shape[-1]
    patch = position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h0 + 0.1) / math.sqrt(grid), (w0 + 0.1) / math.sqrt(grid)),
                          mode="bicubic")
    if patch.shape[-2:] != (h0, w0):
        raise RuntimeError(f"DINO position grid interpolated to {tuple(patch.shape[-2:])}, expected {(h0, w0)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((position_embeddings[:, :1], patch), dim=1)
