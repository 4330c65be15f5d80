"""Name tables and configs for the original Wan2.1 umT5, CLIP and VAE checkpoints.

The original release ("Wan-AI/Wan2.1-I2V-14B-480P") stores three .pth state dicts in Wan's own
module names (github.com/Wan-Video/Wan2.1, wan/modules/{t5,clip,vae}.py). Here they are mapped,
explicitly and in both directions, onto the transformers / diffusers classes that the
diffusers-layout release uses (UMT5EncoderModel, CLIPVisionModel, AutoencoderKLWan), and their
configs are derived from the tensor shapes. The DiT's tables live in :mod:`longvie.weights.checkpoint_keys`.

Every converter raises :class:`CheckpointKeyError` listing each key it cannot place.
"""
from __future__ import annotations

import math
import re

import torch

from .checkpoint_keys import CheckpointKeyError

_INDEXED = re.compile(r"^(?P<head>.+?)\.(?P<idx>\d+)\.(?P<rest>.+)$")


def _raise_unknown(unknown, source: str, expected: str) -> None:
    if unknown:
        shown = "\n  ".join(sorted(unknown)[:40])
        more = f"\n  ... and {len(unknown) - 40} more" if len(unknown) > 40 else ""
        raise CheckpointKeyError(f"{source}: {len(unknown)} unknown key(s):\n  {shown}{more}\nExpected {expected}.")


def _count_indexed(state_dict, prefix: str) -> int:
    """Number of consecutive ``prefix.N.`` entries (0..N-1); raises if some index is missing."""
    indices = {int(m["idx"]) for k in state_dict if (m := _INDEXED.match(k)) and m["head"] == prefix}
    if indices and sorted(indices) != list(range(max(indices) + 1)):
        raise CheckpointKeyError(f"{prefix}: indices {sorted(set(range(max(indices) + 1)) - indices)} are missing")
    return len(indices)


def _require(state_dict, keys, source: str, what: str) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise CheckpointKeyError(f"{source}: missing {', '.join(missing)}; not {what}.")


# =========================================================================== umT5-XXL encoder
# wan/modules/t5.py: T5Encoder(token_embedding, blocks[N] = T5SelfAttention(norm1, attn.{q,k,v,o},
# norm2, ffn.{gate.0, fc1, fc2}, pos_embedding.embedding), norm). umT5 has a relative-position bias in
# every layer (shared_pos=False), which transformers' UMT5 also has. Wan's FFN computes
# fc1(x) * GELU_tanh(gate(x)); transformers computes wi_1(x) * act(wi_0(x)), so gate -> wi_0, fc1 -> wi_1.
UMT5_TOP_TABLE: dict[str, str] = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}
UMT5_BLOCK_TABLE: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
# Fixed in Wan's code rather than stored in the file: T5RelativeEmbedding(max_dist=128),
# T5LayerNorm(eps=1e-6), the tanh GELU of the gated FFN; umt5-xxl's special tokens (pad 0, eos 1).
UMT5_FIXED_CONFIG = dict(relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                         feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                         dropout_rate=0.0)
_INV_UMT5_TOP = {v: k for k, v in UMT5_TOP_TABLE.items()}
_INV_UMT5_BLOCK = {v: k for k, v in UMT5_BLOCK_TABLE.items()}


def convert_umt5_state_dict(state_dict: dict, source: str = "umT5 checkpoint") -> dict:
    """Wan T5Encoder names -> transformers UMT5EncoderModel names (``shared.weight`` for the embedding)."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        match = _INDEXED.match(key)
        if key in UMT5_TOP_TABLE:
            out[UMT5_TOP_TABLE[key]] = value
        elif match and match["head"] == "blocks" and match["rest"] in UMT5_BLOCK_TABLE:
            out[f"encoder.block.{match['idx']}.{UMT5_BLOCK_TABLE[match['rest']]}"] = value
        else:
            unknown.append(key)
    _raise_unknown(unknown, source, "Wan2.1 umT5 encoder names such as 'blocks.0.attn.q.weight'")
    return out


def to_original_umt5_state_dict(state_dict: dict) -> dict:
    """Inverse of :func:`convert_umt5_state_dict` (``encoder.embed_tokens`` is the tied copy, dropped)."""
    out = {}
    for key, value in state_dict.items():
        if key == "encoder.embed_tokens.weight":
            continue
        match = re.match(r"^encoder\.block\.(\d+)\.(.+)$", key)
        if key in _INV_UMT5_TOP:
            out[_INV_UMT5_TOP[key]] = value
        elif match and match[2] in _INV_UMT5_BLOCK:
            out[f"blocks.{match[1]}.{_INV_UMT5_BLOCK[match[2]]}"] = value
        else:
            raise CheckpointKeyError(f"no Wan umT5 name for '{key}'")
    return out


def umt5_config_from_state_dict(state_dict: dict, source: str = "umT5 checkpoint", **overrides) -> dict:
    """UMT5Config kwargs read from the shapes (Wan names); ``overrides`` for what shapes cannot tell.

    umt5-xxl gives vocab 256384, d_model 4096, 64 heads x 64, d_ff 10240, 24 layers, 32 buckets.
    """
    _require(state_dict, ["token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight",
                          "blocks.0.pos_embedding.embedding.weight"], source, "a Wan2.1 umT5 encoder")
    vocab, d_model = state_dict["token_embedding.weight"].shape
    buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
    num_layers = _count_indexed(state_dict, "blocks")
    config = dict(vocab_size=vocab, d_model=d_model, num_heads=heads,
                  d_kv=state_dict["blocks.0.attn.q.weight"].shape[0] // heads,
                  d_ff=state_dict["blocks.0.ffn.fc1.weight"].shape[0], num_layers=num_layers,
                  num_decoder_layers=num_layers, relative_attention_num_buckets=buckets, **UMT5_FIXED_CONFIG)
    config.update(overrides)
    return config


# =========================================================================== CLIP ViT-H/14 visual tower
# wan/modules/clip.py: VisionTransformer(patch_embedding (Conv2d, no bias since pre_norm=True),
# cls_embedding (1,1,D), pos_embedding (1,1+P,D), pre_norm, transformer[N] = AttentionBlock(norm1,
# attn.to_qkv (fused, rows [q; k; v]), attn.proj, norm2, mlp.0, mlp.2), post_norm, head (D, 1024)).
# Pre-norm blocks, exact GELU, LayerNorm eps 1e-5, softmax scale 1/sqrt(head_dim): the same maths as
# transformers' CLIPVisionModel. Wan uses the output of block 31 of 32 (``use_31_block``), i.e.
# ``hidden_states[-2]``; ``post_norm`` and ``head`` therefore never touch an image token.
CLIP_TOP_TABLE: dict[str, str] = {
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.cls_embedding": "embeddings.class_embedding",
    "visual.pos_embedding": "embeddings.position_embedding.weight",
    "visual.pre_norm.weight": "pre_layrnorm.weight",
    "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight",
    "visual.post_norm.bias": "post_layernorm.bias",
}
CLIP_LAYER_TABLE: dict[str, str] = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.proj.weight": "self_attn.out_proj.weight",
    "attn.proj.bias": "self_attn.out_proj.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.2.weight": "mlp.fc2.weight",
    "mlp.2.bias": "mlp.fc2.bias",
}
CLIP_FUSED_QKV = {"attn.to_qkv.weight": "weight", "attn.to_qkv.bias": "bias"}  # -> self_attn.{q,k,v}_proj.*
# Deliberately not loaded: the XLM-RoBERTa text tower and the contrastive parts (LongVie 2 encodes
# images only), and the visual projection head, which CLIPVisionModel does not have.
CLIP_IGNORED_PREFIXES: tuple[str, ...] = ("textual.",)
CLIP_IGNORED_KEYS: tuple[str, ...] = ("log_scale", "visual.head")
# clip_xlm_roberta_vit_h_14 in wan/modules/clip.py: vision_heads=16 (1280 / 16 = 80 per head),
# activation='gelu', norm_eps=1e-5. The head count is not stored in any tensor shape.
CLIP_VIT_H14_WIDTH, CLIP_VIT_H14_HEADS = 1280, 16
CLIP_FIXED_CONFIG = dict(hidden_act="gelu", layer_norm_eps=1e-5, num_channels=3)
# open-clip keeps the class and position embeddings with leading batch dims; transformers does not.
_CLIP_RESHAPE = {"embeddings.class_embedding": lambda t: t.reshape(t.shape[-1]),           # (1, 1, D) -> (D,)
                 "embeddings.position_embedding.weight": lambda t: t.reshape(t.shape[-2:])}  # (1, L, D) -> (L, D)
_CLIP_UNRESHAPE = {"visual.cls_embedding": lambda t: t.reshape(1, 1, -1),
                   "visual.pos_embedding": lambda t: t.unsqueeze(0)}
_INV_CLIP_TOP = {v: k for k, v in CLIP_TOP_TABLE.items()}
_INV_CLIP_LAYER = {v: k for k, v in CLIP_LAYER_TABLE.items()}
_CLIP_LAYER_RE = re.compile(r"^visual\.transformer\.(\d+)\.(.+)$")


def convert_clip_visual_state_dict(state_dict: dict, source: str = "CLIP checkpoint") -> dict:
    """Wan/open-clip visual names -> transformers CLIPVisionModel names (without a ``vision_model.`` prefix)."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith(CLIP_IGNORED_PREFIXES) or key in CLIP_IGNORED_KEYS:
            continue
        match = _CLIP_LAYER_RE.match(key)
        if key in CLIP_TOP_TABLE:
            new = CLIP_TOP_TABLE[key]
            out[new] = _CLIP_RESHAPE[new](value) if new in _CLIP_RESHAPE else value
        elif match and match[2] in CLIP_LAYER_TABLE:
            out[f"encoder.layers.{match[1]}.{CLIP_LAYER_TABLE[match[2]]}"] = value
        elif match and match[2] in CLIP_FUSED_QKV:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"encoder.layers.{match[1]}.self_attn.{name}_proj.{CLIP_FUSED_QKV[match[2]]}"] = part
        else:
            unknown.append(key)
    _raise_unknown(unknown, source, "open-clip ViT names such as 'visual.transformer.0.attn.to_qkv.weight' "
                   "(text-tower keys 'textual.*' are ignored)")
    return out


def to_original_clip_visual_state_dict(state_dict: dict) -> dict:
    """Inverse of :func:`convert_clip_visual_state_dict` (fuses q/k/v back into ``attn.to_qkv``)."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        key = key.removeprefix("vision_model.")
        layer = re.match(r"^encoder\.layers\.(\d+)\.(.+)$", key)
        if key in _INV_CLIP_TOP:
            orig = _INV_CLIP_TOP[key]
            out[orig] = _CLIP_UNRESHAPE[orig](value) if orig in _CLIP_UNRESHAPE else value
        elif layer and layer[2] in _INV_CLIP_LAYER:
            out[f"visual.transformer.{layer[1]}.{_INV_CLIP_LAYER[layer[2]]}"] = value
        elif layer and (qkv_match := re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", layer[2])):
            qkv.setdefault((layer[1], qkv_match[2]), {})[qkv_match[1]] = value
        else:
            raise CheckpointKeyError(f"no open-clip name for '{key}'")
    for (index, kind), parts in qkv.items():
        out[f"visual.transformer.{index}.attn.to_qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def clip_vision_config_from_state_dict(state_dict: dict, source: str = "CLIP checkpoint", **overrides) -> dict:
    """CLIPVisionConfig kwargs from the shapes (Wan names). ViT-H/14: 1280 wide, 32 layers, 224 px, patch 14.

    The head count is not in any shape: it is 16 for the 1280-wide ViT-H/14 of the release and must be
    given in ``overrides`` (``num_attention_heads``) for any other width.
    """
    _require(state_dict, ["visual.patch_embedding.weight", "visual.pos_embedding", "visual.transformer.0.mlp.0.weight"],
             source, "an open-clip ViT visual tower (keys 'visual.*')")
    width, _, patch, _ = state_dict["visual.patch_embedding.weight"].shape
    positions = state_dict["visual.pos_embedding"].shape[-2]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointKeyError(f"{source}: visual.pos_embedding has {positions} positions, not 1 + a square grid")
    config = dict(hidden_size=width, intermediate_size=state_dict["visual.transformer.0.mlp.0.weight"].shape[0],
                  num_hidden_layers=_count_indexed(state_dict, "visual.transformer"), image_size=grid * patch,
                  patch_size=patch, **CLIP_FIXED_CONFIG)
    if "visual.head" in state_dict:
        config["projection_dim"] = state_dict["visual.head"].shape[-1]
    if width == CLIP_VIT_H14_WIDTH:
        config["num_attention_heads"] = CLIP_VIT_H14_HEADS
    config.update(overrides)
    if "num_attention_heads" not in config:
        raise CheckpointKeyError(
            f"{source}: a {width}-wide CLIP vision tower is not Wan2.1's ViT-H/14 ({CLIP_VIT_H14_WIDTH} wide, "
            f"{CLIP_VIT_H14_HEADS} heads), and its number of attention heads cannot be read from the weights.")
    return config


# =========================================================================== Wan2.1 causal 3D VAE
# wan/modules/vae.py: WanVAE_(encoder = Encoder3d(conv1, downsamples[...], middle[res, attn, res],
# head[RMS_norm, SiLU, conv]), conv1 (quant), conv2 (post-quant), decoder = Decoder3d(conv1, middle,
# upsamples[...], head)). ResidualBlock.residual = [RMS_norm, SiLU, conv, RMS_norm, SiLU, Dropout, conv]
# (weights at 0, 2, 3, 6) + shortcut. The encoder's flat list matches diffusers' ``down_blocks`` entry
# for entry; the decoder's flat list holds, per stage, num_res_blocks + 1 residual blocks then one
# Resample (none after the last stage), which diffusers groups as up_blocks[i].{resnets, upsamplers}.
# Wan2.1's VAE has no attention outside the middle blocks (attn_scales=[]).
VAE_RESNET_TABLE: dict[str, str] = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}
VAE_TOP_TABLE: dict[str, str] = {  # diffusers module -> Wan module (parameter names below them are equal)
    "encoder.conv_in": "encoder.conv1",
    "encoder.norm_out": "encoder.head.0",
    "encoder.conv_out": "encoder.head.2",
    "decoder.conv_in": "decoder.conv1",
    "decoder.norm_out": "decoder.head.0",
    "decoder.conv_out": "decoder.head.2",
    "quant_conv": "conv1",
    "post_quant_conv": "conv2",
}
VAE_MIDDLE_TABLE: dict[str, str] = {"resnets.0": "0", "attentions.0": "1", "resnets.1": "2"}
# wan/modules/vae.py, class WanVAE: per-channel latent statistics (not stored in Wan2.1_VAE.pth).
WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def _vae_block_param(rest: str) -> str:
    """Inside one residual/attention/resample block: diffusers parameter name -> Wan's."""
    return VAE_RESNET_TABLE.get(rest, rest)  # attention (norm, to_qkv, proj) and resample names are equal


def diffusers_to_original_vae_key(key: str, num_res_blocks: int) -> str:
    """One AutoencoderKLWan parameter name -> its name in Wan2.1_VAE.pth (Wan2.1 VAEs: attn_scales=[])."""
    for new, old in VAE_TOP_TABLE.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if m := re.match(r"^(encoder|decoder)\.mid_block\.(resnets\.\d|attentions\.\d)\.(.+)$", key):
        return f"{m[1]}.middle.{VAE_MIDDLE_TABLE[m[2]]}.{_vae_block_param(m[3])}"
    if m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key):
        return f"encoder.downsamples.{m[1]}.{_vae_block_param(m[2])}"
    per_stage = num_res_blocks + 2  # residual blocks + one Resample
    if m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
        return f"decoder.upsamples.{int(m[1]) * per_stage + int(m[2])}.{_vae_block_param(m[3])}"
    if m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", key):
        return f"decoder.upsamples.{int(m[1]) * per_stage + num_res_blocks + 1}.{m[2]}"
    raise CheckpointKeyError(f"no Wan2.1 VAE name for '{key}'")


def vae_key_table(diffusers_keys, num_res_blocks: int) -> dict[str, str]:
    """{Wan name: diffusers name} for every parameter of an AutoencoderKLWan."""
    return {diffusers_to_original_vae_key(k, num_res_blocks): k for k in diffusers_keys}


def vae_config_from_state_dict(state_dict: dict, source: str = "VAE checkpoint") -> dict:
    """AutoencoderKLWan kwargs from the shapes of a Wan2.1_VAE.pth state dict.

    The release: base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], num_res_blocks 2,
    temperal_downsample [False, True, True] (wan/modules/vae.py, _video_vae).
    """
    _require(state_dict, ["encoder.conv1.weight", "conv2.weight", "decoder.conv1.weight"], source,
             "a Wan2.1 VAE (Wan2.1_VAE.pth)")
    entries = sorted({int(m["idx"]) for k in state_dict
                      if (m := _INDEXED.match(k)) and m["head"] == "encoder.downsamples"})
    if any(".to_qkv." in k for k in state_dict if k.startswith(("encoder.downsamples.", "decoder.upsamples."))):
        raise CheckpointKeyError(f"{source}: attention blocks outside the middle of the VAE; "
                                 "this is not a Wan2.1 VAE (attn_scales=[])")
    resamples = [i for i in entries if f"encoder.downsamples.{i}.resample.1.weight" in state_dict]
    if not resamples:
        raise CheckpointKeyError(f"{source}: no downsampling blocks (encoder.downsamples.N.resample.*)")
    num_res_blocks = resamples[0]  # each stage: num_res_blocks residual blocks, then a Resample
    base_dim = state_dict["encoder.conv1.weight"].shape[0]
    stages = len(resamples) + 1
    dim_mult = [state_dict[f"encoder.downsamples.{s * (num_res_blocks + 1)}.residual.2.weight"].shape[0] // base_dim
                for s in range(stages)]
    temporal = [f"encoder.downsamples.{i}.time_conv.weight" in state_dict for i in resamples]
    z_dim = state_dict["conv2.weight"].shape[0]
    if z_dim != len(WAN21_LATENTS_MEAN):
        raise CheckpointKeyError(f"{source}: latent channels z_dim={z_dim}; the Wan2.1 VAE has 16 "
                                 "(Wan2.2's 48-channel VAE is a different model)")
    return dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=num_res_blocks, attn_scales=[],
                temperal_downsample=temporal, dropout=0.0, latents_mean=list(WAN21_LATENTS_MEAN),
                latents_std=list(WAN21_LATENTS_STD))


def convert_vae_state_dict(state_dict: dict, diffusers_keys, num_res_blocks: int,
                           source: str = "VAE checkpoint") -> dict:
    """Wan2.1_VAE.pth names -> the AutoencoderKLWan names in ``diffusers_keys`` (unknown keys raise)."""
    table = vae_key_table(diffusers_keys, num_res_blocks)
    unknown = [k for k in state_dict if k not in table]
    _raise_unknown(unknown, source, "Wan2.1 VAE names such as 'encoder.downsamples.0.residual.2.weight'")
    return {table[k]: v for k, v in state_dict.items()}


def to_original_vae_state_dict(state_dict: dict, num_res_blocks: int) -> dict:
    """AutoencoderKLWan state dict -> Wan2.1_VAE.pth names."""
    return {diffusers_to_original_vae_key(k, num_res_blocks): v for k, v in state_dict.items()}
