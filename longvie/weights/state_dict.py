"""State-dict primitives shared by every loader: memory-mapped safetensors reading, strict checks, dtype casts.

Every check raises one error listing every missing, unknown or mis-shaped key with the file it came from.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint_keys import CheckpointKeyError
from .files import WeightsError


def read_safetensors(path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file (memory-mapped). Errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found. Download it (python download_wan2.1.py) or fix the path.")
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        size = os.path.getsize(path)
        raise WeightsError(f"{path}: cannot read as safetensors ({err}); the file ({size} bytes) is probably "
                           "truncated or corrupt. Delete it and download it again.") from err


def _keep_fp32(name: str, module: nn.Module) -> bool:
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    return any(part in keep for part in name.split("."))


def cast_for_module(name: str, tensor: torch.Tensor, module: nn.Module, torch_dtype: torch.dtype) -> torch.Tensor:
    """Cast a floating tensor to ``torch_dtype``, keeping diffusers' fp32 modules in fp32."""
    if not tensor.is_floating_point():
        return tensor
    return tensor.to(torch.float32 if _keep_fp32(name, module) else torch_dtype)


def check_state_dict(module: nn.Module, state_dict: dict, source: str, allow_missing: bool = False) -> None:
    """Raise one :class:`CheckpointKeyError` listing missing, unknown and mis-shaped keys."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problems = []
    unknown = sorted(set(state_dict) - set(expected))
    missing = [] if allow_missing else sorted(set(expected) - set(state_dict))
    shapes = sorted(k for k in set(state_dict) & set(expected) if tuple(state_dict[k].shape) != tuple(expected[k]))
    if missing:
        problems.append(f"missing {len(missing)} key(s): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unknown:
        problems.append(f"unknown {len(unknown)} key(s): " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
    for key in shapes[:20]:
        problems.append(f"shape of {key}: file has {tuple(state_dict[key].shape)}, model expects {tuple(expected[key])}")
    if problems:
        raise CheckpointKeyError(f"{source}: does not match {type(module).__name__}:\n  " + "\n  ".join(problems))


def load_state_dict_strict(module: nn.Module, state_dict: dict, source: str, torch_dtype: torch.dtype) -> nn.Module:
    """Check, cast and assign ``state_dict`` into ``module`` (which may live on the meta device)."""
    check_state_dict(module, state_dict, source)
    state_dict = {k: cast_for_module(k, v, module, torch_dtype) for k, v in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module
