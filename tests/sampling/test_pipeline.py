"""LongViePipeline end to end on the tiny preset (SPEC §4), and its input validation."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from longvie.sampling.conditioning import i2v_mask
from longvie.sampling.pipeline import UNIFIED_NOISE_SIGMA, WAN_NEGATIVE_PROMPT

T, HEIGHT, WIDTH, STEPS = 9, 64, 64, 2


def video(seed, frames=T, height=48, width=80):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def first_image(seed=0):
    return PIL.Image.fromarray(video(seed, 1, 72, 96)[0])


def run(pipe, **overrides):
    kwargs = dict(image=first_image(), prompt="a rider on a snowy trail", dense_video=video(1),
                  sparse_video=video(2), num_frames=T, height=HEIGHT, width=WIDTH,
                  num_inference_steps=STEPS, progress=False)
    kwargs.update(overrides)
    return pipe(**kwargs)


def test_two_clips_with_history_and_carried_noise(tiny_pipeline):
    frames, noise = run(tiny_pipeline, seed=3)
    assert frames.shape == (T, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert noise.shape == (1, 16, 1 + (T - 1) // 4, HEIGHT // 8, WIDTH // 8) and noise.dtype == torch.float32
    assert torch.equal(noise, torch.randn(noise.shape, generator=torch.Generator().manual_seed(3)))

    again, noise_again = run(tiny_pipeline, seed=3)
    assert np.array_equal(frames, again) and torch.equal(noise, noise_again), "same seed, same clip"
    other, _ = run(tiny_pipeline, seed=4)
    assert not np.array_equal(frames, other)

    second, returned = run(tiny_pipeline, image=frames[-1], history=frames[-8:], noise=noise, seed=99)
    assert second.shape == (T, HEIGHT, WIDTH, 3)
    assert torch.equal(returned, noise), "the carried noise is returned unchanged"
    no_history, _ = run(tiny_pipeline, image=frames[-1], noise=noise)
    assert not np.array_equal(second, no_history), "history changes the clip"


def test_unified_noise_first_frame_mix(tiny_pipeline):
    """The first latent the denoiser sees is (1-σ)·z_hist[-1] + σ·ε[0]; later frames are ε."""
    from longvie.sampling.conditioning import frames_to_tensor, vae_encode

    seen = {}
    original = tiny_pipeline.denoiser.forward

    def spy(latents, *args, **kwargs):
        seen.setdefault("latents", latents.clone())
        return original(latents, *args, **kwargs)

    history = video(7, 8, HEIGHT, WIDTH)
    noise = torch.randn(1, 16, 3, HEIGHT // 8, WIDTH // 8)
    tiny_pipeline.denoiser.forward = spy
    try:
        run(tiny_pipeline, history=history, noise=noise)
    finally:
        tiny_pipeline.denoiser.forward = original
    z_hist = vae_encode(tiny_pipeline.vae, frames_to_tensor(history))
    assert z_hist.shape[2] == 2, "8 history frames -> 2 latent frames"
    expected_first = (1 - UNIFIED_NOISE_SIGMA) * z_hist[:, :, -1:] + UNIFIED_NOISE_SIGMA * noise[:, :, :1]
    assert torch.allclose(seen["latents"][:, :, :1], expected_first, atol=1e-6)
    assert torch.equal(seen["latents"][:, :, 1:], noise[:, :, 1:])


def test_guidance_uses_negative_prompt(tiny_pipeline):
    a, _ = run(tiny_pipeline, guidance_scale=5.0)
    b, _ = run(tiny_pipeline, guidance_scale=5.0, negative_prompt="blurry")
    c, _ = run(tiny_pipeline, guidance_scale=1.0)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_i2v_mask_layout():
    mask = i2v_mask(1, 3, 2, 2)
    assert mask.shape == (1, 4, 3, 2, 2)
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()


def test_default_negative_prompt_is_wan_standard():
    assert WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态") and WAN_NEGATIVE_PROMPT.endswith("倒着走")


@pytest.mark.parametrize("overrides, message", [
    (dict(num_frames=8), "num_frames must be 4k\\+1"),
    (dict(height=60), "height must be a positive multiple of 16"),
    (dict(width=100), "width must be a positive multiple of 16"),
    (dict(dense_video=video(1, frames=5)), "dense_video has 5 frames"),
    (dict(sparse_video=video(1, frames=13)), "sparse_video has 13 frames"),
    (dict(image=None), "image is required"),
    (dict(history=[]), "history is empty"),
    (dict(prompt=["a", "b"]), "mismatched batch sizes"),
    (dict(noise=torch.zeros(1, 16, 2, 8, 8)), "noise must have shape"),
    (dict(num_inference_steps=0), "num_inference_steps"),
])
def test_bad_input_fails_before_any_model_runs(tiny_pipeline, monkeypatch, overrides, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model ran before validation finished")

    monkeypatch.setattr(tiny_pipeline.vae, "encode", forbidden)
    monkeypatch.setattr(tiny_pipeline.text_encoder, "forward", forbidden)
    with pytest.raises(ValueError, match=message):
        run(tiny_pipeline, **overrides)


def test_batch_matches_single_items(tiny_pipeline):
    noise = torch.randn(2, 16, 3, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(1))
    frames, _ = run(tiny_pipeline, image=[first_image(0), first_image(1)], prompt=["a", "b"],
                    dense_video=np.stack([video(1), video(3)]), sparse_video=[video(2), video(4)], noise=noise)
    assert isinstance(frames, list) and len(frames) == 2
    single, _ = run(tiny_pipeline, image=first_image(1), prompt="b", dense_video=video(3), sparse_video=video(4),
                    noise=noise[1:])
    assert np.abs(frames[1].astype(int) - single.astype(int)).max() <= 1


def test_bfloat16_pipeline_tracks_float32(tiny_checkpoints, tiny_pipeline):
    """The bf16 path (as on a GPU) keeps umT5/CLIP/DiT in bf16, the VAE in fp32, and stays close."""
    from longvie.sampling.pipeline import LongViePipeline

    pipe = LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.bfloat16, device="cpu")
    assert pipe.denoiser.dtype == torch.bfloat16 and next(pipe.vae.parameters()).dtype == torch.float32
    low, _ = run(pipe)
    full, _ = run(tiny_pipeline)
    assert np.abs(low.astype(int) - full.astype(int)).mean() < 3.0
