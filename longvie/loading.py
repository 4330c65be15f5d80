"""Loading the base Wan2.1-I2V weights and the released LongVie 2 weights.

Every loader checks names and shapes itself and raises one error listing every problem
(missing, unknown, mis-shaped keys) with the file it came from; nothing is loaded with a
silent ``strict=False``. Models are built on the meta device and filled from memory-mapped
safetensors, so a checkpoint never needs twice its size in RAM.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint_keys import (CheckpointKeyError, control_depth_from_keys, convert_control_state_dict,
                              convert_dit_state_dict)
from .control_branch import LongVieControlBranch

CONTROL_FILENAME = "control.safetensors"
DIT_FILENAME = "dit.safetensors"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or not the model we expect."""


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


def load_control_branch(path, transformer_config, torch_dtype: torch.dtype = torch.bfloat16) -> LongVieControlBranch:
    """Build the control branch for ``transformer_config`` and fill it from ``control.safetensors``.

    Width and heads follow the base DiT (half of them); the depth is read from the file.
    """
    source = str(path)
    state_dict = convert_control_state_dict(read_safetensors(path), source=source)
    try:
        depth = control_depth_from_keys(state_dict)
    except CheckpointKeyError as err:
        raise CheckpointKeyError(f"{source}: {err}") from None
    if not any(k.startswith("control_blocks_sparse.") for k in state_dict):
        raise CheckpointKeyError(f"{source}: holds dense control blocks but no 'control_blocks_sparse.N.*' keys. "
                                 "LongVie 2 needs both branches; a single-branch file is a LongVie 1 / "
                                 "dense-only checkpoint.")
    config = LongVieControlBranch.config_for(transformer_config, num_layers=depth)
    with torch.device("meta"):
        control = LongVieControlBranch(**config)
    return load_state_dict_strict(control, state_dict, source, torch_dtype)


@torch.no_grad()
def overlay_dit_weights(transformer: nn.Module, path) -> list[str]:
    """Replace the DiT parameters that ``dit.safetensors`` holds (original Wan names); returns their names."""
    source = str(path)
    state_dict = convert_dit_state_dict(read_safetensors(path), source=source)
    check_state_dict(transformer, state_dict, source, allow_missing=True)
    params = dict(transformer.named_parameters())
    params.update(dict(transformer.named_buffers()))
    for key, value in state_dict.items():
        target = params[key]
        target.copy_(value.to(device=target.device, dtype=target.dtype))
    return sorted(state_dict)


def detect_layout(base_dir) -> str:
    """'diffusers' (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers) or 'original' (Wan-AI/Wan2.1-I2V-14B-480P)."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise WeightsError(f"{base_dir}: base model folder not found. Run `python download_wan2.1.py` "
                           "or set base_model_dir in your config.")
    if (base_dir / "transformer" / "config.json").is_file():
        return "diffusers"
    # Any one file of the original release decides, so that a partial download gets the original
    # loader's precise "file X is missing" message instead of the generic one below.
    original_files = ("diffusion_pytorch_model.safetensors.index.json", "Wan2.1_VAE.pth",
                      "models_t5_umt5-xxl-enc-bf16.pth", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    if any(base_dir.glob("diffusion_pytorch_model*.safetensors")) or \
            any((base_dir / name).exists() for name in original_files):
        return "original"
    raise WeightsError(f"{base_dir}: neither a diffusers-layout Wan2.1-I2V folder (transformer/config.json) "
                       "nor the original layout (diffusion_pytorch_model-*.safetensors + Wan2.1_VAE.pth).")


def check_i2v_config(config, source: str) -> None:
    """Reject DiT configs of other Wan variants (T2V has no image branch; a 36-channel input is I2V)."""
    if config.in_channels != 36 or config.image_dim is None or config.added_kv_proj_dim is None:
        raise WeightsError(f"{source}: this is not a Wan2.1 image-to-video DiT (in_channels={config.in_channels}, "
                           f"image_dim={config.image_dim}); LongVie 2 needs Wan2.1-I2V-14B-480P.")


def load_transformer(base_dir, torch_dtype: torch.dtype = torch.bfloat16):
    """The Wan2.1-I2V DiT as a diffusers ``WanTransformer3DModel`` from either layout."""
    from diffusers import WanTransformer3DModel

    layout = detect_layout(base_dir)
    if layout == "original":
        from .original_layout import load_original_transformer
        transformer = load_original_transformer(base_dir, torch_dtype=torch_dtype)
    else:
        transformer = WanTransformer3DModel.from_pretrained(base_dir, subfolder="transformer", torch_dtype=torch_dtype)
    check_i2v_config(transformer.config, str(Path(base_dir) / "transformer"))
    return transformer


def longvie_weight_paths(longvie_dir) -> tuple[Path, Path | None]:
    """(control.safetensors, dit.safetensors or None) inside a LongVie 2 weights folder."""
    longvie_dir = Path(longvie_dir)
    control = longvie_dir / CONTROL_FILENAME
    if not control.is_file():
        raise WeightsError(f"{control}: not found. The LongVie 2 folder must hold {CONTROL_FILENAME} "
                           "(and usually dit.safetensors); run `python download_wan2.1.py`.")
    dit = longvie_dir / DIT_FILENAME
    return control, (dit if dit.is_file() else None)


def load_base_components(base_dir, torch_dtype: torch.dtype = torch.bfloat16,
                         vae_dtype: torch.dtype = torch.float32) -> dict:
    """Tokenizer, umT5 encoder, CLIP vision tower (+ its image processor) and VAE of Wan2.1-I2V.

    Returns a dict with keys tokenizer, text_encoder, image_encoder, image_processor, vae.
    """
    layout = detect_layout(base_dir)
    if layout == "original":
        from .original_layout import load_original_components
        return load_original_components(base_dir, torch_dtype=torch_dtype, vae_dtype=vae_dtype)

    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

    base_dir = Path(base_dir)
    for sub in ("tokenizer", "text_encoder", "image_encoder", "vae"):
        if not (base_dir / sub).is_dir():
            raise WeightsError(f"{base_dir / sub}: missing. A diffusers-layout Wan2.1-I2V folder has tokenizer/, "
                               "text_encoder/, image_encoder/, image_processor/, transformer/ and vae/; "
                               "re-run `python download_wan2.1.py`.")
    image_processor = (CLIPImageProcessor.from_pretrained(base_dir / "image_processor")
                       if (base_dir / "image_processor").is_dir() else None)
    return dict(
        tokenizer=AutoTokenizer.from_pretrained(base_dir / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(base_dir / "text_encoder", dtype=torch_dtype).eval(),
        image_encoder=CLIPVisionModel.from_pretrained(base_dir / "image_encoder", dtype=torch_dtype).eval(),
        image_processor=image_processor,
        vae=AutoencoderKLWan.from_pretrained(base_dir, subfolder="vae", torch_dtype=vae_dtype).eval(),
    )
