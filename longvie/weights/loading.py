"""Loading the base Wan2.1-I2V weights and the released LongVie 2 weights.

Every loader checks names and shapes itself and raises one error listing every problem
(missing, unknown, mis-shaped keys) with the file it came from; nothing is loaded with a
silent ``strict=False``. Models are built on the meta device and filled from memory-mapped
safetensors, so a checkpoint never needs twice its size in RAM.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.control_branch import LongVieControlBranch
from ..models.denoiser import LongVieDenoiser
from .checkpoint_keys import (
    CheckpointKeyError,
    control_depth_from_keys,
    convert_control_state_dict,
    convert_dit_state_dict,
)
from .files import CONTROL_FILENAME, DIT_FILENAME, WeightsError
from .state_dict import check_state_dict, load_state_dict_strict, read_safetensors


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


BASE_COMPONENTS = ("text_encoder", "image_encoder", "vae")


def load_base_components(base_dir, torch_dtype: torch.dtype = torch.bfloat16,
                         vae_dtype: torch.dtype = torch.float32, text_encoder: bool = True,
                         components=BASE_COMPONENTS) -> dict:
    """Tokenizer, umT5 encoder, CLIP vision tower (+ its image processor) and VAE of Wan2.1-I2V.

    Returns a dict with keys tokenizer, text_encoder, image_encoder, image_processor, vae.
    ``components``: which of text_encoder (with the tokenizer), image_encoder (with the image processor)
    and vae to load; the others are None and never read (training from a latent cache needs no umT5).
    ``text_encoder=False``: umT5 is not read (its entry is None) but the tokenizer is.
    """
    unknown = set(components) - set(BASE_COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; choose from {BASE_COMPONENTS}")
    layout = detect_layout(base_dir)
    if layout == "original":
        from .original_layout import load_original_components
        return load_original_components(base_dir, torch_dtype=torch_dtype, vae_dtype=vae_dtype,
                                        text_encoder=text_encoder, components=components)

    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

    base_dir = Path(base_dir)
    subfolders = {"text_encoder": ("tokenizer", "text_encoder"), "image_encoder": ("image_encoder",), "vae": ("vae",)}
    for sub in (sub for name in components for sub in subfolders[name]):
        if not (base_dir / sub).is_dir():
            raise WeightsError(f"{base_dir / sub}: missing. A diffusers-layout Wan2.1-I2V folder has tokenizer/, "
                               "text_encoder/, image_encoder/, image_processor/, transformer/ and vae/; "
                               "re-run `python download_wan2.1.py`.")
    parts = dict.fromkeys(("tokenizer", "text_encoder", "image_encoder", "image_processor", "vae"))
    if "text_encoder" in components:
        parts["tokenizer"] = AutoTokenizer.from_pretrained(base_dir / "tokenizer")
        if text_encoder:
            parts["text_encoder"] = UMT5EncoderModel.from_pretrained(base_dir / "text_encoder",
                                                                     dtype=torch_dtype).eval()
    if "image_encoder" in components:
        parts["image_encoder"] = CLIPVisionModel.from_pretrained(base_dir / "image_encoder", dtype=torch_dtype).eval()
        parts["image_processor"] = (CLIPImageProcessor.from_pretrained(base_dir / "image_processor")
                                    if (base_dir / "image_processor").is_dir() else None)
    if "vae" in components:
        parts["vae"] = AutoencoderKLWan.from_pretrained(base_dir, subfolder="vae", torch_dtype=vae_dtype).eval()
    return parts


def load_denoiser(base_dir, control_path, dit_path=None, torch_dtype: torch.dtype = torch.bfloat16,
                  device: str | torch.device = "cpu") -> LongVieDenoiser:
    """Load the Wan2.1-I2V DiT from ``base_dir`` and lay the LongVie 2 weights over it.

    Args:
        base_dir: a Wan2.1-I2V folder (diffusers layout with ``transformer/``, or the original
            layout with ``diffusion_pytorch_model-*.safetensors``).
        control_path: ``control.safetensors`` (released key names, optional prefix).
        dit_path: optional ``dit.safetensors`` (partial DiT, original Wan names).
    """
    transformer = load_transformer(base_dir, torch_dtype=torch_dtype)
    if dit_path is not None:
        overlay_dit_weights(transformer, dit_path)
    control = load_control_branch(control_path, transformer.config, torch_dtype=torch_dtype)
    return LongVieDenoiser(transformer, control).to(device).eval()
