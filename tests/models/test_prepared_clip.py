"""The per-clip precomputation (ClipCache / PreparedClip) gives the same velocities as a fresh call."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_inputs import B, H, W, make_inputs

from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


@pytest.fixture(scope="module")
def denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer))


@torch.no_grad()
@pytest.mark.parametrize("history", [False, True])
def test_cached_clip_matches_fresh_calls_over_timesteps(denoiser, history):
    x = make_inputs()
    if history:
        x["history_latents"] = torch.randn(B, 16, 2, H, W, generator=torch.Generator().manual_seed(3))
    cache = ClipCache()
    generator = torch.Generator().manual_seed(1)
    for timestep in (999.0, 620.0, 31.0):
        x["latents"] = torch.randn(x["latents"].shape, generator=generator)
        x["timestep"] = torch.full((B,), timestep)
        fresh = denoiser(**x)
        cached = denoiser(**x, clip_cache=cache)
        assert torch.equal(fresh, cached), (fresh - cached).abs().max()
    assert cache.prepared is not None and cache.prepared.num_history == (56 if history else 0)


@torch.no_grad()
def test_split_patch_embedding_equals_the_36_channel_convolution(denoiser):
    """The image part of the DiT input is embedded once per clip; W·[x; c] + b == W_x·x + (W_c·c + b)."""
    x = make_inputs()
    conv = denoiser.transformer.patch_embedding
    full = conv(torch.cat([x["latents"], x["image_latents"]], 1)).flatten(2).transpose(1, 2)
    prepared = denoiser.prepare_clip(x["text_embeds"], x["image_embeds"], x["image_latents"], x["dense_latents"],
                                     x["sparse_latents"])
    latent_part = F.conv3d(x["latents"], conv.weight[:, :16], None, stride=conv.stride).flatten(2).transpose(1, 2)
    assert torch.allclose(latent_part + prepared.image_tokens, full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_cache_refuses_other_conditions(denoiser):
    x = make_inputs()
    cache = ClipCache()
    denoiser(**x, clip_cache=cache)
    other = dict(x, dense_latents=x["dense_latents"].clone())
    with pytest.raises(ValueError, match="another clip"):
        denoiser(**other, clip_cache=cache)


@torch.no_grad()
def test_block_stack_hook_sees_every_block(denoiser):
    x = make_inputs()
    calls = []

    def block_stack(run, state, num_blocks):
        calls.append(num_blocks)
        state = run(state, 0, 1)
        return run(state, 1, num_blocks)

    assert torch.equal(denoiser(**x, block_stack=block_stack), denoiser(**x))
    assert calls == [len(denoiser.transformer.blocks)]


@torch.no_grad()
def test_streamed_patch_embedding_uses_the_module_call(denoiser, monkeypatch):
    """When an offload hook keeps the patch embedding's weight elsewhere, the 36-channel embedding goes
    through the module (and its hook): same result."""
    x = make_inputs()
    reference = denoiser(**x)
    conv = denoiser.transformer.patch_embedding
    meta_weight = torch.nn.Parameter(conv.weight.detach().to("meta"))
    real_weight = conv.weight
    calls = []

    def streamed_forward(inputs):  # what a group-offload hook does: the real weight only inside forward
        calls.append(inputs.shape[1])
        return F.conv3d(inputs, real_weight, conv.bias, stride=conv.stride)

    monkeypatch.setattr(conv, "weight", meta_weight)
    monkeypatch.setattr(conv, "forward", streamed_forward)
    out = denoiser(**x)
    assert 36 in calls
    assert torch.allclose(out, reference, atol=1e-5)
