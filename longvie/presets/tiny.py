"""Tiny random-weight models and checkpoints in the real file layouts (tests and --preset tiny).

Nothing here downloads anything: every model is built from the configs in configs/tiny.yaml with
a fixed seed, and written exactly where and how the released files are laid out.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.control_branch import LongVieControlBranch
from ..weights.checkpoint_keys import to_original_dit_state_dict, to_released_control_state_dict
from .config import load_config

TINY_PRESET = "tiny"


def tiny_model_config() -> dict:
    return load_config(TINY_PRESET)["model"]


def make_byte_tokenizer():
    """A byte-level tokenizer (256 bytes + <pad>=0, </s>=1, <unk>=2) standing in for umT5's.

    It encodes any text (Chinese included) and appends </s>, like T5 tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for char in sorted(byte_chars):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


@torch.no_grad()
def randomize_(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Fill every parameter with N(0, scale) (norm weights with 1 + N(0, scale)), in place.

    diffusers zero- or tiny-initialises several tensors; random values everywhere make sure a wrong
    name mapping or a skipped layer cannot hide behind zeros.
    """
    for name, param in module.named_parameters():
        noise = torch.randn_like(param) * scale
        param.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)


def build_tiny_transformer(seed: int = 0):
    from diffusers import WanTransformer3DModel

    config = tiny_model_config()["transformer"]
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    # diffusers initialises the output projection and the scale/shift tables to small values;
    # randomise everything so that a wrong mapping cannot hide behind zeros.
    randomize_(transformer)
    return transformer.eval()


def build_tiny_control(transformer, seed: int = 1, zero_adapters: bool = False) -> LongVieControlBranch:
    depth = tiny_model_config()["control_layers"]
    torch.manual_seed(seed)
    control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, depth))
    if not zero_adapters:
        randomize_(control)
    return control.eval()


def build_tiny_components(seed: int = 0) -> dict:
    """Tokenizer, umT5, CLIP vision tower + image processor and VAE of the tiny preset."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    config = tiny_model_config()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**config["text_encoder"])).eval()
    vision = CLIPVisionConfig(**config["image_encoder"])
    image_encoder = CLIPVisionModel(vision).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": vision.image_size}, crop_size={"height": vision.image_size, "width": vision.image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    vae = AutoencoderKLWan(**config["vae"]).eval()
    return dict(tokenizer=make_byte_tokenizer(), text_encoder=text_encoder, image_encoder=image_encoder,
                image_processor=image_processor, vae=vae)


def tiny_dit_overlay(transformer, seed: int = 2) -> dict:
    """A dit.safetensors-style partial state dict (original Wan names): every self-attention tensor,
    perturbed, as stage-3 training produces."""
    generator = torch.Generator().manual_seed(seed)
    partial = {k: v + 0.05 * torch.randn(v.shape, generator=generator)
               for k, v in transformer.state_dict().items() if ".attn1." in k}
    return to_original_dit_state_dict(partial)


def write_tiny_checkpoints(out_dir, seed: int = 0, zero_control: bool = False,
                           control_prefix: str = "", max_shard_size: str = "300KB") -> tuple[Path, Path]:
    """Write a tiny Wan2.1-I2V base folder (diffusers layout) and a LongVie 2 folder.

    Layout::

        out_dir/Wan2.1-I2V-tiny-Diffusers/{model_index.json, transformer/ (sharded safetensors + index),
                                           vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/}
        out_dir/LongVie2-tiny/{control.safetensors, dit.safetensors}

    Returns ``(base_dir, longvie_dir)``. Idempotent: an existing complete folder is reused.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    base_dir, longvie_dir = out_dir / "Wan2.1-I2V-tiny-Diffusers", out_dir / "LongVie2-tiny"
    marker = out_dir / f".complete-{seed}-{int(zero_control)}-{control_prefix or 'noprefix'}"
    if marker.is_file():
        return base_dir, longvie_dir
    base_dir.mkdir(parents=True, exist_ok=True)
    longvie_dir.mkdir(parents=True, exist_ok=True)

    transformer = build_tiny_transformer(seed)
    transformer.save_pretrained(base_dir / "transformer", max_shard_size=max_shard_size)
    components = build_tiny_components(seed)
    components["vae"].save_pretrained(base_dir / "vae")
    components["text_encoder"].save_pretrained(base_dir / "text_encoder")
    components["tokenizer"].save_pretrained(base_dir / "tokenizer")
    components["image_encoder"].save_pretrained(base_dir / "image_encoder")
    components["image_processor"].save_pretrained(base_dir / "image_processor")
    model_index = {
        "_class_name": "WanImageToVideoPipeline",
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (base_dir / "model_index.json").write_text(json.dumps(model_index, indent=2))

    control = build_tiny_control(transformer, seed + 1, zero_adapters=zero_control)
    released = to_released_control_state_dict({k: v.contiguous() for k, v in control.state_dict().items()})
    save_file({control_prefix + k: v for k, v in released.items()}, str(longvie_dir / "control.safetensors"))
    save_file({k: v.contiguous() for k, v in tiny_dit_overlay(transformer, seed + 2).items()},
              str(longvie_dir / "dit.safetensors"))
    marker.write_text("ok\n")
    return base_dir, longvie_dir


# --------------------------------------------------------------------------- original Wan2.1 layout
def write_sharded_safetensors(state_dict: dict, folder, num_shards: int,
                              basename: str = "diffusion_pytorch_model") -> Path:
    """Save ``state_dict`` as ``{basename}-0000i-of-0000n.safetensors`` shards plus their index json
    (the Hugging Face sharding convention); consecutive keys share a shard. Returns the index path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state_dict)
    if len(keys) < num_shards:
        raise ValueError(f"{len(keys)} tensors cannot fill {num_shards} shards")
    bounds = [round(i * len(keys) / num_shards) for i in range(num_shards + 1)]
    weight_map, total = {}, 0
    for i in range(num_shards):
        name = f"{basename}-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {k: state_dict[k].contiguous() for k in keys[bounds[i]:bounds[i + 1]]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = folder / f"{basename}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def write_tiny_original_checkpoints(out_dir, seed: int = 0) -> tuple[Path, Path]:
    """The tiny base model in the original Wan2.1 layout, holding exactly the weights that
    :func:`write_tiny_checkpoints` writes in the diffusers layout (read back from that folder).

    File and key names are those of "Wan-AI/Wan2.1-I2V-14B-480P"; shapes are tiny::

        out_dir/Wan2.1-I2V-tiny/{config.json, diffusion_pytorch_model-0000{1..7}-of-00007.safetensors,
            diffusion_pytorch_model.safetensors.index.json, models_t5_umt5-xxl-enc-bf16.pth,
            models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth, Wan2.1_VAE.pth, google/umt5-xxl/,
            longvie_arch_overrides.json}
        out_dir/LongVie2-tiny/   (the folder of write_tiny_checkpoints)

    Differences from the release, on purpose: tensors stay float32 (the umT5 file too, despite its
    name) so that both layouts hold identical values; the CLIP file's text tower is a two-tensor
    stand-in (it is never loaded); ``longvie_arch_overrides.json`` gives the two numbers the tiny
    shapes cannot tell (CLIP heads, umT5 max relative distance). Returns ``(base_dir, longvie_dir)``.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    from ..weights.files import ORIGINAL_CLIP_FILE, ORIGINAL_T5_FILE, ORIGINAL_T5_TOKENIZER_DIR, ORIGINAL_VAE_FILE
    from ..weights.original_keys import (
        to_original_clip_visual_state_dict,
        to_original_umt5_state_dict,
        to_original_vae_state_dict,
    )
    from ..weights.original_layout import ARCH_OVERRIDES_FILE

    out_dir = Path(out_dir)
    diffusers_dir, longvie_dir = write_tiny_checkpoints(out_dir, seed=seed)
    base_dir = out_dir / "Wan2.1-I2V-tiny"
    marker = out_dir / f".complete-original-{seed}"
    if marker.is_file():
        return base_dir, longvie_dir
    base_dir.mkdir(parents=True, exist_ok=True)

    transformer = WanTransformer3DModel.from_pretrained(diffusers_dir, subfolder="transformer")
    write_sharded_safetensors(to_original_dit_state_dict(transformer.state_dict()), base_dir, num_shards=7)
    cfg = transformer.config
    wan_config = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "i2v",
                  "dim": cfg.num_attention_heads * cfg.attention_head_dim, "eps": cfg.eps, "ffn_dim": cfg.ffn_dim,
                  "freq_dim": cfg.freq_dim, "in_dim": cfg.in_channels, "num_heads": cfg.num_attention_heads,
                  "num_layers": cfg.num_layers, "out_dim": cfg.out_channels, "text_len": 512}
    (base_dir / "config.json").write_text(json.dumps(wan_config, indent=2))

    text_encoder = UMT5EncoderModel.from_pretrained(diffusers_dir / "text_encoder")
    torch.save(to_original_umt5_state_dict(text_encoder.state_dict()), base_dir / ORIGINAL_T5_FILE)
    AutoTokenizer.from_pretrained(diffusers_dir / "tokenizer").save_pretrained(base_dir / ORIGINAL_T5_TOKENIZER_DIR)

    image_encoder = CLIPVisionModel.from_pretrained(diffusers_dir / "image_encoder")
    clip = to_original_clip_visual_state_dict(image_encoder.state_dict())
    generator = torch.Generator().manual_seed(seed + 3)
    width, projection = image_encoder.config.hidden_size, image_encoder.config.projection_dim
    clip["visual.head"] = torch.randn(width, projection, generator=generator)
    clip["textual.token_embedding.weight"] = torch.randn(16, width, generator=generator)
    clip["log_scale"] = torch.tensor(2.6592)
    torch.save(clip, base_dir / ORIGINAL_CLIP_FILE)

    vae = AutoencoderKLWan.from_pretrained(diffusers_dir, subfolder="vae")
    torch.save(to_original_vae_state_dict(vae.state_dict(), vae.config.num_res_blocks), base_dir / ORIGINAL_VAE_FILE)

    overrides = {"text_encoder": {"relative_attention_max_distance":
                                  text_encoder.config.relative_attention_max_distance},
                 "image_encoder": {"num_attention_heads": image_encoder.config.num_attention_heads}}
    (base_dir / ARCH_OVERRIDES_FILE).write_text(json.dumps(overrides, indent=2))
    marker.write_text("ok\n")
    return base_dir, longvie_dir


# --------------------------------------------------------------------------- tiny metric depth model
def build_tiny_depth_model(seed: int = 3):
    """A tiny random-weight metric Depth Anything V2 (transformers' ``DepthAnythingForDepthEstimation``,
    ``depth_estimation_type="metric"``) and its image processor: what ``python -m longvie.camera --preset
    tiny`` uses instead of a downloaded depth model, like the preset's other components. Its depth is
    positive (sigmoid x max_depth) and varies with the image, which is all the camera code needs offline.

    Returns ``(model, image_processor)``.
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type="metric", max_depth=20)
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config)
    randomize_(model, scale=0.08)
    processor = DPTImageProcessor(do_resize=True, size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                                  ensure_multiple_of=14, resample=3, do_pad=False,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model.eval(), processor
