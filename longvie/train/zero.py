"""DeepSpeed specifics of training: saving without full host copies, float32 modules, gradient clipping,
the CPU Adam op.

* :func:`release_tensors` replaces ``accelerator.get_state_dict(model)`` for the release files: only
  the tensors they hold (the control branch and the trainable DiT tensors) are copied to the host,
  and only on the main process. ``get_state_dict`` copies the whole 35 GiB denoiser to the host
  on every rank at every save (about 280 GiB on an 8-GPU node). Under ZeRO-2 parameters are whole
  on every rank, so no gather is needed; under ZeRO-3 the selected parameters are gathered
  (collectively) with ``deepspeed.zero.GatheredParameters``.
* :func:`keep_frozen_fp32`: DeepSpeed's bf16 mode casts the whole module to bf16, including the
  modules the DiT keeps in float32 (time embedder, modulation tables, norms: diffusers'
  ``_keep_in_fp32_modules``) and, before DeepSpeed 0.18, the float32 buffers (the RoPE tables).
  Their float32 values are saved before ``prepare`` and put back after it for the frozen ones (the
  optimizer never sees frozen tensors, so their dtype is free). Trainable ones stay bf16 in the
  module, with DeepSpeed's float32 master copy in the optimizer. Setting ``train.keep_frozen_fp32``;
  :func:`check_keep_frozen_fp32` refuses it under ZeRO-3 before anything loads: ZeRO-3 partitions the
  parameters over the ranks, and putting a whole float32 tensor back into a partitioned parameter
  would break DeepSpeed's bookkeeping of it.
* :func:`configure_deepspeed`: one gradient-clipping setting. DeepSpeed clips with its own
  ``gradient_clipping`` and ignores ``accelerator.clip_grad_norm_``; it is set from
  ``train.max_grad_norm`` (0 / null: no clipping).
* :func:`check_cpu_adam`: ZeRO's CPU optimizer offload needs DeepSpeed's CPU Adam op, compiled on
  first use unless pre-built; fail with the fix before loading anything when it cannot be built.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

import torch

CPU_ADAM_HELP = (
    "DeepSpeed's CPU Adam op (needed by ZeRO optimizer offload to the CPU) is not pre-built and cannot be "
    "compiled here: {reason}. Either install a C++ compiler and ninja (Debian/Ubuntu: `apt-get install "
    "build-essential ninja-build`, or `pip install ninja`) so DeepSpeed can build it at the first step, or "
    "pre-build it once: `DS_BUILD_CPU_ADAM=1 pip install --no-build-isolation --force-reinstall deepspeed` "
    "(check with `ds_report`). Without offload, use configs/accelerate/single_gpu_no_deepspeed.yaml "
    "(needs more GPU memory: `python -m longvie.benchmark --estimate-memory`)."
)


def is_deepspeed(accelerator) -> bool:
    """(Also in ``checkpointing``, which imports this module: kept here to avoid an import cycle.)"""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _zero_stage(accelerator) -> int:
    if not is_deepspeed(accelerator):
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def release_names(model: torch.nn.Module, trainable: set[str]) -> list[str]:
    """Names of the tensors the release files hold: every ``control.*`` parameter and the trainable ones."""
    return [name for name, _ in model.named_parameters() if name.startswith("control.") or name in trainable]


def release_tensors(accelerator, model, trainable: set[str]) -> dict | None:
    """Host copies of the release tensors on the main process (None elsewhere). Collective: every rank calls it."""
    unwrapped = accelerator.unwrap_model(model)
    names = set(release_names(unwrapped, trainable))
    selected = [(name, p) for name, p in unwrapped.named_parameters() if name in names]
    gather = contextlib.nullcontext()
    if _zero_stage(accelerator) == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in selected], modifier_rank=None)
    with gather:
        if not accelerator.is_main_process:
            return None
        return {name: p.detach().to("cpu", copy=True) for name, p in selected}


def fp32_module_names(model: torch.nn.Module) -> list[str]:
    """Parameter/buffer names (relative to ``model``) that diffusers keeps in float32."""
    names = []
    for prefix, owner in model.named_modules():
        keep = getattr(owner, "_keep_in_fp32_modules", None)
        if not keep:
            continue
        for name, tensor in list(owner.named_parameters()) + list(owner.named_buffers()):
            if tensor.dtype == torch.float32 and any(part in keep for part in name.split(".")):
                names.append(f"{prefix}.{name}" if prefix else name)
    return names


KEEP_FROZEN_FP32_ZERO3 = (
    "train.keep_frozen_fp32 is true, but the accelerate config runs DeepSpeed ZeRO-3 (deepspeed_config: "
    "zero_stage: 3), which partitions every parameter over the ranks: putting the frozen float32 modules "
    "(time embedder, modulation tables, norms) back after `prepare` would replace each rank's partition "
    "with a whole tensor. Use ZeRO-2 (configs/accelerate/deepspeed_zero2_8gpu.yaml, the released setup), or "
    "run with --set train.keep_frozen_fp32=false (those modules then stay in bf16, as DeepSpeed casts them)."
)


def check_keep_frozen_fp32(accelerator, train_cfg: dict) -> None:
    """Raise ValueError (:data:`KEEP_FROZEN_FP32_ZERO3`) for ``train.keep_frozen_fp32`` under ZeRO-3."""
    if train_cfg.get("keep_frozen_fp32", True) and _zero_stage(accelerator) >= 3:
        raise ValueError(KEEP_FROZEN_FP32_ZERO3)


@contextlib.contextmanager
def keep_frozen_fp32(model: torch.nn.Module):
    """Around ``accelerator.prepare``: put back the float32 values of frozen fp32 modules (and of the
    float32 buffers, which older DeepSpeed casts too) afterwards. Not under ZeRO-3
    (:func:`check_keep_frozen_fp32`)."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    names = set(fp32_module_names(model))
    names.update(name for name, buffer in model.named_buffers() if buffer.dtype == torch.float32)
    saved = {name: tensors[name].detach().to("cpu", copy=True) for name in sorted(names)
             if not tensors[name].requires_grad}
    yield
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            tensor = tensors[name]
            if tensor.dtype != torch.float32:
                tensor.data = value.to(tensor.device)


def configure_deepspeed(accelerator, train_cfg: dict) -> None:
    """Route ``train.max_grad_norm`` to DeepSpeed's ``gradient_clipping`` (the one clipping setting)."""
    if not is_deepspeed(accelerator):
        return
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    ds_config["gradient_clipping"] = float(train_cfg.get("max_grad_norm") or 0.0)


def offloads_optimizer(accelerator) -> bool:
    if not is_deepspeed(accelerator):
        return False
    zero = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
    return (zero.get("offload_optimizer") or {}).get("device") == "cpu"


def cpu_adam_problem(installed: dict | None = None, which=shutil.which) -> str | None:
    """Why DeepSpeed's CPU Adam op cannot be used here, or None when it is pre-built or can be compiled."""
    if installed is None:
        try:
            from deepspeed.git_version_info import installed_ops as installed
        except ImportError:
            return "deepspeed is not installed (`pip install -e .[gpu]`)"
    if installed.get("cpu_adam"):
        return None
    compiler = os.environ.get("CXX", "c++")
    if which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found on PATH)"
    if which("ninja") is None and importlib.util.find_spec("ninja") is None:
        return "ninja (the build tool torch's extension builder uses) is not installed"
    return None


def check_cpu_adam(accelerator) -> None:
    """Raise RuntimeError with :data:`CPU_ADAM_HELP` when the run offloads the optimizer and the op cannot run."""
    if not offloads_optimizer(accelerator):
        return
    reason = cpu_adam_problem()
    if reason is not None:
        raise RuntimeError(CPU_ADAM_HELP.format(reason=reason))
