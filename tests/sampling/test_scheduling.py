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
