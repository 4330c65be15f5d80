"""What a training process needs before its first step: the accelerate ``Accelerator`` and the frozen encoders.

Shared by the trainer and the latent-cache builder (``python -m longvie.train.cache``).

Accelerate configs (configs/accelerate/; GPU and host memory per config:
``python -m longvie.benchmark --estimate-memory``):

* ``single_gpu.yaml``: one GPU, DeepSpeed ZeRO-2 with the AdamW state and float32 master weights
  offloaded to the CPU. Needs ``pip install -e .[gpu]`` (deepspeed) and a C++ compiler + ninja
  for DeepSpeed's CPU Adam op (or a pre-built op, see :mod:`longvie.train.zero`).
* ``single_gpu_no_deepspeed.yaml``: one GPU, plain PyTorch; the AdamW moments sit on the GPU
  (does not fit an 80 GB GPU at 352x640x81 for the 14B model; for small models and debugging).
* ``deepspeed_zero2_8gpu.yaml`` / ``deepspeed_zero2_multinode.yaml``: ZeRO-2 + CPU optimizer
  offload on 8 GPUs per node (the released setup).

Start-up host RAM: every rank builds the DiT, the control branch and the encoders on the CPU
before moving them to its GPU (about 50 GiB per rank). :func:`load_in_turns` lets the ranks of a
node load one (``train.load_ranks_at_once``) at a time, so a node holds one rank's host copy at a
time instead of eight.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

import torch

from ..presets.config import torch_dtype
from .inputs import InputEncoder
from .zero import check_cpu_adam, check_keep_frozen_fp32, configure_deepspeed

logger = logging.getLogger("longvie.train")
T = TypeVar("T")


def make_accelerator(config: dict):
    from accelerate import Accelerator

    train_cfg = config["train"]
    # Several processes without CUDA (torchrun on CPUs): accelerate needs cpu=True to use gloo,
    # otherwise every process would train alone.
    cpu_processes = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accum = train_cfg["gradient_accumulation_steps"]
    accelerator = Accelerator(gradient_accumulation_steps=accum, mixed_precision=train_cfg["mixed_precision"],
                              cpu=cpu_processes)
    if accelerator.gradient_accumulation_steps != accum:  # set by an accelerate config file (env)
        logger.warning("gradient accumulation: the accelerate config says %d, the stage config %d; using %d",
                       accelerator.gradient_accumulation_steps, accum, accum)
        accelerator.gradient_accumulation_steps = accum
    configure_deepspeed(accelerator, train_cfg)  # train.max_grad_norm is DeepSpeed's gradient_clipping
    check_cpu_adam(accelerator)  # before hours of loading, not at the first optimizer step
    check_keep_frozen_fp32(accelerator, train_cfg)  # ZeRO-3 partitions what keep_frozen_fp32 would restore
    return accelerator


def load_in_turns(accelerator, load: Callable[[], T], at_once: int = 1) -> T:
    """Run ``load()`` on the ranks of each node ``at_once`` at a time (collective: every rank calls it).

    ``load`` should end with the models on the rank's GPU, so that its host copy is freed before
    the next ranks start. With one process this is just ``load()``.
    """
    if accelerator.num_processes == 1:
        return load()
    at_once = max(1, int(at_once))
    local_rank, local_world = accelerator.local_process_index, _local_world_size(accelerator)
    result = None
    for first in range(0, local_world, at_once):
        if first <= local_rank < first + at_once:
            logger.info("rank %d: loading the models (ranks %d-%d of this node load now)", accelerator.process_index,
                        first, min(first + at_once, local_world) - 1)
            result = load()
        accelerator.wait_for_everyone()
    return result


def _local_world_size(accelerator) -> int:
    value = os.environ.get("LOCAL_WORLD_SIZE")
    if value:
        return int(value)
    if torch.cuda.is_available() and torch.cuda.device_count():
        return min(torch.cuda.device_count(), accelerator.num_processes)
    return accelerator.num_processes


def encoders_needed(config: dict, latent_cache: bool) -> tuple[str, ...]:
    """The frozen encoders a training process must load.

    Without a latent cache: all three. With one, the prompts, CLIP tokens and clean latents are read
    from the cache, so umT5 is never needed (11 GB per rank in bf16, ~85 GiB host RAM on an 8-GPU node
    if every rank kept it); CLIP only when a clip's conditioning frame can be degraded (it is then
    re-encoded: stage-2/3 first-frame degradation, upstream's independent colour drift, degraded
    history); the VAE when something is encoded from pixels: a degraded depth video, history frames,
    a degraded frame. (Mirrored by ``longvie.acceleration.memory.TrainingStage.encoders``.)
    """
    if not latent_cache:
        return ("text_encoder", "image_encoder", "vae")
    d = config["degradation"]
    history = int(d.get("history_max_frames", 0)) >= 4
    frame = (d.get("first_frame_p", 0) > 0 or (d.get("color_drift_independent") and d.get("color_drift_p", 0) > 0)
             or (history and d.get("history_degrade_p", 0) > 0))
    needed = ["image_encoder"] if frame else []
    if frame or history or d.get("depth_p", 0) > 0:
        needed.append("vae")
    return tuple(needed)


def build_encoder(config: dict, device, components=("text_encoder", "image_encoder", "vae")) -> InputEncoder:
    """The frozen encoders named in ``components`` (see :func:`encoders_needed`) on ``device``; the others
    are not loaded at all (None in the :class:`InputEncoder`, which refuses work that needs them)."""
    from ..weights.loading import load_base_components

    model_cfg = config["model"]
    parts = load_base_components(model_cfg["base_model_dir"], torch_dtype=torch_dtype(model_cfg["weight_dtype"]),
                                 vae_dtype=torch_dtype(model_cfg["vae_dtype"]), components=tuple(components))
    for name in components:
        parts[name].requires_grad_(False).eval().to(device)
    return InputEncoder(parts["vae"], parts["tokenizer"], parts["text_encoder"], parts["image_encoder"],
                        parts["image_processor"], device, torch_dtype(model_cfg["weight_dtype"]))
