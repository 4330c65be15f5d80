"""Step caching: off = exact; a skipped step reuses the last residual, control injections included."""
from __future__ import annotations

import pytest
import torch
from tiny_inputs import B, make_inputs

from longvie.acceleration.step_cache import StepCacheConfig, make_step_cache
from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


@pytest.fixture(scope="module")
def denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer))


@torch.no_grad()
def test_threshold_zero_is_the_exact_path(denoiser):
    cache = make_step_cache(StepCacheConfig("firstblock", threshold=0.0, full_first_steps=0, full_last_steps=0), 4)
    clip = ClipCache()
    x = make_inputs()
    for timestep in (900.0, 600.0, 300.0, 50.0):
        x["timestep"] = torch.full((B,), timestep)
        assert torch.equal(denoiser(**x, clip_cache=clip, block_stack=cache), denoiser(**x))
    assert cache.skipped == 0


@torch.no_grad()
@pytest.mark.parametrize("kind", ["firstblock", "teacache"])
def test_skipped_step_keeps_the_control_injection(denoiser, kind):
    """Same inputs twice: the second call is skipped (zero change) and must still equal the full output,
    which holds only if the cached residual carries the control branch's injections."""
    x = make_inputs()
    cache = make_step_cache(StepCacheConfig(kind, threshold=0.5, full_first_steps=1, full_last_steps=0), 3)
    clip = ClipCache()
    full = denoiser(**x)
    first = denoiser(**x, clip_cache=clip, block_stack=cache)
    second = denoiser(**x, clip_cache=clip, block_stack=cache)
    assert cache.skipped == 1
    assert torch.allclose(first, full, atol=1e-6) and torch.allclose(second, full, atol=1e-5)
    # the control contribution is not negligible here, so dropping it would be caught
    no_control = denoiser(**x, control_scale=0.0)
    assert (full - no_control).abs().max() > 1e-3


@torch.no_grad()
def test_large_change_is_recomputed(denoiser):
    cache = make_step_cache(StepCacheConfig("firstblock", threshold=1e-3, full_first_steps=1, full_last_steps=0), 3)
    clip = ClipCache()
    x = make_inputs()
    denoiser(**x, clip_cache=clip, block_stack=cache)
    x["latents"] = torch.randn_like(x["latents"])
    x["timestep"] = torch.full((B,), 100.0)
    assert torch.equal(denoiser(**x, clip_cache=clip, block_stack=cache), denoiser(**x))
    assert cache.skipped == 0


def test_config_defaults_and_errors():
    assert StepCacheConfig("teacache").threshold == 0.15
    with pytest.raises(ValueError, match="kind"):
        StepCacheConfig("magic")
