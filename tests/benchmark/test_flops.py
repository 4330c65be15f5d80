"""The analytic FLOP formula against torch's own count of the tiny denoiser's matrix products."""
from __future__ import annotations

import pytest
import torch
from tiny_inputs import B, F, H, W, make_inputs
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from longvie.benchmark.flops import call_flops, clip_flops, prepare_flops, shape_of, token_counts
from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


def x_image_tokens() -> int:
    return make_inputs()["image_embeds"].shape[1]


def counted(fn) -> int:
    # The math SDPA kernel is plain matmuls, which FlopCounterMode counts (the fused CPU kernel is not registered).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
@pytest.mark.parametrize("history_frames", [0, 2])
def test_formula_matches_flop_counter(history_frames):
    transformer = build_tiny_transformer(0)
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer))
    shape = shape_of(denoiser, image_tokens=x_image_tokens())
    x = make_inputs()
    if history_frames:
        x["history_latents"] = torch.randn(B, 16, history_frames, H, W)
    clip_tokens, history_tokens = F * (H // 2) * (W // 2), history_frames * (H // 2) * (W // 2)
    cache = ClipCache()
    first = counted(lambda: denoiser(**x, clip_cache=cache))
    later = counted(lambda: denoiser(**x, clip_cache=cache))
    assert later == call_flops(shape, clip_tokens, history_tokens, batch=B)
    assert first - later == prepare_flops(shape, clip_tokens, history_tokens, batch=B)


def test_release_clip_is_about_1e17_flops():
    """The issue's figure: 50 steps with CFG at 352x640x81 with 8 history frames ~ 9.9e16 FLOPs."""
    from longvie.benchmark.flops import DenoiserShape

    shape = DenoiserShape(dim=5120, ffn_dim=13824, num_layers=40, control_dim=2560, control_ffn_dim=6912,
                          control_layers=12, text_dim=4096, image_dim=1280, freq_dim=256, patch=(1, 2, 2))
    n, nh = token_counts(shape, 81, 352, 640, history_frames=8)
    assert (n, nh) == (18480, 1760)
    total = clip_flops(shape, n, nh, steps=50, guidance=True)
    assert 9.8e16 < total < 1.0e17, total
