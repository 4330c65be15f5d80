"""Run under torchrun by test_parallel.py: one tiny clip single-process, then spread over the ranks.

Every rank computes the single-process reference itself (no collective involved), then the same
velocity and the same 2-step clip under each requested parallel layout; rank 0 saves all of them.
Usage: torchrun --nproc_per_node N parallel_worker.py BASE_DIR LONGVIE_DIR OUT LAYOUT [LAYOUT ...]
with LAYOUT = "<sequence_degree>x<cfg_degree>".
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

from longvie.acceleration.parallel import ParallelConfig, apply_parallelism, init_distributed, remove_parallelism
from longvie.sampling.guidance import GuidedVelocity
from longvie.sampling.pipeline import LongViePipeline


def clip_kwargs():
    rng = np.random.default_rng(0)
    video = lambda n: rng.integers(0, 256, (n, 64, 112, 3), dtype=np.uint8)  # noqa: E731
    return dict(image=video(1)[0], prompt="a rider on a snowy trail", dense_video=video(9), sparse_video=video(9),
                history=video(8), num_frames=9, height=64, width=112, num_inference_steps=2, progress=False, seed=5)


def final_latents(pipe):
    seen = {}
    pipe(**clip_kwargs(), callback_on_step_end=lambda p, s, t, st: seen.update(latents=st["latents"].clone()))
    return seen["latents"]


def velocity(pipe, parallel):
    g = torch.Generator().manual_seed(1)
    denoiser = pipe.denoiser
    cond = dict(image_embeds=torch.randn(1, 5, 32, generator=g), image_latents=torch.randn(1, 20, 3, 8, 14, generator=g),
                dense_latents=torch.randn(1, 36, 3, 8, 14, generator=g),
                sparse_latents=torch.randn(1, 36, 3, 8, 14, generator=g),
                history_latents=torch.randn(1, 16, 2, 8, 14, generator=g))
    positive, negative = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    latents = torch.randn(1, 16, 3, 8, 14, generator=g)
    guided = GuidedVelocity(denoiser, positive, negative, cond, guidance_scale=5.0, parallel=parallel)
    return guided(latents, torch.full((1,), 700.0))


def main(base_dir, longvie_dir, out, *layouts):
    torch.set_num_threads(1)
    rank, world = init_distributed()
    pipe = LongViePipeline.from_pretrained(base_dir, longvie_dir, torch_dtype=torch.float32, device="cpu")
    results = {"reference_velocity": velocity(pipe, None), "reference_latents": final_latents(pipe)}
    for layout in layouts:
        sequence, cfg = map(int, layout.split("x"))
        pipe._parallel = apply_parallelism(pipe.denoiser, ParallelConfig(sequence, cfg))
        results[f"{layout}_velocity"] = velocity(pipe, pipe._parallel)
        results[f"{layout}_latents"] = final_latents(pipe)
        remove_parallelism(pipe.denoiser)
        pipe._parallel = None
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
