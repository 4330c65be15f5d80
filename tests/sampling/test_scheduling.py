"""The sampling schedule matches SPEC §4's formula."""
import numpy as np
import torch

from longvie.sampling.scheduling import make_sampling_scheduler


def test_sigmas_and_timesteps_for_50_steps_shift_5():
    scheduler = make_sampling_scheduler(50, shift=5.0)
    s = np.linspace(1, 0, 51)[:-1]
    expected = 5 * s / (1 + 4 * s)
    assert np.allclose(scheduler.sigmas[:-1].numpy(), expected, atol=1e-6)
    assert scheduler.sigmas[-1].item() == 0.0 and len(scheduler.sigmas) == 51
    assert np.allclose(scheduler.timesteps.numpy(), 1000 * expected, atol=1e-3)
    assert scheduler.timesteps[0].item() == 1000.0


def test_euler_step_is_x_plus_v_times_dsigma():
    scheduler = make_sampling_scheduler(4, shift=5.0)
    x = torch.randn(1, 16, 2, 4, 4)
    v = torch.randn_like(x)
    sigmas = scheduler.sigmas
    for i, t in enumerate(scheduler.timesteps):
        out = scheduler.step(v, t, x, return_dict=False)[0]
        assert torch.allclose(out, x + v * (sigmas[i + 1] - sigmas[i]), atol=1e-6)
        x = out


def test_step_distilled_schedule_is_lightx2v_formula():
    """LightX2V WanStepDistillScheduler: the shifted 1000-point grid shift(linspace(1, 0, 1001)[:-1]), indexed
    at 1000 - t for t in denoising_step_list, then the Euler update x + (s_next - s) v down to 0."""
    steps = [1000, 750, 500, 250]
    grid = np.linspace(1, 0, 1001)[:-1]
    grid = 5 * grid / (1 + 4 * grid)
    expected = grid[[1000 - t for t in steps]]
    scheduler = make_sampling_scheduler(4, shift=5.0, timesteps=steps)
    assert np.allclose(scheduler.sigmas[:-1].numpy(), expected, atol=1e-6) and scheduler.sigmas[-1] == 0
    assert np.allclose(scheduler.timesteps.numpy(), [1000, 937.5, 833.3333, 625], atol=1e-3)
    other = make_sampling_scheduler(3, shift=3.0, timesteps=[999, 600, 10])
    assert np.allclose(other.sigmas[:-1].numpy(), [3 * s / (1 + 2 * s) for s in (0.999, 0.6, 0.01)], atol=1e-6)


def test_explicit_timesteps_are_checked():
    import pytest

    for bad in ([], [1000, 1000], [250, 500], [1200, 10], [0.0], "abc"):
        with pytest.raises(ValueError, match="timesteps"):
            make_sampling_scheduler(None, 5.0, timesteps=bad)
    with pytest.raises(ValueError, match="agree"):
        make_sampling_scheduler(5, 5.0, timesteps=[1000, 500])
