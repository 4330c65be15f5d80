"""Loading the original Wan2.1-I2V release layout ("Wan-AI/Wan2.1-I2V-14B-480P").

That folder (what upstream Wan2.1 and LongVie users already have on disk) holds::

    config.json                                   WanModel config of the DiT
    diffusion_pytorch_model-0000{1..7}-of-00007.safetensors (+ .safetensors.index.json)   DiT, Wan names
    models_t5_umt5-xxl-enc-bf16.pth               umT5-XXL encoder (wan/modules/t5.py names)
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   open-clip XLM-R ViT-H/14 (visual tower used)
    Wan2.1_VAE.pth                                causal 3D VAE (wan/modules/vae.py names)
    google/umt5-xxl/, xlm-roberta-large/          tokenizers

Everything is loaded into the same diffusers / transformers classes as the diffusers-layout release
(WanTransformer3DModel, UMT5EncoderModel, CLIPVisionModel, AutoencoderKLWan), so the rest of the
code cannot tell the two layouts apart.

Memory: models are built with parameters on the meta device (accelerate's ``init_empty_weights``;
buffers such as the RoPE tables stay real) and filled with ``assign=True`` from memory-mapped files
(``safe_open`` for the DiT shards, one shard at a time; ``torch.load(mmap=True)`` for the .pth files).
Tensors already in the target dtype are used in place, so loading never needs a second copy of the
weights in RAM; converted tensors cost their new size, plus one DiT shard's pages at a time. Unused
tensors (CLIP's text tower) are never read from disk. scripts/measure_load_memory.py measures this.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from torch import nn

from .checkpoint_keys import DIT_PREFIXES, convert_dit_state_dict, strip_prefix
from .files import (
    ORIGINAL_CLIP_FILE,
    ORIGINAL_DIT_CONFIG,
    ORIGINAL_DIT_INDEX,
    ORIGINAL_T5_FILE,
    ORIGINAL_T5_TOKENIZER_DIR,
    ORIGINAL_VAE_FILE,
    WeightsError,
    check_sharded_checkpoint,
    safetensors_shapes,
    torch_file_format,
)
from .original_keys import (
    clip_vision_config_from_state_dict,
    convert_clip_visual_state_dict,
    convert_umt5_state_dict,
    convert_vae_state_dict,
    umt5_config_from_state_dict,
    vae_config_from_state_dict,
)
from .state_dict import cast_for_module, check_state_dict, load_state_dict_strict

ORIGINAL_REPO_ID = "Wan-AI/Wan2.1-I2V-14B-480P"
# OpenAI CLIP normalisation, used by the open-clip XLM-RoBERTa ViT-H/14 tower of Wan2.1.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Optional, not part of the release: architecture fields that no tensor shape reveals, for checkpoints
# of another size than the release (the tiny test preset writes one). Sections: "text_encoder"
# (UMT5Config fields) and "image_encoder" (CLIPVisionConfig fields).
ARCH_OVERRIDES_FILE = "longvie_arch_overrides.json"

# Wan2.1 DiT constants (wan/modules/model.py and wan/configs/): every released size uses 128-wide heads
# (1.3B: 1536 / 12, 14B: 5120 / 40); RoPE tables for 1024 positions (rope_params(1024, ...)).
WAN_HEAD_DIM = 128
WAN_ROPE_MAX_SEQ_LEN = 1024
WAN_I2V_IN_DIM = 36  # 16 noisy latents + 4 mask + 16 image-condition latents (SPEC §1)
KNOWN_T2V_WIDTHS = {1536: "Wan2.1-T2V-1.3B", 5120: "Wan2.1-T2V-14B"}


def _hint(base_dir, filename: str) -> str:
    return (f"Get it with `python download_wan2.1.py --layout original` (resumes partial downloads), or download "
            f"{filename} by hand from https://huggingface.co/{ORIGINAL_REPO_ID} into {base_dir}/.")


# --------------------------------------------------------------------------- generic memory-lean filling
def empty_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with its parameters on the meta device (no memory); buffers stay real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def load_torch_checkpoint(path, hint: str = "") -> dict[str, torch.Tensor]:
    """A .pth state dict, memory-mapped (tensors are read from disk only when used)."""
    path = Path(path)
    try:
        fmt = torch_file_format(path)
    except WeightsError as err:
        raise WeightsError(f"{err} {hint}".strip()) from None
    if fmt == "legacy":
        warnings.warn(f"{path} uses torch's legacy (non-zip) format, which cannot be memory-mapped: loading it "
                      "needs its full size in RAM.", stacklevel=2)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "zip")
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise WeightsError(f"{path}: cannot read it as a PyTorch state dict ({type(err).__name__}: {err}); the file "
                           f"({os.path.getsize(path):,} bytes) is probably truncated or corrupt. Delete it and "
                           f"download it again. {hint}".strip()) from err
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(f"{path}: expected a flat state dict of tensors, found {type(state_dict).__name__}")
    return state_dict


def _hf_dtype(model: nn.Module, name: str, torch_dtype: torch.dtype) -> torch.dtype:
    """The dtype transformers' from_pretrained gives a parameter (its fp32 exceptions included)."""
    parts = set(name.split("."))
    if torch_dtype == torch.float16 and parts & set(getattr(model, "_keep_in_fp32_modules", None) or ()):
        return torch.float32
    strict = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    if torch_dtype in (torch.float16, torch.bfloat16) and parts & strict:
        return torch.float32
    return torch_dtype


def assign_hf_state_dict(model: nn.Module, state_dict: dict, source: str, torch_dtype: torch.dtype) -> nn.Module:
    """Check names/shapes, cast as transformers would, and assign into a (meta) transformers model."""
    check_state_dict(model, state_dict, source)
    state_dict = {k: v.to(_hf_dtype(model, k, torch_dtype)) if v.is_floating_point() else v
                  for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------- DiT
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path}: unreadable JSON ({err})") from None


def dit_config_from_shapes(shapes: dict[str, tuple], wan_config: dict | None, source: str) -> dict:
    """WanTransformer3DModel kwargs from the checkpoint's tensor shapes (original Wan names).

    ``wan_config`` is the release's config.json (WanModel fields: dim, num_heads, num_layers, in_dim,
    model_type, eps, ...); where it is given it must agree with the shapes. Other Wan2.1 variants are
    rejected with a message naming them: T2V (in_dim 16, no img_emb / cross_attn.k_img) in 14B
    (dim 5120) or 1.3B (dim 1536), and FLF2V (img_emb.emb_pos). 480P and 720P I2V share the
    architecture and every shape, so they cannot be told apart here (see :func:`warn_if_720p`).
    """
    shapes = strip_prefix(shapes, DIT_PREFIXES)
    if "patch_embedding.weight" not in shapes:
        raise WeightsError(f"{source}: no 'patch_embedding.weight'; this is not a Wan2.1 DiT checkpoint "
                           "in the original layout.")
    dim, in_dim, *patch = shapes["patch_embedding.weight"]
    num_layers = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    has_img_emb = "img_emb.proj.0.weight" in shapes
    has_k_img = "blocks.0.cross_attn.k_img.weight" in shapes
    model_type = (wan_config or {}).get("model_type")
    if in_dim != WAN_I2V_IN_DIM or not has_img_emb or not has_k_img or model_type not in (None, "i2v"):
        variant = KNOWN_T2V_WIDTHS.get(dim, f"a {dim}-wide Wan DiT") if in_dim == 16 else f"a {dim}-wide Wan DiT"
        found = [f"in_dim {in_dim}", f"dim {dim}", f"{num_layers} blocks",
                 "img_emb.*" if has_img_emb else "no img_emb.*",
                 "cross_attn.k_img" if has_k_img else "no cross_attn.k_img"]
        if model_type:
            found.append(f"config.json model_type '{model_type}'")
        raise WeightsError(
            f"{source}: this is not a Wan2.1 image-to-video DiT; it looks like {variant} (found {', '.join(found)}). "
            f"LongVie 2 needs Wan2.1-I2V-14B-480P: in_dim {WAN_I2V_IN_DIM} (16 noise + 4 mask + 16 image-latent "
            "channels), dim 5120, 40 blocks, img_emb.* and cross_attn.k_img/v_img in every block.")
    if "img_emb.emb_pos" in shapes:
        raise WeightsError(f"{source}: holds img_emb.emb_pos, i.e. the Wan2.1 first-last-frame (FLF2V) model; "
                           "LongVie 2 needs Wan2.1-I2V-14B-480P.")

    needed = ["head.head.weight", "text_embedding.0.weight", "time_embedding.0.weight", "blocks.0.ffn.0.weight"]
    if any(k not in shapes for k in needed):
        raise WeightsError(f"{source}: incomplete Wan2.1 DiT, missing {[k for k in needed if k not in shapes]}")
    num_heads = (wan_config or {}).get("num_heads", dim // WAN_HEAD_DIM)
    config = dict(
        patch_size=tuple(patch), num_attention_heads=num_heads, attention_head_dim=dim // num_heads,
        in_channels=in_dim, out_channels=shapes["head.head.weight"][0] // (patch[0] * patch[1] * patch[2]),
        text_dim=shapes["text_embedding.0.weight"][1], freq_dim=shapes["time_embedding.0.weight"][1],
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0], num_layers=num_layers,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        eps=(wan_config or {}).get("eps", 1e-6), image_dim=shapes["img_emb.proj.0.weight"][0],
        added_kv_proj_dim=dim, rope_max_seq_len=WAN_ROPE_MAX_SEQ_LEN)
    if wan_config:
        read = {"dim": dim, "in_dim": in_dim, "num_layers": num_layers, "ffn_dim": config["ffn_dim"],
                "freq_dim": config["freq_dim"], "out_dim": config["out_channels"]}
        wrong = [f"{k}: config.json says {wan_config[k]}, the weights have {v}"
                 for k, v in read.items() if k in wan_config and wan_config[k] != v]
        if wrong:
            raise WeightsError(f"{source}: config.json does not describe these weights:\n  " + "\n  ".join(wrong))
    if dim % num_heads:
        raise WeightsError(f"{source}: dim {dim} is not divisible by num_heads {num_heads}")
    return config


def warn_if_720p(base_dir: Path) -> None:
    """Wan2.1-I2V-14B-720P has exactly the 480P architecture and shapes, so only its folder name tells."""
    if "720p" in str(Path(base_dir).resolve()).lower():
        warnings.warn(f"{base_dir}: the folder name says 720P. LongVie 2 was trained on Wan2.1-I2V-14B-480P; the "
                      "720P weights have the same shapes and will load, but they are not what the control branch "
                      "was trained with.", stacklevel=3)


def load_original_transformer(base_dir, torch_dtype: torch.dtype = torch.bfloat16):
    """The Wan2.1-I2V DiT from the 7 original shards, as a diffusers ``WanTransformer3DModel``.

    Names and shapes of every tensor are checked from the shard headers before any data is read;
    then the shards are memory-mapped and assigned one at a time.
    """
    from diffusers import WanTransformer3DModel

    base_dir = Path(base_dir)
    index = base_dir / ORIGINAL_DIT_INDEX
    tensor_to_shard = check_sharded_checkpoint(index, hint=_hint(base_dir, "the missing shard(s)"))
    shards = sorted(set(tensor_to_shard.values()))
    shapes: dict[str, tuple] = {}
    for shard in shards:
        shapes.update(safetensors_shapes(shard))
    config_path = base_dir / ORIGINAL_DIT_CONFIG
    wan_config = _read_json(config_path) if config_path.is_file() else None
    source = f"{base_dir}/diffusion_pytorch_model-*.safetensors"
    config = dit_config_from_shapes(shapes, wan_config, source)
    warn_if_720p(base_dir)

    model = empty_model(lambda: WanTransformer3DModel(**config))
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    check_state_dict(model, convert_dit_state_dict(meta, source=source), source)
    for shard in shards:
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            mapped = convert_dit_state_dict({k: handle.get_tensor(k) for k in handle.keys()}, source=str(shard))
        part = {k: cast_for_module(k, v, model, torch_dtype) for k, v in mapped.items()}
        if any(part[k] is not mapped[k] for k in part):
            # Converting read every page of this shard; a tensor that kept its dtype is still a view of
            # the mapping and would keep all those pages resident. Copy the few such tensors out.
            part = {k: v.clone() if v is mapped[k] else v for k, v in part.items()}
        del mapped
        model.load_state_dict(part, strict=False, assign=True)
    still_empty = [name for name, p in model.named_parameters() if p.is_meta]
    if still_empty:  # cannot happen after check_state_dict, unless a shard changed while loading
        raise WeightsError(f"{source}: parameters left unloaded: {still_empty[:10]}")
    return model.eval()


# --------------------------------------------------------------------------- umT5, CLIP, VAE
def read_arch_overrides(base_dir) -> dict:
    """The optional :data:`ARCH_OVERRIDES_FILE` ({} when absent, as in the release)."""
    path = Path(base_dir) / ARCH_OVERRIDES_FILE
    if not path.is_file():
        return {}
    overrides = _read_json(path)
    unknown = set(overrides) - {"text_encoder", "image_encoder"}
    if unknown:
        raise WeightsError(f"{path}: unknown section(s) {sorted(unknown)}; allowed: text_encoder, image_encoder")
    return overrides


def load_original_text_encoder(path, torch_dtype: torch.dtype = torch.bfloat16, hint: str = "", **overrides):
    """``models_t5_umt5-xxl-enc-bf16.pth`` as a transformers ``UMT5EncoderModel``."""
    from transformers import UMT5Config, UMT5EncoderModel

    source = str(path)
    state_dict = load_torch_checkpoint(path, hint)
    config = UMT5Config(**umt5_config_from_state_dict(state_dict, source, **overrides))
    converted = convert_umt5_state_dict(state_dict, source)
    model = empty_model(lambda: UMT5EncoderModel(config))
    if "encoder.embed_tokens.weight" in model.state_dict():  # tied to shared.weight in transformers
        converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return assign_hf_state_dict(model, converted, source, torch_dtype)


def load_original_image_encoder(path, torch_dtype: torch.dtype = torch.bfloat16, hint: str = "", **overrides):
    """The visual tower of ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` as a
    transformers ``CLIPVisionModel``, plus the matching ``CLIPImageProcessor``. Text-tower keys are
    not loaded (and, memory-mapped, never read from disk)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    source = str(path)
    state_dict = load_torch_checkpoint(path, hint)
    config = CLIPVisionConfig(**clip_vision_config_from_state_dict(state_dict, source, **overrides))
    converted = convert_clip_visual_state_dict(state_dict, source)
    model = empty_model(lambda: CLIPVisionModel(config))
    if any(k.startswith("vision_model.") for k in model.state_dict()):  # transformers < 5 nests the tower
        converted = {"vision_model." + k: v for k, v in converted.items()}
    size = config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                   image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return assign_hf_state_dict(model, converted, source, torch_dtype), processor


def load_original_vae(path, torch_dtype: torch.dtype = torch.float32, hint: str = ""):
    """``Wan2.1_VAE.pth`` as a diffusers ``AutoencoderKLWan`` (latent mean/std from Wan's code)."""
    from diffusers import AutoencoderKLWan

    source = str(path)
    state_dict = load_torch_checkpoint(path, hint)
    config = vae_config_from_state_dict(state_dict, source)
    model = empty_model(lambda: AutoencoderKLWan(**config))
    converted = convert_vae_state_dict(state_dict, model.state_dict().keys(), config["num_res_blocks"], source)
    return load_state_dict_strict(model, converted, source, torch_dtype).eval()


def load_original_components(base_dir, torch_dtype: torch.dtype = torch.bfloat16,
                             vae_dtype: torch.dtype = torch.float32, text_encoder: bool = True,
                             components=("text_encoder", "image_encoder", "vae")) -> dict:
    """Tokenizer, umT5, CLIP vision tower (+ image processor) and VAE from the original layout.

    Returns the same dict as the diffusers-layout path: tokenizer, text_encoder, image_encoder,
    image_processor, vae (None for what ``components`` leaves out; ``text_encoder=False``: umT5 is not
    read, its entry is None, the tokenizer is).
    """
    from transformers import AutoTokenizer

    base_dir = Path(base_dir)
    overrides = read_arch_overrides(base_dir)
    parts = dict.fromkeys(("tokenizer", "text_encoder", "image_encoder", "image_processor", "vae"))
    if "text_encoder" in components:
        tokenizer_dir = base_dir / ORIGINAL_T5_TOKENIZER_DIR
        if not tokenizer_dir.is_dir():
            raise WeightsError(f"{tokenizer_dir}: umT5 tokenizer folder not found. "
                               f"{_hint(base_dir, 'google/umt5-xxl/')}")
        if text_encoder:
            parts["text_encoder"] = load_original_text_encoder(base_dir / ORIGINAL_T5_FILE, torch_dtype,
                                                               _hint(base_dir, ORIGINAL_T5_FILE),
                                                               **overrides.get("text_encoder", {}))
        parts["tokenizer"] = AutoTokenizer.from_pretrained(tokenizer_dir)
    if "image_encoder" in components:
        parts["image_encoder"], parts["image_processor"] = load_original_image_encoder(
            base_dir / ORIGINAL_CLIP_FILE, torch_dtype, _hint(base_dir, ORIGINAL_CLIP_FILE),
            **overrides.get("image_encoder", {}))
    if "vae" in components:
        parts["vae"] = load_original_vae(base_dir / ORIGINAL_VAE_FILE, vae_dtype, _hint(base_dir, ORIGINAL_VAE_FILE))
    return parts
