"""Training schedule and loss functions against hand computations (SPEC §6)."""
import math

import numpy as np
import pytest
import torch

from longvie.sampling.scheduling import TrainingSchedule, training_sigmas, training_timestep_weights
from longvie.train.losses import (
    add_noise,
    degraded_frame_loss,
    flow_matching_loss,
    flow_target,
    frame_weighted_mse,
    frame_weights,
    highpass,
    lowpass,
)


# ----------------------------------------------------------------------------------- schedule
def test_training_sigmas_are_the_shifted_1000_step_schedule():
    sigmas = training_sigmas(1000, shift=5.0)
    assert sigmas.shape == (1000,)
    for i in (0, 1, 500, 999):
        s = 1 - i / 1000  # linspace(1, 0, 1001)[:-1]
        assert sigmas[i].item() == pytest.approx(5 * s / (1 + 4 * s), abs=1e-12)
    assert sigmas[0] == 1.0 and sigmas[-1] == pytest.approx(5 * 0.001 / 1.004)


def test_bell_weight_hand_computed_for_four_timesteps():
    timesteps = torch.tensor([0.0, 250.0, 500.0, 1000.0], dtype=torch.float64)
    y = [math.exp(-2 * ((t - 500) / 1000) ** 2) for t in timesteps.tolist()]
    shifted = [v - min(y) for v in y]
    expected = [v * 4 / sum(shifted) for v in shifted]  # mean 1 over the 4 entries
    # num_steps sets the bell's centre and width (1000 -> centre 500), len() the normalisation.
    got = training_timestep_weights(timesteps, num_steps=1000)
    assert np.allclose(got.numpy(), expected, atol=1e-12)


def test_schedule_weights_min_zero_mean_one_peak_at_500():
    schedule = TrainingSchedule(shift=5.0)
    assert schedule.weights.min().item() == pytest.approx(0.0, abs=1e-12)
    assert schedule.weights.mean().item() == pytest.approx(1.0, abs=1e-9)
    peak = schedule.timesteps[schedule.weights.argmax()].item()
    assert abs(peak - 500) < 1.0
    # The minimum sits at the end farthest from 500: t = 1000 (index 0), not t ~ 5 (index 999).
    assert schedule.weights.argmin().item() == 0 and schedule.weights[999].item() > 0


def test_timestep_sampling_is_uniform_over_indices_and_seeded():
    schedule = TrainingSchedule()
    a = schedule.sample_indices(20000, torch.Generator().manual_seed(3))
    b = schedule.sample_indices(20000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 999
    counts = torch.bincount(a // 100, minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    sigma, timestep, weight = schedule.sample(2, torch.Generator().manual_seed(0))
    index = schedule.sample_indices(2, torch.Generator().manual_seed(0))
    assert torch.allclose(timestep, 1000 * sigma)
    assert torch.allclose(weight, schedule.weights[index].float())


# ----------------------------------------------------------------------------------- flow matching
def test_add_noise_and_target():
    x0 = torch.tensor([2.0, -1.0]).view(1, 1, 2, 1, 1)
    noise = torch.tensor([0.5, 3.0]).view(1, 1, 2, 1, 1)
    noisy = add_noise(x0, noise, torch.tensor([0.25]))
    assert noisy.flatten().tolist() == [0.75 * 2 + 0.25 * 0.5, 0.75 * -1 + 0.25 * 3]
    assert flow_target(x0, noise).flatten().tolist() == [-1.5, 4.0]
    # Per-sample sigma broadcasts over (C, F, H, W).
    batch = add_noise(torch.zeros(2, 1, 1, 1, 1), torch.ones(2, 1, 1, 1, 1), torch.tensor([0.1, 0.9]))
    assert batch.flatten().tolist() == pytest.approx([0.1, 0.9])


def test_flow_matching_loss_is_mse():
    pred, target = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 0.0, 3.0, 0.0])
    assert flow_matching_loss(pred, target).item() == pytest.approx((4 + 16) / 4)


def test_frame_weights():
    assert frame_weights(5).tolist() == pytest.approx([0.05, 0.325, 0.757, 1.0, 1.0])
    assert frame_weights(2).tolist() == pytest.approx([0.05, 0.325])
    assert frame_weights(21).sum().item() == pytest.approx(0.05 + 0.325 + 0.757 + 18)


def test_frame_weighted_mse_hand_computed():
    pred = torch.zeros(1, 1, 4, 1, 2)
    target = torch.tensor([1.0, 1.0, 2.0, 0.0, 1.0, 3.0, 2.0, 2.0]).view(1, 1, 4, 1, 2)
    weights = torch.tensor([0.05, 0.325, 0.757, 1.0])
    # squared errors per frame: (1, 1), (4, 0), (1, 9), (4, 4); the mean divides by all 8 elements
    expected = (0.05 * 2 + 0.325 * 4 + 0.757 * 10 + 1.0 * 8) / 8
    assert frame_weighted_mse(pred, target, weights).item() == pytest.approx(expected)


# ----------------------------------------------------------------------------------- low / high pass
def test_lowpass_of_2x2_is_its_mean_and_highpass_the_rest():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]]).view(1, 1, 1, 2, 2)
    # 0.5x bilinear down of 2x2 samples the centre = mean 3; up-sampling a 1x1 is constant.
    assert torch.allclose(lowpass(x), torch.full_like(x, 3.0))
    assert torch.allclose(highpass(x), x - 3.0)


def test_lowpass_4x4_hand_computed_per_frame():
    # Down 4x4 -> 2x2 (align_corners=False, scale 0.5): each output is the mean of a 2x2 block.
    # Up 2x2 -> 4x4: source coordinate (i + 0.5) / 2 - 0.5 -> weights 1 or 3/4-1/4 per axis.
    x = torch.arange(16, dtype=torch.float32).view(4, 4)
    blocks = torch.tensor([[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]])
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # (4 out, 2 in) per axis
    expected = w @ blocks @ w.T
    video = torch.stack([x, 2 * x]).view(1, 1, 2, 4, 4)  # two frames, filtered independently
    out = lowpass(video)
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-5)
    assert torch.allclose(out[0, 0, 1], 2 * expected, atol=1e-5)
    assert torch.allclose(highpass(video) + out, video)


def test_lowpass_keeps_constants():
    x = torch.full((1, 2, 3, 4, 6), 1.5)
    assert torch.allclose(lowpass(x), x) and highpass(x).abs().max() < 1e-6


# ----------------------------------------------------------------------------------- degraded loss
def test_degraded_frame_loss_hand_computed():
    torch.manual_seed(0)
    pred, target = torch.randn(1, 2, 4, 4, 4), torch.randn(1, 2, 4, 4, 4)
    degraded, history = torch.randn(1, 2, 1, 4, 4), torch.randn(1, 2, 1, 4, 4)
    out = degraded_frame_loss(pred, target, degraded, history)

    weights = torch.tensor([0.05, 0.325, 0.757, 1.0]).view(1, 1, 4, 1, 1)
    main = ((pred - target) ** 2 * weights).mean()
    p0, t0 = pred[:, :, :1], target[:, :, :1]
    lp = ((lowpass(p0) - lowpass(degraded)) ** 2).mean()
    hp = (((p0 - lowpass(p0)) - (t0 - lowpass(t0))) ** 2).mean()
    consistency = ((p0 - history) ** 2).mean()
    assert out["main"].item() == pytest.approx(main.item(), rel=1e-6)
    assert out["lowpass"].item() == pytest.approx(lp.item(), rel=1e-6)
    assert out["highpass"].item() == pytest.approx(hp.item(), rel=1e-6)
    assert out["consistency"].item() == pytest.approx(consistency.item(), rel=1e-6)
    total = main + 0.2 * lp + 0.15 * hp + 0.5 * consistency
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)

    without_history = degraded_frame_loss(pred, target, degraded, None)
    assert "consistency" not in without_history
    assert without_history["loss"].item() == pytest.approx((main + 0.2 * lp + 0.15 * hp).item(), rel=1e-6)
