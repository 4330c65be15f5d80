"""The pipeline's work around the denoiser, without serial parts on several GPUs, and prompt embeddings
that outlive umT5.

* **Encoders over the ranks** (:func:`encode_over_ranks`): a clip's encoder calls — CLIP on the first
  frame, the VAE encodes of the image condition, of each control video and of each control video's
  first-frame condition, of the history — are tasks spread over all ranks
  (:meth:`~longvie.acceleration.parallel.ParallelState.run_split`) and broadcast; umT5 runs on rank 0
  only (:data:`TEXT_RANK`), and not at all once the prompts are cached. Every rank gets the tensors
  one process would compute (the same functions on the same inputs).
* **Tiled VAE decode over the ranks** (:func:`decode_over_ranks`): with VAE tiling on, the tiles are
  decoded on different ranks (:func:`~longvie.acceleration.parallel.tiled_decode_over_ranks`); the
  result is the single-process tiled decode. Without tiling every rank decodes the whole clip, as one
  process does (the untiled decode cannot be split without changing its pixels).
* **Prompt cache** (:class:`PromptCache`): :meth:`LongViePipeline.cache_prompts` encodes every prompt of a
  run once (one prompt per umT5 call, as the per-clip path does, so the embeddings are the same) and
  :meth:`LongViePipeline.release_text_encoder` then drops umT5 from GPU and host memory (about 11 GB
  in bf16). A prompt that is not cached later is encoded by a umT5 loaded again from the weights
  folder for that call and dropped after it.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from .conditioning import clip_pixel_values, encode_image, encode_prompt, image_condition, vae_decode, vae_encode

logger = logging.getLogger(__name__)

TEXT_RANK = 0          # the rank that runs umT5 under torchrun (the only one that loads it from the CLI)
CLIP_COST = 1.0        # task costs in frame-encodes, for the split (one CLIP call ~ one VAE frame or less)
TEXT_COST = 1.0


# ----------------------------------------------------------------------------------------- prompt cache
class PromptCache:
    """umT5 embeddings by prompt text, on the CPU (about 4 MB each at the real size), least recently used
    dropped beyond ``capacity``."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._embeddings

    def __len__(self) -> int:
        return len(self._embeddings)

    def store(self, prompt: str, embeddings: torch.Tensor) -> None:
        """``embeddings``: (1, 512, D) for one prompt."""
        self._embeddings[prompt] = embeddings.detach().to("cpu")
        self._embeddings.move_to_end(prompt)
        while len(self._embeddings) > self.capacity:
            self._embeddings.popitem(last=False)

    def lookup(self, prompts: list[str], device, dtype) -> torch.Tensor | None:
        """(B, 512, D) for ``prompts`` if every one is cached, else None."""
        if not prompts or any(p not in self._embeddings for p in prompts):
            return None
        for prompt in prompts:
            self._embeddings.move_to_end(prompt)
        return torch.cat([self._embeddings[p] for p in prompts]).to(device=device, dtype=dtype)


def load_text_encoder(base_dir, torch_dtype: torch.dtype):
    """umT5 alone from a Wan2.1-I2V folder (diffusers or original layout), on the CPU, in eval mode."""
    from ..weights.loading import detect_layout

    base_dir = Path(base_dir)
    if detect_layout(base_dir) == "original":
        from ..weights.original_layout import ORIGINAL_T5_FILE, _hint, load_original_text_encoder, read_arch_overrides

        overrides = read_arch_overrides(base_dir).get("text_encoder", {})
        return load_original_text_encoder(base_dir / ORIGINAL_T5_FILE, torch_dtype, _hint(base_dir, ORIGINAL_T5_FILE),
                                          **overrides).eval()
    from transformers import UMT5EncoderModel

    return UMT5EncoderModel.from_pretrained(base_dir / "text_encoder", dtype=torch_dtype).eval()


@contextlib.contextmanager
def text_encoder_of(pipe):
    """The pipeline's umT5, or — after :func:`release_text_encoder` — one loaded again from
    ``pipe.text_encoder_loader`` for the duration of the block (on the run device with whole-model
    offload on CUDA, so it fits beside the denoiser), then dropped."""
    if pipe.text_encoder is not None:
        yield pipe.text_encoder
        return
    loader = getattr(pipe, "text_encoder_loader", None)
    if loader is None:
        raise RuntimeError("umT5 was released (or not loaded on this rank) and this pipeline has no way to load it "
                           "again: cache every prompt with pipe.cache_prompts(...) before releasing it")
    logger.info("loading umT5 again for a prompt that is not cached")
    encoder = loader()
    device = pipe._execution_device
    if torch.device(device).type == "cuda":
        from ..acceleration.offload import apply_encoder_offload

        apply_encoder_offload(encoder, torch.device(device))
    try:
        yield encoder
    finally:
        del encoder
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def release_text_encoder(pipe) -> bool:
    """Drop umT5 from GPU and host memory (its offload hooks first). Returns whether one was held."""
    encoder = pipe.text_encoder
    if encoder is None:
        return False
    from diffusers.hooks import HookRegistry

    registry = getattr(encoder, "_diffusers_hook", None)
    if isinstance(registry, HookRegistry):
        for name in list(registry.hooks):
            registry.remove_hook(name, recurse=True)
    if hasattr(encoder, "_hf_hook"):  # accelerate hook of diffusers' model CPU offload
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(encoder, recurse=True)
    pipe.register_modules(text_encoder=None)
    if getattr(pipe, "_all_hooks", None):  # diffusers' model CPU offload chain still holds umT5: rebuild it without
        pipe.maybe_free_model_hooks()
    del encoder
    _free_memory()
    return True


def cache_prompts(pipe, prompts: list[str]) -> int:
    """Encode every prompt of ``prompts`` not cached yet into ``pipe.prompt_cache`` (one per umT5 call);
    under torchrun on :data:`TEXT_RANK` and broadcast. Returns the number encoded."""
    missing = list(dict.fromkeys(p for p in prompts if p not in pipe.prompt_cache))
    if not missing:
        return 0
    device, dtype = pipe._execution_device, pipe.denoiser.dtype
    parallel = pipe._parallel
    if parallel is not None and parallel.world_size > 1:
        def encode(prompt):
            with text_encoder_of(pipe) as encoder:
                return encode_prompt(pipe.tokenizer, encoder, [prompt], device, dtype)

        tasks = {f"text{i}": (TEXT_COST, lambda p=p: encode(p), (TEXT_RANK,)) for i, p in enumerate(missing)}
        results = parallel.run_split(tasks)
        for i, prompt in enumerate(missing):
            pipe.prompt_cache.store(prompt, results[f"text{i}"])
    else:
        with text_encoder_of(pipe) as encoder:
            for prompt in missing:
                pipe.prompt_cache.store(prompt, encode_prompt(pipe.tokenizer, encoder, [prompt], device, dtype))
    return len(missing)


# ----------------------------------------------------------------------------------------- encoders
def encoder_tasks(pipe, first: torch.Tensor, num_frames: int, dense: Callable[[], torch.Tensor],
                  sparse: Callable[[], torch.Tensor], history: Callable[[], torch.Tensor] | None,
                  prompts: list[str] | None = None, negatives: list[str] | None = None) -> dict:
    """A clip's encoder calls as tasks ``name: (cost, fn, allowed ranks or None)``.

    ``first``: (B, 3, H, W) first frame in [-1, 1] on the run device; ``dense``/``sparse``/``history``:
    functions giving the (B, 3, T, H, W) pixels (called only on the rank that encodes them); ``prompts``/
    ``negatives``: texts still to encode (None: cached or not needed). Costs are in encoded frames."""
    device, dtype, vae = pipe._execution_device, pipe.denoiser.dtype, pipe.vae
    tasks = {
        "image_embeds": (CLIP_COST, lambda: encode_image(
            pipe.image_encoder, clip_pixel_values(first, pipe.image_processor).to(device), dtype), None),
        "image_latents": (num_frames, lambda: image_condition(vae, first, num_frames), None),
        "dense_video": (num_frames, lambda: vae_encode(vae, dense()), None),
        "dense_first": (num_frames, lambda: image_condition(vae, dense()[:, :, 0], num_frames), None),
        "sparse_video": (num_frames, lambda: vae_encode(vae, sparse()), None),
        "sparse_first": (num_frames, lambda: image_condition(vae, sparse()[:, :, 0], num_frames), None),
    }
    if history is not None:
        tasks["history_latents"] = (8.0, lambda: vae_encode(vae, history()), None)
    for name, texts in (("prompt_embeds", prompts), ("negative_embeds", negatives)):
        if texts is not None:
            def encode(texts=texts):
                with text_encoder_of(pipe) as encoder:
                    return encode_prompt(pipe.tokenizer, encoder, texts, device, dtype)

            tasks[name] = (TEXT_COST, encode, (TEXT_RANK,))
    return tasks


def encode_over_ranks(pipe, prompts: list[str], negatives: list[str] | None, first: torch.Tensor, num_frames: int,
                      dense: Callable[[], torch.Tensor], sparse: Callable[[], torch.Tensor],
                      history: Callable[[], torch.Tensor] | None) -> tuple:
    """(prompt_embeds, negative_embeds, image_embeds, image_latents, dense, sparse, history_latents) of one
    clip, as the single-process pipeline computes them, with the encoder calls split over the ranks."""
    device, dtype = pipe._execution_device, pipe.denoiser.dtype
    prompt_embeds = pipe.prompt_cache.lookup(prompts, device, dtype)
    negative_embeds = None if negatives is None else pipe.prompt_cache.lookup(negatives, device, dtype)
    tasks = encoder_tasks(pipe, first, num_frames, dense, sparse, history,
                          prompts=prompts if prompt_embeds is None else None,
                          negatives=negatives if negatives is not None and negative_embeds is None else None)
    done = pipe._parallel.run_split(tasks)
    prompt_embeds = done.get("prompt_embeds", prompt_embeds)
    negative_embeds = done.get("negative_embeds", negative_embeds)
    return (prompt_embeds, negative_embeds, done["image_embeds"], done["image_latents"].to(dtype),
            torch.cat([done["dense_video"], done["dense_first"]], dim=1).to(dtype),
            torch.cat([done["sparse_video"], done["sparse_first"]], dim=1).to(dtype),
            done.get("history_latents"))


def decode_over_ranks(vae, latents: torch.Tensor, parallel) -> torch.Tensor:
    """:func:`~longvie.sampling.conditioning.vae_decode` with the tiles of a tiled decode spread over the ranks."""
    from ..acceleration.parallel import tiled_decode_over_ranks

    return vae_decode(vae, latents, decode=lambda z: tiled_decode_over_ranks(vae, z, parallel))
