"""Flow-matching noise schedule of Wan2.1 / LongVie 2 (SPEC §4 and §6), on diffusers' Euler scheduler."""
from __future__ import annotations

import numpy as np
from diffusers import FlowMatchEulerDiscreteScheduler

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """s' = shift*s / (1 + (shift-1)*s)  (SD3-style timestep shift; Wan2.1 uses shift 5)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def make_sampling_scheduler(num_inference_steps: int = 50, shift: float = 5.0, device=None
                            ) -> FlowMatchEulerDiscreteScheduler:
    """An Euler flow-matching scheduler with LongVie 2's inference schedule.

    sigmas = shift(linspace(1, 0, steps+1)[:-1]), timesteps = 1000 * sigmas, and a final
    sigma of 0; each step is x <- x + v * (s_next - s) with v = noise - x0.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=sigmas, device=device)
    return scheduler
