"""Name mapping between the original Wan / DiffSynth checkpoint layout and diffusers.

The released LongVie 2 files use the original Wan2.1 parameter names (as DiffSynth-Studio
writes them): ``control.safetensors`` holds the control branch, ``dit.safetensors`` a partial
state dict of the main DiT. Our modules are built from diffusers' Wan classes, whose names
differ. Everything here is an explicit table so a reviewer can check it line by line against
SPEC §2 and against diffusers' own ``convert_wan_transformer_to_diffusers``.
"""
from __future__ import annotations

import re

from .. import LongVieError

# Inside one transformer block: original Wan name -> diffusers WanTransformerBlock name.
# Note the norm swap: original ``norm3`` is the affine LayerNorm *before cross-attention*, which
# diffusers calls ``norm2``; the non-affine norms carry no weights and need no entry.
BLOCK_KEY_TABLE: dict[str, str] = {
    "self_attn.q.weight": "attn1.to_q.weight",
    "self_attn.q.bias": "attn1.to_q.bias",
    "self_attn.k.weight": "attn1.to_k.weight",
    "self_attn.k.bias": "attn1.to_k.bias",
    "self_attn.v.weight": "attn1.to_v.weight",
    "self_attn.v.bias": "attn1.to_v.bias",
    "self_attn.o.weight": "attn1.to_out.0.weight",
    "self_attn.o.bias": "attn1.to_out.0.bias",
    "self_attn.norm_q.weight": "attn1.norm_q.weight",
    "self_attn.norm_k.weight": "attn1.norm_k.weight",
    "cross_attn.q.weight": "attn2.to_q.weight",
    "cross_attn.q.bias": "attn2.to_q.bias",
    "cross_attn.k.weight": "attn2.to_k.weight",
    "cross_attn.k.bias": "attn2.to_k.bias",
    "cross_attn.v.weight": "attn2.to_v.weight",
    "cross_attn.v.bias": "attn2.to_v.bias",
    "cross_attn.o.weight": "attn2.to_out.0.weight",
    "cross_attn.o.bias": "attn2.to_out.0.bias",
    "cross_attn.norm_q.weight": "attn2.norm_q.weight",
    "cross_attn.norm_k.weight": "attn2.norm_k.weight",
    "cross_attn.k_img.weight": "attn2.add_k_proj.weight",
    "cross_attn.k_img.bias": "attn2.add_k_proj.bias",
    "cross_attn.v_img.weight": "attn2.add_v_proj.weight",
    "cross_attn.v_img.bias": "attn2.add_v_proj.bias",
    "cross_attn.norm_k_img.weight": "attn2.norm_added_k.weight",
    "norm3.weight": "norm2.weight",
    "norm3.bias": "norm2.bias",
    "ffn.0.weight": "ffn.net.0.proj.weight",
    "ffn.0.bias": "ffn.net.0.proj.bias",
    "ffn.2.weight": "ffn.net.2.weight",
    "ffn.2.bias": "ffn.net.2.bias",
    "modulation": "scale_shift_table",
}

# Main DiT, outside the blocks: original Wan name -> diffusers WanTransformer3DModel name.
DIT_TOP_KEY_TABLE: dict[str, str] = {
    "patch_embedding.weight": "patch_embedding.weight",
    "patch_embedding.bias": "patch_embedding.bias",
    "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
    "text_embedding.0.bias": "condition_embedder.text_embedder.linear_1.bias",
    "text_embedding.2.weight": "condition_embedder.text_embedder.linear_2.weight",
    "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
    "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
    "time_embedding.0.bias": "condition_embedder.time_embedder.linear_1.bias",
    "time_embedding.2.weight": "condition_embedder.time_embedder.linear_2.weight",
    "time_embedding.2.bias": "condition_embedder.time_embedder.linear_2.bias",
    "time_projection.1.weight": "condition_embedder.time_proj.weight",
    "time_projection.1.bias": "condition_embedder.time_proj.bias",
    "img_emb.proj.0.weight": "condition_embedder.image_embedder.norm1.weight",
    "img_emb.proj.0.bias": "condition_embedder.image_embedder.norm1.bias",
    "img_emb.proj.1.weight": "condition_embedder.image_embedder.ff.net.0.proj.weight",
    "img_emb.proj.1.bias": "condition_embedder.image_embedder.ff.net.0.proj.bias",
    "img_emb.proj.3.weight": "condition_embedder.image_embedder.ff.net.2.weight",
    "img_emb.proj.3.bias": "condition_embedder.image_embedder.ff.net.2.bias",
    "img_emb.proj.4.weight": "condition_embedder.image_embedder.norm2.weight",
    "img_emb.proj.4.bias": "condition_embedder.image_embedder.norm2.bias",
    "head.head.weight": "proj_out.weight",
    "head.head.bias": "proj_out.bias",
    "head.modulation": "scale_shift_table",
}

# Control branch, outside its blocks. Our module keeps the released top-level names, so these
# map to themselves; they are listed so that any other name is reported as unknown.
CONTROL_TOP_KEYS: tuple[str, ...] = (
    "control_initial_combine_linear_dense.weight",
    "control_initial_combine_linear_dense.bias",
    "control_initial_combine_linear_sparse.weight",
    "control_initial_combine_linear_sparse.bias",
    "control_text_linear.weight",
    "control_text_linear.bias",
    "control_t_mod.weight",
    "control_t_mod.bias",
)
CONTROL_BLOCK_LISTS: tuple[str, ...] = ("control_blocks_dense", "control_blocks_sparse")
CONTROL_COMBINE_LIST = "control_combine_linears"

# Prefixes that training frameworks put in front of the control-branch names.
CONTROL_PREFIXES: tuple[str, ...] = ("pipe.dual_controller.", "dual_controller.")
DIT_PREFIXES: tuple[str, ...] = ("pipe.dit.", "dit.", "model.diffusion_model.")

_BLOCK_RE = re.compile(r"^(?P<list>[A-Za-z_]+)\.(?P<idx>\d+)\.(?P<rest>.+)$")
_INVERSE_BLOCK_TABLE = {v: k for k, v in BLOCK_KEY_TABLE.items()}
_INVERSE_DIT_TOP_TABLE = {v: k for k, v in DIT_TOP_KEY_TABLE.items()}


class CheckpointKeyError(LongVieError, KeyError):
    """A checkpoint holds names we cannot place, or lacks names we need."""

    def __str__(self) -> str:  # KeyError would repr() the message and hide its newlines
        return str(self.args[0]) if self.args else ""


def strip_prefix(state_dict: dict, prefixes: tuple[str, ...]) -> dict:
    """Remove one known framework prefix (the first that every key carries)."""
    for prefix in prefixes:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _fail(kind: str, unknown: list[str], source: str, hint: str) -> None:
    shown = "\n  ".join(sorted(unknown)[:40])
    more = f"\n  ... and {len(unknown) - 40} more" if len(unknown) > 40 else ""
    raise CheckpointKeyError(f"{source}: {len(unknown)} {kind} key(s):\n  {shown}{more}\n{hint}")


def original_to_diffusers_dit_key(key: str) -> str | None:
    """Map one original-Wan DiT key (``blocks.3.self_attn.q.weight``) to diffusers, or None."""
    if key in DIT_TOP_KEY_TABLE:
        return DIT_TOP_KEY_TABLE[key]
    match = _BLOCK_RE.match(key)
    if match and match["list"] == "blocks" and match["rest"] in BLOCK_KEY_TABLE:
        return f"blocks.{match['idx']}.{BLOCK_KEY_TABLE[match['rest']]}"
    return None


def diffusers_to_original_dit_key(key: str) -> str | None:
    """Inverse of :func:`original_to_diffusers_dit_key`."""
    if key in _INVERSE_DIT_TOP_TABLE:
        return _INVERSE_DIT_TOP_TABLE[key]
    match = _BLOCK_RE.match(key)
    if match and match["list"] == "blocks" and match["rest"] in _INVERSE_BLOCK_TABLE:
        return f"blocks.{match['idx']}.{_INVERSE_BLOCK_TABLE[match['rest']]}"
    return None


def convert_dit_state_dict(state_dict: dict, source: str = "dit checkpoint") -> dict:
    """Original-Wan DiT names -> diffusers names. Raises listing every key it cannot map."""
    state_dict = strip_prefix(state_dict, DIT_PREFIXES)
    converted, unknown = {}, []
    for key, value in state_dict.items():
        new_key = original_to_diffusers_dit_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        _fail("unknown", unknown, source,
              "Expected original Wan2.1 DiT names such as 'blocks.0.self_attn.q.weight' "
              "(the layout of LongVie 2's dit.safetensors).")
    return converted


def original_to_diffusers_control_key(key: str) -> str | None:
    """Map one released control-branch key to our module's name, or None if unknown."""
    if key in CONTROL_TOP_KEYS:
        return key
    match = _BLOCK_RE.match(key)
    if not match:
        return None
    if match["list"] in CONTROL_BLOCK_LISTS and match["rest"] in BLOCK_KEY_TABLE:
        return f"{match['list']}.{match['idx']}.{BLOCK_KEY_TABLE[match['rest']]}"
    if match["list"] == CONTROL_COMBINE_LIST and match["rest"] in ("weight", "bias"):
        return key
    return None


def diffusers_to_original_control_key(key: str) -> str | None:
    """Inverse of :func:`original_to_diffusers_control_key` (used when saving checkpoints)."""
    if key in CONTROL_TOP_KEYS:
        return key
    match = _BLOCK_RE.match(key)
    if not match:
        return None
    if match["list"] in CONTROL_BLOCK_LISTS and match["rest"] in _INVERSE_BLOCK_TABLE:
        return f"{match['list']}.{match['idx']}.{_INVERSE_BLOCK_TABLE[match['rest']]}"
    if match["list"] == CONTROL_COMBINE_LIST and match["rest"] in ("weight", "bias"):
        return key
    return None


def convert_control_state_dict(state_dict: dict, source: str = "control checkpoint") -> dict:
    """Released (DiffSynth-named) control keys -> our module's names; raises on unknown keys."""
    state_dict = strip_prefix(state_dict, CONTROL_PREFIXES)
    converted, unknown = {}, []
    for key, value in state_dict.items():
        new_key = original_to_diffusers_control_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        hint = ("Expected LongVie 2 control-branch names such as "
                "'control_blocks_dense.0.self_attn.q.weight'.")
        if any(k.startswith(("controlnet", "control_blocks.")) for k in unknown):
            hint += " This looks like a LongVie 1 / single-branch ControlNet checkpoint, which LongVie 2 cannot use."
        _fail("unknown", unknown, source, hint)
    return converted


def control_depth_from_keys(keys) -> int:
    """Number of control blocks in a (converted or released) control state dict."""
    indices = set()
    for key in keys:
        match = _BLOCK_RE.match(key)
        if match and match["list"] == "control_blocks_dense":
            indices.add(int(match["idx"]))
    if not indices:
        raise CheckpointKeyError("control checkpoint holds no 'control_blocks_dense.N.*' keys")
    depth = max(indices) + 1
    if sorted(indices) != list(range(depth)):
        missing = sorted(set(range(depth)) - indices)
        raise CheckpointKeyError(f"control checkpoint is missing dense blocks {missing}")
    return depth


def to_released_control_state_dict(state_dict: dict) -> dict:
    """Our control-branch state dict -> the released key layout (for saving)."""
    out = {}
    for key, value in state_dict.items():
        new_key = diffusers_to_original_control_key(key)
        if new_key is None:
            raise CheckpointKeyError(f"no released name for control parameter '{key}'")
        out[new_key] = value
    return out


def to_original_dit_state_dict(state_dict: dict) -> dict:
    """diffusers DiT names -> original Wan names (for saving dit.safetensors)."""
    out = {}
    for key, value in state_dict.items():
        new_key = diffusers_to_original_dit_key(key)
        if new_key is None:
            raise CheckpointKeyError(f"no original Wan name for DiT parameter '{key}'")
        out[new_key] = value
    return out
