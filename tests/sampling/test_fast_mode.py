"""The fast mode: the configs' 4-step distilled schedule without guidance makes one denoiser call per step."""
from __future__ import annotations

import numpy as np
import torch

from longvie.presets.config import load_config


def _count_calls(pipe, **kwargs):
    calls = []
    forward = pipe.denoiser.forward

    def counting(*args, **kw):
        calls.append(kw.get("timestep", args[1] if len(args) > 1 else None))
        return forward(*args, **kw)

    pipe.denoiser.forward = counting
    try:
        rng = np.random.default_rng(0)
        video = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
        frames, _ = pipe(video[0], "a test", video, video, num_frames=9, height=32, width=48, progress=False,
                         **kwargs)
    finally:
        del pipe.denoiser.forward
    return calls, frames


@torch.no_grad()
def test_fast_config_makes_one_denoiser_call_per_step(tiny_pipeline):
    sampling = load_config("longvie2_i2v_14b_fast")["sampling"]
    assert sampling["steps"] == 4 and sampling["cfg"] == 1.0 and sampling["timesteps"] == [1000, 750, 500, 250]
    calls, frames = _count_calls(tiny_pipeline, guidance_scale=sampling["cfg"], shift=sampling["shift"],
                                 num_inference_steps=sampling["steps"], timesteps=sampling["timesteps"])
    assert len(calls) == 4 and frames.shape == (9, 32, 48, 3)
    # the model sees 1000 * shift(t / 1000): 1000, 937.5, 833.3, 625 (float32 preset)
    assert np.allclose([float(t[0]) for t in calls], [1000, 937.5, 833.3333, 625], atol=1e-3)
    guided, _ = _count_calls(tiny_pipeline, guidance_scale=5.0, num_inference_steps=4)
    assert len(guided) == 8  # with guidance: two calls per step
