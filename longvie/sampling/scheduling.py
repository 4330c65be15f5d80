"""Flow-matching noise schedule of Wan2.1 / LongVie 2 (SPEC §4 and §6), on diffusers' Euler scheduler."""
from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """s' = shift*s / (1 + (shift-1)*s)  (SD3-style timestep shift; Wan2.1 uses shift 5)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def check_timesteps(timesteps) -> list[float]:
    """A custom schedule as a list of floats: strictly decreasing values in (0, 1000].

    These are grid positions *before* the shift, as LightX2V's ``denoising_step_list`` (e.g. the
    4-step distilled schedule 1000, 750, 500, 250); the model then sees 1000 * shift(t / 1000).
    """
    try:
        values = [float(t) for t in timesteps]
    except (TypeError, ValueError):
        raise ValueError(f"timesteps must be a list of numbers, got {timesteps!r}") from None
    if not values:
        raise ValueError("timesteps is empty: give at least one value in (0, 1000]")
    if any(not np.isfinite(t) or not 0 < t <= NUM_TRAIN_TIMESTEPS for t in values):
        raise ValueError(f"timesteps must lie in (0, {NUM_TRAIN_TIMESTEPS}], got {values}")
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError(f"timesteps must be strictly decreasing, got {values}")
    return values


def make_sampling_scheduler(num_inference_steps: int = 50, shift: float = 5.0, device=None,
                            timesteps=None) -> FlowMatchEulerDiscreteScheduler:
    """An Euler flow-matching scheduler with LongVie 2's inference schedule.

    sigmas = shift(linspace(1, 0, steps+1)[:-1]), timesteps = 1000 * sigmas, and a final
    sigma of 0; each step is x <- x + v * (s_next - s) with v = noise - x0.

    ``timesteps`` (optional) replaces the evenly spaced grid by explicit positions before the shift
    (see :func:`check_timesteps`): sigmas = shift(timesteps / 1000), then 0. For the step-distilled
    schedule [1000, 750, 500, 250] with shift 5 this gives sigmas 1, 0.9375, 0.8333, 0.625 and model
    timesteps 1000, 937.5, 833.3, 625. That is how LightX2V's ``WanStepDistillScheduler`` turns its
    ``denoising_step_list`` into sigmas (github.com/ModelTC/LightX2V,
    lightx2v/models/schedulers/wan/step_distill/scheduler.py: the shifted 1000-point grid
    shift(linspace(1, 0, 1001)[:-1]) indexed at 1000 - t), and since LightX2V commit 753a494c
    (2025-11-24) its update is this same Euler step, x0 + sigma_next * v = x + (sigma_next - sigma) v;
    earlier versions re-noised x0 with fresh noise instead.
    """
    if timesteps is not None:
        values = check_timesteps(timesteps)
        if num_inference_steps is not None and num_inference_steps != len(values):
            raise ValueError(f"num_inference_steps={num_inference_steps} but {len(values)} timesteps were given "
                             f"({values}); they must agree")
        sigmas = np.asarray(values, dtype=np.float64) / NUM_TRAIN_TIMESTEPS
    else:
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    scheduler.set_timesteps(sigmas=sigmas, device=device)
    return scheduler


# --------------------------------------------------------------------------- training (SPEC §6)
# The training schedule of LongVie 2 is DiffSynth-Studio's FlowMatchScheduler(shift=5, sigma_min=0,
# extra_one_step=True) after set_timesteps(1000, training=True) (upstream Vchitect/LongVie,
# diffsynth/schedulers/flow_match.py): 1000 shifted sigmas, a timestep index drawn uniformly, and a
# bell-shaped loss weight over the timestep value.
def training_sigmas(num_steps: int = NUM_TRAIN_TIMESTEPS, shift: float = 5.0) -> torch.Tensor:
    """(num_steps,) float64 noise levels of the training schedule, from 1 down to shift(1/num_steps).

    sigmas = shift(linspace(1, 0, num_steps + 1)[:-1]); the matching timesteps are 1000 * sigmas.
    """
    sigmas = np.linspace(1.0, 0.0, num_steps + 1)[:-1]
    return torch.from_numpy(shift_sigmas(sigmas, shift))


def training_timestep_weights(timesteps: torch.Tensor, num_steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Bell-shaped loss weight of each timestep of the schedule (SPEC §6).

    w = exp(-2 ((t - num_steps/2) / num_steps)^2), shifted so its minimum over the schedule is 0,
    then scaled so its mean over the schedule is 1 (DiffSynth ``training_weight``:
    ``y_shifted * (num_steps / y_shifted.sum())``).

    Args:
        timesteps: (num_steps,) the whole schedule (1000 * sigmas).
    Returns:
        (num_steps,) weights, same dtype as ``timesteps``.
    """
    y = torch.exp(-2 * ((timesteps - num_steps / 2) / num_steps) ** 2)
    y = y - y.min()
    return y * (len(timesteps) / y.sum())


class TrainingSchedule:
    """The 1000-step shifted training schedule: sigmas, timesteps, loss weights and sampling.

    >>> schedule = TrainingSchedule(shift=5.0)
    >>> sigma, timestep, weight = schedule.sample(batch=1, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, shift: float = 5.0, num_steps: int = NUM_TRAIN_TIMESTEPS):
        self.num_steps = num_steps
        self.sigmas = training_sigmas(num_steps, shift)
        self.timesteps = self.sigmas * NUM_TRAIN_TIMESTEPS
        self.weights = training_timestep_weights(self.timesteps, num_steps)

    def sample_indices(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch,) schedule indices drawn uniformly from 0..num_steps-1 (on the CPU)."""
        return torch.randint(0, self.num_steps, (batch,), generator=generator)

    def sample(self, batch: int = 1, generator: torch.Generator | None = None):
        """Draw timesteps uniformly from the schedule.

        Returns:
            sigma (batch,), timestep (batch,) = 1000 * sigma, weight (batch,) — float32 on the CPU.
        """
        index = self.sample_indices(batch, generator)
        return self.sigmas[index].float(), self.timesteps[index].float(), self.weights[index].float()
