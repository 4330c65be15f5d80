"""What a training process needs before its first step: the accelerate ``Accelerator`` and the frozen encoders.

Shared by the trainer and the latent-cache builder (``python -m longvie.train.cache``).
"""
from __future__ import annotations

import logging
import os

import torch

from ..presets.config import torch_dtype
from .inputs import InputEncoder

logger = logging.getLogger("longvie.train")


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
    return accelerator


def build_encoder(config: dict, device, text_on_device: bool = True) -> InputEncoder:
    """The frozen VAE, umT5 and CLIP on ``device``; umT5 (11 GB in bf16) stays on the CPU when
    ``text_on_device`` is False (training from a latent cache, where prompts are pre-encoded)."""
    from ..weights.loading import load_base_components

    model_cfg = config["model"]
    parts = load_base_components(model_cfg["base_model_dir"], torch_dtype=torch_dtype(model_cfg["weight_dtype"]),
                                 vae_dtype=torch_dtype(model_cfg["vae_dtype"]))
    for name in ("text_encoder", "image_encoder", "vae"):
        parts[name].requires_grad_(False).eval()
        if name != "text_encoder" or text_on_device:
            parts[name].to(device)
    return InputEncoder(parts["vae"], parts["tokenizer"], parts["text_encoder"], parts["image_encoder"],
                        parts["image_processor"], device, torch_dtype(model_cfg["weight_dtype"]))
