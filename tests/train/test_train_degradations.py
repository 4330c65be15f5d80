"""Degradation transforms and plans against hand computations (SPEC §6)."""
import numpy as np
import pytest
import torch

from longvie.train.degradations import (
    FUSION_SCALES,
    ColorDrift,
    DegradationSettings,
    FrameDegradation,
    box_blur,
    color_drift,
    degrade_depth,
    gaussian_kernel1d,
    regenerate_first_frame,
    sample_plan,
    sample_rng,
    scale_fusion,
    smooth_mask,
    vae_roundtrip,
)


# ----------------------------------------------------------------------------------- colour drift
def test_color_drift_with_flat_mask_hand_computed():
    pixels = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)  # (1, 3, 2, 2)
    pixels[:, 1] *= 0.5
    drift = ColorDrift(strength=0.2, offset=(0.1, -0.05, 0.0), mask_seed=0)
    out = color_drift(pixels, drift, spatial_variation=0.0)  # mask = strength everywhere
    x = (pixels + 1) / 2
    mean = x.mean(dim=(2, 3), keepdim=True)
    tint = (mean + torch.tensor([0.1, -0.05, 0.0]).view(1, 3, 1, 1)).clamp(0, 1)
    expected = ((1 - 0.2) * x + 0.2 * tint) * 2 - 1
    assert torch.allclose(out, expected, atol=1e-6)


def test_color_drift_video_shares_mask_and_mean_across_frames():
    torch.manual_seed(0)
    frame = torch.rand(1, 3, 16, 24) * 2 - 1
    video = frame.unsqueeze(2).repeat(1, 1, 3, 1, 1)
    drift = ColorDrift(0.15, (0.05, 0.0, -0.1), mask_seed=7)
    out = color_drift(video, drift)
    assert out.shape == video.shape
    assert torch.allclose(out[:, :, 0], out[:, :, 2])
    assert torch.allclose(out[:, :, 0], color_drift(frame, drift), atol=1e-6)
    # The blend stays within strength * (1 +- 0.15) of the input.
    x, y = (frame + 1) / 2, (out[:, :, 0] + 1) / 2
    assert (y - x).abs().max() <= 0.15 * 1.15 + 1e-6


def test_smooth_mask_is_normalised_smooth_and_seeded():
    mask = smooth_mask(32, 48, seed=3)
    assert mask.min().item() == pytest.approx(0.0) and mask.max().item() == pytest.approx(1.0)
    assert torch.equal(mask, smooth_mask(32, 48, seed=3)) and not torch.equal(mask, smooth_mask(32, 48, seed=4))
    noise = torch.rand(32, 48)
    assert mask.diff(dim=1).abs().mean() < 0.2 * noise.diff(dim=1).abs().mean()


def test_gaussian_kernel():
    kernel = gaussian_kernel1d(1.0, radius=2)
    raw = torch.exp(-0.5 * torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]) ** 2)
    assert torch.allclose(kernel, raw / raw.sum())


# ----------------------------------------------------------------------------------- depth
def test_scale_fusion_hand_computed():
    depth = torch.tensor([[1.0, 2.0], [3.0, 6.0]]).view(1, 1, 2, 2)
    assert torch.equal(scale_fusion(depth, (1.0,), (1.0,)), depth)
    # 0.5x of a 2x2 is its mean (3) everywhere; 0.25x clamps to 1x1, the same.
    out = scale_fusion(depth, (1.0, 0.5, 0.25), (0.5, 0.3, 0.2))
    assert torch.allclose(out, 0.5 * depth + 0.5 * 3.0)


def test_box_blur_hand_computed():
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    out = box_blur(x, 3)
    assert out[0, 0, 1, 1].item() == pytest.approx(36 / 9)  # all nine
    assert out[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 3 + 4) / 9)  # zero padding counts
    with pytest.raises(ValueError):
        box_blur(x, 4)


def test_degrade_depth_applies_ops_in_order_on_uint8():
    frames = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(degrade_depth(frames, []), frames)
    ops = [("blur", 3), ("fusion", (1.0, 0.5), (0.25, 0.75))]
    x = frames.permute(0, 3, 1, 2).float() / 255
    expected = scale_fusion(box_blur(x, 3), (1.0, 0.5), (0.25, 0.75))
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(degrade_depth(frames, ops), expected)


# ----------------------------------------------------------------------------------- plans
def stage_settings(stage: int) -> DegradationSettings:
    from longvie.train.config import load_train_config

    return DegradationSettings(**load_train_config(stage=stage)["degradation"])


def test_plans_are_seeded_and_independent_of_call_order():
    settings = stage_settings(3)
    a = [sample_plan(sample_rng(5, 0, i), settings, 100) for i in range(20)]
    b = [sample_plan(sample_rng(5, 0, i), settings, 100) for i in reversed(range(20))][::-1]
    assert a == b
    assert a != [sample_plan(sample_rng(6, 0, i), settings, 100) for i in range(20)]


def test_stage1_plan_rates():
    settings, n = stage_settings(1), 4000
    plans = [sample_plan(sample_rng(0, 0, i), settings) for i in range(n)]
    scales = [p.dense_scale for p in plans if p.dense_scale is not None]
    assert abs(len(scales) / n - 0.15) < 0.02 and min(scales) >= 0.05 and max(scales) <= 1.0
    depth = [p.depth_ops for p in plans if p.depth_ops]
    assert abs(len(depth) / n - 0.10) < 0.02
    assert abs(sum(len(ops) == 2 for ops in depth) / len(depth) - 2 / 3) < 0.08
    for ops in depth:
        for op in ops:
            if op[0] == "blur":
                assert op[1] % 2 == 1 and 3 <= op[1] <= 15
            else:
                assert len(op[1]) == len(FUSION_SCALES) - 1 and sum(op[2]) == pytest.approx(1.0)
    assert all(p.first_frame is None and p.history_frames == 0 for p in plans)


def test_stage2_first_frame_plan_rates():
    settings, n = stage_settings(2), 4000
    frames = [p.first_frame for p in (sample_plan(sample_rng(1, 0, i), settings) for i in range(n)) if p.first_frame]
    assert abs(len(frames) / n - 0.2) < 0.02
    regen = [f for f in frames if f.regen_timestep is not None]
    assert abs(len(regen) / len(frames) - 0.8) < 0.05
    assert {f.regen_timestep for f in regen} == {1, 5, 8, 10, 12}
    assert {f.vae_rounds for f in frames if f.regen_timestep is None} <= set(range(11))
    drift = [f.drift for f in frames if f.drift]
    assert abs(len(drift) / len(frames) - 0.5) < 0.05
    assert all(0.1 <= d.strength <= 0.2 and max(map(abs, d.offset)) <= 0.1 for d in drift)


def test_stage3_history_plan():
    settings, n = stage_settings(3), 4000
    plans = [sample_plan(sample_rng(2, 0, i), settings, history_available=81) for i in range(n)]
    counts = [p.history_frames for p in plans]
    assert set(counts) == {0, 4, 8, 12, 16}
    assert abs(counts.count(0) / n - 0.2) < 0.02
    assert abs(sum(p.history is not None for p in plans) / sum(c > 0 for c in counts) - 0.1) < 0.02
    assert all(p.history.changes_pixels and p.history.regen_timestep is None for p in plans if p.history)
    # Fewer frames available: at most that many, still multiples of 4; fewer than 4: none.
    short = [sample_plan(sample_rng(2, 0, i), settings, history_available=9).history_frames for i in range(200)]
    assert set(short) == {0, 4, 8}
    assert {sample_plan(sample_rng(2, 0, i), settings, 3).history_frames for i in range(50)} == {0}


# ----------------------------------------------------------------------------------- model transforms
class ScaleVAE(torch.nn.Module):
    """A stand-in VAE: encode = x / 2 (frames 0, 4, 8, ... kept), decode = 2 z + 0.1 (4x repeat)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"latents_mean": [0.0] * 3, "latents_std": [1.0] * 3})()

    def encode(self, x):
        latent = x[:, :, ::4] / 2
        return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self_: latent})()})()

    def decode(self, z):
        return type("O", (), {"sample": (2 * z + 0.1).repeat_interleave(4, dim=2)})()


def test_vae_roundtrip_rounds_hand_computed():
    vae = ScaleVAE()
    frame = torch.full((1, 3, 4, 4), 0.5)
    assert torch.equal(vae_roundtrip(vae, frame, 0), frame)
    # one round: 2 (x / 2) + 0.1 = x + 0.1; three rounds: x + 0.3, clamped to [-1, 1]
    assert torch.allclose(vae_roundtrip(vae, frame, 3), frame + 0.3)
    assert torch.allclose(vae_roundtrip(vae, frame, 10), torch.ones_like(frame))
    video = torch.zeros(1, 3, 5, 4, 4)
    assert vae_roundtrip(vae, video, 1).shape == video.shape


def test_vae_roundtrip_with_the_tiny_vae_matches_manual_calls():
    from longvie.presets.tiny import build_tiny_components
    from longvie.sampling.conditioning import vae_decode, vae_encode

    vae = build_tiny_components()["vae"]
    frame = torch.rand(1, 3, 32, 48) * 2 - 1
    manual = frame.unsqueeze(2)
    for _ in range(2):
        manual = vae_decode(vae, vae_encode(vae, manual)).clamp(-1, 1)
    assert torch.allclose(vae_roundtrip(vae, frame, 2), manual[:, :, 0], atol=1e-6)


def test_regenerate_first_frame_is_one_euler_step_from_t_over_1000():
    vae = ScaleVAE()
    seen = {}

    class Velocity(torch.nn.Module):
        dtype = torch.float32

        def forward(self, latents, timestep, **conditions):
            seen.update(timestep=timestep, conditions=conditions)
            return torch.full_like(latents, 2.0)

    latents = torch.full((1, 3, 2, 2, 2), 0.4)
    noise = torch.full_like(latents, -1.0)
    out = regenerate_first_frame(Velocity(), vae, latents, 10, noise, {"text_embeds": torch.zeros(1)})
    s = 0.01
    noisy = (1 - s) * 0.4 + s * -1.0
    expected = 2 * (noisy - s * 2.0) + 0.1  # x0_hat = x_s - s v, decoded
    assert torch.allclose(out, torch.full((1, 3, 2, 2), expected))
    assert seen["timestep"].tolist() == [10.0] and "text_embeds" in seen["conditions"]


def test_frame_degradation_changes_pixels():
    assert not FrameDegradation().changes_pixels
    assert FrameDegradation(vae_rounds=1).changes_pixels and FrameDegradation(regen_timestep=1).changes_pixels
    assert FrameDegradation(drift=ColorDrift(0.1, (0, 0, 0), 0)).changes_pixels


def test_settings_validation():
    with pytest.raises(ValueError, match="probability"):
        DegradationSettings(depth_p=1.5)
    with pytest.raises(ValueError, match="multiple of 4"):
        DegradationSettings(history_max_frames=6)
    with pytest.raises(TypeError):
        DegradationSettings(unknown_key=1)


def test_plan_is_deterministic_numpy_generator():
    rng = sample_rng(1, 2, 3)
    assert isinstance(rng, np.random.Generator)
    assert sample_rng(1, 2, 3).random() == rng.random()
