"""Explicit devices: "cuda" always means one numbered GPU, and noise follows the user's generator.

Under ``torchrun`` every rank sees all GPUs and ``LOCAL_RANK`` says which one is its own; a bare
``"cuda"`` means "the current device", which is ``cuda:0`` until someone calls
``torch.cuda.set_device``. diffusers' model CPU offload, for instance, puts its hooks on
``cuda:0`` when handed a bare "cuda" while tensors created with ``device="cuda"`` follow the current
device, so two ranks would share GPU 0. :func:`resolve_device` turns every "cuda" into
``cuda:<index>`` once, before models, hooks and latents are placed.
"""
from __future__ import annotations

import os

import torch

LOCAL_RANK_ENV = "LOCAL_RANK"


def local_rank() -> int | None:
    """``LOCAL_RANK`` set by torchrun / accelerate, or None outside a launcher."""
    value = os.environ.get(LOCAL_RANK_ENV)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"{LOCAL_RANK_ENV}={value!r} is not an integer") from error


def resolve_device(device: str | torch.device | None = None, device_count: int | None = None,
                   current_device: int | None = None) -> torch.device:
    """An explicit device: None -> the GPU if there is one (else CPU); "cuda" -> ``cuda:<LOCAL_RANK>``
    under a launcher, else ``cuda:<torch.cuda.current_device()>``; an indexed device is kept.

    ``device_count`` / ``current_device`` default to torch's answers (parameters for tests).
    """
    if device is None:
        cuda = torch.cuda.is_available() if device_count is None else device_count > 0
        device = "cuda" if cuda else "cpu"
    device = torch.device(device)
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count() if device_count is None else device_count
    rank = local_rank()
    if rank is not None:
        if count and rank >= count:
            raise ValueError(f"{LOCAL_RANK_ENV}={rank} but only {count} CUDA device(s) are visible")
        return torch.device("cuda", rank)
    if current_device is None:
        current_device = torch.cuda.current_device() if count else 0
    return torch.device("cuda", current_device)


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None, seed: int,
               device: torch.device | str) -> torch.Tensor:
    """Float32 standard-normal noise of ``shape`` on ``device``.

    Without a generator the noise is drawn from ``seed`` on the CPU (identical on every device and
    machine). With one it is drawn on the generator's own device (a CUDA generator cannot fill a
    CPU tensor) and moved.
    """
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device)
    return noise.to(device)
