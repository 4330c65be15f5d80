"""Run under torchrun by test_parallel.py: one tiny clip single-process, then spread over the ranks.

Every rank computes the single-process references itself (no collective involved), then the same
results under each requested parallel layout; rank 0 saves all of them.
Usage: torchrun --nproc_per_node N parallel_worker.py BASE_DIR LONGVIE_DIR OUT ITEM [ITEM ...]

ITEM is a layout "<sequence_degree>x<cfg_degree>[@option]" — option "odd": a latent grid with an odd
token count (uneven shards on 2 ranks: LongVie's own all-to-all and the uneven key/value gather);
any other option names an attention backend (e.g. "_native_math", which diffusers cannot run
context-parallel) — or "stages": the encoders, the prompt cache (umT5 on rank 0 only; the other ranks
load none) and the tiled VAE decode split over all ranks, each against one process.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

from longvie.acceleration.parallel import ParallelConfig, apply_parallelism, init_distributed, remove_parallelism
from longvie.sampling.guidance import GuidedVelocity
from longvie.sampling.pipeline import LongViePipeline

GRIDS = {"": (8, 14), "odd": (6, 14)}  # latent height x width: 84 / 63 clip tokens over 3 frames


def clip_kwargs():
    rng = np.random.default_rng(0)
    video = lambda n: rng.integers(0, 256, (n, 64, 112, 3), dtype=np.uint8)  # noqa: E731
    return dict(image=video(1)[0], prompt="a rider on a snowy trail", dense_video=video(9), sparse_video=video(9),
                history=video(8), num_frames=9, height=64, width=112, num_inference_steps=2, progress=False, seed=5)


def final_latents(pipe):
    seen = {}
    pipe(**clip_kwargs(), callback_on_step_end=lambda p, s, t, st: seen.update(latents=st["latents"].clone()))
    return seen["latents"]


def velocity(pipe, parallel, grid=(8, 14)):
    g = torch.Generator().manual_seed(1)
    h, w = grid
    denoiser = pipe.denoiser
    cond = dict(image_embeds=torch.randn(1, 5, 32, generator=g), image_latents=torch.randn(1, 20, 3, h, w, generator=g),
                dense_latents=torch.randn(1, 36, 3, h, w, generator=g),
                sparse_latents=torch.randn(1, 36, 3, h, w, generator=g),
                history_latents=torch.randn(1, 16, 2, h, w, generator=g))
    positive, negative = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    latents = torch.randn(1, 16, 3, h, w, generator=g)
    guided = GuidedVelocity(denoiser, positive, negative, cond, guidance_scale=5.0, parallel=parallel)
    return guided(latents, torch.full((1,), 700.0))


def stage_outputs(pipe):
    """The encoders of one clip, two cached prompts and a tiled decode with 15 small tiles."""
    from longvie.sampling.conditioning import frames_to_tensor
    from longvie.sampling.distributed import decode_over_ranks, encode_over_ranks

    kwargs = clip_kwargs()
    pixels = lambda video: frames_to_tensor(video)  # noqa: E731 - 64 x 112 already
    first = pixels(kwargs["image"][None])[:, :, 0]
    prompts = [kwargs["prompt"], "a second prompt"]
    out = {}
    if pipe._parallel is None:
        from longvie.sampling.conditioning import (
            clip_pixel_values,
            control_condition,
            encode_image,
            encode_prompt,
            image_condition,
            vae_decode,
            vae_encode,
        )

        out["prompt_embeds"] = encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts[:1], "cpu", torch.float32)
        out["negative_embeds"] = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["no"], "cpu", torch.float32)
        out["image_embeds"] = encode_image(pipe.image_encoder, clip_pixel_values(first, pipe.image_processor),
                                           torch.float32)
        out["image_latents"] = image_condition(pipe.vae, first, 9)
        out["dense"] = control_condition(pipe.vae, pixels(kwargs["dense_video"]))
        out["sparse"] = control_condition(pipe.vae, pixels(kwargs["sparse_video"]))
        out["history_latents"] = vae_encode(pipe.vae, pixels(kwargs["history"]))
        out["cached"] = torch.cat([encode_prompt(pipe.tokenizer, pipe.text_encoder, [p], "cpu", torch.float32)
                                   for p in prompts])
        decode = lambda z: vae_decode(pipe.vae, z)  # noqa: E731
    else:
        names = ["prompt_embeds", "negative_embeds", "image_embeds", "image_latents", "dense", "sparse",
                 "history_latents"]
        encoded = encode_over_ranks(pipe, prompts[:1], ["no"], first, 9, lambda: pixels(kwargs["dense_video"]),
                                    lambda: pixels(kwargs["sparse_video"]), lambda: pixels(kwargs["history"]))
        out.update(zip(names, encoded))
        pipe.cache_prompts(prompts, release_text_encoder=True)
        out["cached"] = pipe.prompt_cache.lookup(prompts, "cpu", torch.float32)
        out["text_encoder_after_release"] = torch.tensor(pipe.text_encoder is not None)
        decode = lambda z: decode_over_ranks(pipe.vae, z, pipe._parallel)  # noqa: E731
    pipe.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                           tile_sample_stride_width=24)  # 3 x 5 tiles on the 8 x 14 latent grid
    out["decoded_tiled"] = decode(torch.randn(1, 16, 3, 8, 14, generator=torch.Generator().manual_seed(3)))
    pipe.vae.disable_tiling()
    return out


def main(base_dir, longvie_dir, out, *items):
    torch.set_num_threads(1)
    rank, world = init_distributed("cpu")
    # the ranks other than 0 leave umT5 on disk, as the CLI does (rank 0 encodes every prompt)
    pipe = LongViePipeline.from_pretrained(base_dir, longvie_dir, torch_dtype=torch.float32, device="cpu",
                                           load_text_encoder=rank == 0)
    results = {"reference_velocity": velocity(pipe, None), "reference_latents": final_latents(pipe),
               "reference_velocity_odd": velocity(pipe, None, GRIDS["odd"])}
    for item in items:
        if item == "stages":
            reference = stage_outputs(pipe) if rank == 0 else None  # only rank 0 has umT5 for the reference
            pipe.enable_parallelism(world, 1)
            results.update({f"stages_{k}": v for k, v in stage_outputs(pipe).items()})
            if rank == 0:
                results.update({f"stages_reference_{k}": v for k, v in reference.items()})
            remove_parallelism(pipe.denoiser)
            pipe._parallel = None
            continue
        layout, _, option = item.partition("@")
        sequence, cfg = map(int, layout.split("x"))
        backend = option if option not in GRIDS else None
        if backend:
            pipe.denoiser.set_attention_backend(backend)
            results[f"reference_velocity_{backend}"] = velocity(pipe, None)
        pipe._parallel = apply_parallelism(pipe.denoiser, ParallelConfig(sequence, cfg))
        results[f"{item}_velocity"] = velocity(pipe, pipe._parallel, GRIDS.get(option, GRIDS[""]))
        if not option:
            results[f"{item}_latents"] = final_latents(pipe)
        remove_parallelism(pipe.denoiser)
        pipe._parallel = None
        if backend:
            pipe.denoiser.set_attention_backend("native")
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
