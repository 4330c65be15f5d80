"""Analytic FLOP count of the LongVie 2 denoiser (matrix products only), for TFLOP/s and MFU.

Counted: every matrix product (Linear, the patch-embedding Conv3d, the attention products QK^T and
PV) at 2 FLOPs per multiply-add; not counted: norms, activations, RoPE, softmax, residual adds
(elementwise, < 1% here) — the same convention as ``torch.utils.flop_counter`` and the usual MFU
definition (PaLM, arXiv 2204.02311, app. B). Checked against ``FlopCounterMode`` on the tiny model in
tests/benchmark/test_flops.py.

Per block with S query tokens of width d, FFN width f and a context of L = L_txt + L_img tokens
(Wan2.1 block: self-attention, cross-attention with separate image K/V, FFN):

    self-attention  q, k, v, o projections      8 S d^2
                    QK^T and PV                 4 S^2 d
    cross-attention q and o projections         4 S d^2
                    k, v of text and image      4 L d^2     (recomputed every call in diffusers' blocks)
                    QK^T and PV                 4 S L d
    feed-forward                                4 S d f

The main stream has S = N + N_h tokens (clip + history), 40 blocks of width 5120; each control branch
has S = N, 12 blocks of width 2560, and adds after each block a 2560->5120 projection (2 N d_c d).
Per call also: the latent part of the patch embedding (2 N 16 p d), the head (2 N d 16 p) and the
timestep MLPs. Once per clip and guidance branch (:class:`~longvie.models.denoiser.PreparedClip`):
text and image embedders, the control context projection, the image/history/control patch
embeddings and the control input projections.

Release numbers (352x640, 81 frames, 8 history frames): N = 21*22*40 = 18,480, N_h = 1,760,
9.9e14 FLOPs per call, 9.9e16 per 50-step clip with CFG.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod


@dataclass(frozen=True)
class DenoiserShape:
    """Sizes that the FLOP count needs (read them from a denoiser with :func:`shape_of`)."""

    dim: int                  # main width (5120)
    ffn_dim: int              # 13824
    num_layers: int           # 40
    control_dim: int          # 2560
    control_ffn_dim: int      # 6912
    control_layers: int       # 12
    text_dim: int             # 4096 (umT5 width)
    image_dim: int | None     # 1280 (CLIP width); None = no image branch
    freq_dim: int             # 256
    patch: tuple[int, int, int]
    latent_channels: int = 16
    text_tokens: int = 512
    image_tokens: int = 257


def shape_of(denoiser, image_tokens: int = 257) -> DenoiserShape:
    """The sizes of ``denoiser``; ``image_tokens``: CLIP tokens per image (257 for ViT-H/14 at 224 px)."""
    cfg, control = denoiser.transformer.config, denoiser.control.config
    return DenoiserShape(dim=cfg.num_attention_heads * cfg.attention_head_dim, ffn_dim=cfg.ffn_dim,
                         num_layers=cfg.num_layers, control_dim=control.dim, control_ffn_dim=control.ffn_dim,
                         control_layers=control.num_layers, text_dim=cfg.text_dim, image_dim=cfg.image_dim,
                         freq_dim=cfg.freq_dim, patch=tuple(cfg.patch_size), latent_channels=cfg.out_channels,
                         image_tokens=image_tokens)


def block_flops(tokens: int, dim: int, ffn_dim: int, context: int) -> int:
    """One Wan block: S query tokens, width d, FFN width f, L context tokens (see the module docstring)."""
    s, d, f, length = tokens, dim, ffn_dim, context
    return 8 * s * d * d + 4 * s * s * d + 4 * s * d * d + 4 * length * d * d + 4 * s * length * d + 4 * s * d * f


def call_flops(shape: DenoiserShape, clip_tokens: int, history_tokens: int = 0, batch: int = 1) -> int:
    """FLOPs of one denoiser call on a prepared clip (the per-step work), for ``batch`` clips."""
    n, d, dc = clip_tokens, shape.dim, shape.control_dim
    context = shape.text_tokens + (shape.image_tokens if shape.image_dim else 0)
    patch = prod(shape.patch)
    main = shape.num_layers * block_flops(n + history_tokens, d, shape.ffn_dim, context)
    control = 2 * shape.control_layers * block_flops(n, dc, shape.control_ffn_dim, context)
    inject = shape.control_layers * 2 * n * dc * d
    embed = 2 * n * shape.latent_channels * patch * d + 2 * n * d * shape.latent_channels * patch
    timestep = 2 * (shape.freq_dim * d + d * d + d * 6 * d) + 2 * 6 * d * dc
    return batch * (main + control + inject + embed + timestep)


def prepare_flops(shape: DenoiserShape, clip_tokens: int, history_tokens: int = 0, batch: int = 1) -> int:
    """FLOPs of :meth:`~longvie.models.denoiser.LongVieDenoiser.prepare_clip` (once per clip and branch)."""
    n, d, dc = clip_tokens, shape.dim, shape.control_dim
    patch = prod(shape.patch)
    context = shape.text_tokens
    flops = 2 * shape.text_tokens * (shape.text_dim * d + d * d)                       # text embedder MLP
    if shape.image_dim:
        context += shape.image_tokens
        flops += 2 * shape.image_tokens * (shape.image_dim * shape.image_dim + shape.image_dim * d)  # image MLP
    flops += 2 * context * d * dc                                                       # control_text_linear
    in_channels = 36
    flops += 2 * n * (in_channels - shape.latent_channels) * patch * d                  # image part of DiT input
    flops += 2 * history_tokens * in_channels * patch * d                               # history tokens
    flops += 2 * (2 * n * in_channels * patch * d)                                      # dense + sparse tokens
    flops += 2 * (2 * n * d * dc)                                                       # control input projections
    return batch * flops


def clip_flops(shape: DenoiserShape, clip_tokens: int, history_tokens: int, steps: int, guidance: bool) -> int:
    """FLOPs of one clip's denoising: ``steps`` calls per guidance branch plus each branch's preparation."""
    branches = 2 if guidance else 1
    return branches * (steps * call_flops(shape, clip_tokens, history_tokens)
                       + prepare_flops(shape, clip_tokens, history_tokens))


def token_counts(shape: DenoiserShape, num_frames: int, height: int, width: int, history_frames: int = 0,
                 vae_temporal: int = 4, vae_spatial: int = 8) -> tuple[int, int]:
    """(clip tokens N, history tokens N_h) for a clip of ``num_frames`` pixel frames at height x width."""
    p_t, p_h, p_w = shape.patch
    per_frame = (height // vae_spatial // p_h) * (width // vae_spatial // p_w)
    frames = (1 + (num_frames - 1) // vae_temporal) // p_t
    history = (1 + (history_frames - 1) // vae_temporal) // p_t if history_frames else 0
    return frames * per_frame, history * per_frame


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched by name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,
    "H20": 148.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "A6000": 155.0, "RTX 6000 Ada": 364.0,
    "RTX 4090": 165.0, "RTX 3090": 71.0, "A10": 125.0, "L4": 121.0, "B200": 2250.0,
}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (``torch.cuda.get_device_name``), None when unknown."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None
