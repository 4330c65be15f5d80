"""Issue 10 training fixes: frame-exact VAE round trips of 4k-frame histories, and the paper/upstream
settings of dense weakening and the degradation mix (SPEC §6)."""
from collections import Counter
from pathlib import Path

import pytest
import torch

from longvie.train.config import load_train_config
from longvie.train.degradations import DegradationSettings, sample_plan, sample_rng, vae_roundtrip

REPO = Path(__file__).resolve().parents[2]


class CausalMeanVAE(torch.nn.Module):
    """Wan's frame rule with exact arithmetic: T frames -> latent 0 = frame 0, then one latent per
    group of 4 frames (their mean); frames beyond 1 + 4k are not encoded. Decoding repeats each
    group latent 4 times."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"latents_mean": [0.0] * 3, "latents_std": [1.0] * 3})()

    def encode(self, x):
        groups = (x.shape[2] - 1) // 4
        parts = [x[:, :, :1]] + [x[:, :, 1 + 4 * g:5 + 4 * g].mean(2, keepdim=True) for g in range(groups)]
        latent = torch.cat(parts, 2)
        return type("E", (), {"latent_dist": type("D", (), {"mode": lambda self_: latent})()})()

    def decode(self, z):
        out = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], 2)
        return type("O", (), {"sample": out})()


@pytest.mark.parametrize("frames", [4, 8, 12, 16])
def test_roundtrip_keeps_frame_count_and_alignment(frames):
    # frame i has the value i / 32: a shift by one frame or more is visible
    video = (torch.arange(frames, dtype=torch.float32) / 32).view(1, 1, frames, 1, 1).expand(1, 3, frames, 2, 2)
    out = vae_roundtrip(CausalMeanVAE(), video.clone(), 1)
    assert out.shape == video.shape
    assert torch.equal(out[:, :, 0], video[:, :, 0])  # the first frame is encoded on its own
    # Every other frame comes back as the mean of its own group of 4 (the last group padded with
    # copies of the last frame): within 1.5 frames of itself, and the last frame close to the last.
    error = (out - video).abs().amax(dim=(0, 1, 3, 4)) * 32
    assert error.max() <= 1.5 + 1e-5, error
    last_group = torch.tensor([frames - 3, frames - 2, frames - 1, frames - 1], dtype=torch.float32).mean() / 32
    assert torch.allclose(out[:, :, -1], torch.full_like(out[:, :, -1], float(last_group)))
    # two rounds keep it too
    assert vae_roundtrip(CausalMeanVAE(), video.clone(), 2).shape == video.shape


@pytest.mark.parametrize("frames", [4, 8, 12, 16])
def test_roundtrip_with_the_tiny_wan_vae_keeps_frames(frames):
    from longvie.presets.tiny import build_tiny_components
    from longvie.sampling.conditioning import vae_decode, vae_encode

    vae = build_tiny_components()["vae"]
    video = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    out = vae_roundtrip(vae, video, 1)
    assert out.shape == video.shape
    # independent: the VAE on the video extended by one copy of its last frame (4k + 1 frames)
    padded = torch.cat([video, video[:, :, -1:]], 2)
    expected = vae_decode(vae, vae_encode(vae, padded)).clamp(-1, 1)[:, :, :frames]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # what the unpadded round trip gives: 4k - 3 frames
    assert vae_decode(vae, vae_encode(vae, video)).shape[2] == frames - 3


# ------------------------------------------------------------------------------- configs
def degradation(name):
    stage = int(name.split("stage")[1][0])
    return load_train_config(REPO / "configs" / f"{name}.yaml", stage=stage)["degradation"]


def test_paper_defaults_and_upstream_alternatives():
    stage1, stage3 = degradation("train_stage1"), degradation("train_stage3")
    assert stage1["dense_weakening_p"] == 0.15 and stage1["dense_weakening_range"] == [0.05, 1.0]
    assert stage1["dense_weakening_position"] == "after" and stage1["depth_p"] == 0.10
    assert stage3["dense_weakening_p"] == 0.0
    for name in ("train_stage2", "train_stage3"):
        paper = degradation(name)
        assert paper["regen_p"] == 0.8 and paper["regen_timesteps"] == [1, 5, 8, 10, 12]
        assert paper["regen_timestep_weights"] is None and paper["vae_round_weights"] is None
        assert paper["vae_rounds"] == [0, 10] and paper["color_drift_independent"] is False
    up1, up3 = degradation("train_stage1_upstream"), degradation("train_stage3_upstream")
    assert up1["dense_weakening_p"] == 0.0 and up1["depth_p"] == 0.0
    assert up3["dense_weakening_p"] == 0.05 and up3["dense_weakening_range"] == [0.8, 1.2]
    assert up3["dense_weakening_position"] == "before"
    assert up3["regen_p"] == 0.6 and up3["regen_timesteps"] == [1, 2, 3, 4, 6]
    assert up3["regen_timestep_weights"] == [6, 4, 3, 2, 1] and up3["vae_rounds"] == [0, 4]
    assert up3["vae_round_weights"] == [5, 4, 3, 2, 1] and up3["color_drift_independent"] is True
    assert up3["color_drift_p"] == 0.1 and up3["history_drift_strength"] == [0.1, 0.3]
    for name in ("train_stage1", "train_stage2", "train_stage3", "train_stage1_upstream",
                 "train_stage2_upstream", "train_stage3_upstream"):
        DegradationSettings(**degradation(name))  # every key is a setting


def test_upstream_mix_frequencies():
    settings = DegradationSettings(**degradation("train_stage3_upstream"))
    plans = [sample_plan(sample_rng(3, 0, i), settings) for i in range(6000)]
    degraded = [p.first_frame for p in plans if p.first_frame is not None
                and (p.first_frame.regen_timestep is not None or p.first_frame.vae_rounds > 0
                     or p.first_frame.drift is None)]
    regen = Counter(f.regen_timestep for f in degraded if f.regen_timestep is not None)
    total = sum(regen.values())
    for t, w in zip([1, 2, 3, 4, 6], [6, 4, 3, 2, 1]):
        expected = w / 16
        assert abs(regen[t] / total - expected) < 4 * (expected * (1 - expected) / total) ** 0.5, (t, regen)
    # colour drift independent of the degradation, p 0.1
    drifted = sum(p.first_frame is not None and p.first_frame.drift is not None for p in plans) / len(plans)
    assert abs(drifted - 0.1) < 0.02
    weakened = [p.dense_scale for p in plans if p.dense_scale is not None]
    assert abs(len(weakened) / len(plans) - 0.05) < 0.012 and 0.8 <= min(weakened) and max(weakened) <= 1.2
    vae_rounds = Counter(f.vae_rounds for f in degraded if f.regen_timestep is None)
    assert set(vae_rounds) <= set(range(5)) and vae_rounds[0] > vae_rounds[4]


def test_settings_validation():
    with pytest.raises(ValueError, match="dense_weakening_position"):
        DegradationSettings(dense_weakening_position="middle")
    with pytest.raises(ValueError, match="regen_timestep_weights"):
        DegradationSettings(regen_timestep_weights=(1, 2))
    with pytest.raises(ValueError, match="vae_round_weights"):
        DegradationSettings(vae_rounds=(0, 4), vae_round_weights=(1, 1, 1))


def test_dense_weakening_position_before_and_after_the_linear():
    from longvie.presets.tiny import build_tiny_control, build_tiny_transformer

    control = build_tiny_control(build_tiny_transformer())
    linear = control.control_initial_combine_linear_dense
    tokens = torch.randn(2, 5, linear.in_features)
    sparse = torch.randn(2, 5, linear.in_features)
    context = torch.randn(2, 7, linear.in_features)
    t_mod = torch.randn(2, 6, linear.in_features)
    scale = torch.tensor([0.5, 1.1])
    with torch.no_grad():
        after = control.prepare(tokens, sparse, context, t_mod, scale)[0]
        control.dense_weakening_position = "before"
        before = control.prepare(tokens, sparse, context, t_mod, scale)[0]
        control.dense_weakening_position = "after"
        torch.testing.assert_close(after, linear(tokens) * scale.view(-1, 1, 1))
        torch.testing.assert_close(before, linear(tokens * scale.view(-1, 1, 1)))
    assert not torch.allclose(after, before)  # the bias makes the order matter
