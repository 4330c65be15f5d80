"""LoRAs on the LongVie denoiser, in the file formats Wan users have, fused into the weights for sampling.

    from longvie.weights.lora import LoraSpec, load_loras
    records = load_loras(pipe.denoiser, [LoraSpec("style.safetensors", 0.8)])   # fused: no per-step cost

Formats (``.safetensors``): diffusers/PEFT (``transformer.blocks.0.attn1.to_q.lora_A.weight``, with or
without the ``transformer.`` prefix), kohya/musubi-tuner (``lora_unet_blocks_0_self_attn_q.lora_down.weight``
+ ``alpha``), ComfyUI / LightX2V (``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` or
``lora_A/lora_B``, ``alpha``, full differences ``.diff`` / ``.diff_b`` / ``.diff_m``) and DiffSynth-Studio
(original Wan names without prefix, ``lora_A.default.weight``). The DiT part goes through diffusers' own Wan
LoRA loading: ``WanLoraLoaderMixin.lora_state_dict`` (with its ``_convert_non_diffusers_wan_lora_to_diffusers``
/ ``_convert_musubi_wan_lora_to_diffusers``) converts the keys, ``load_lora_adapter`` injects them with PEFT,
``fuse_lora`` merges W <- W + scale * (alpha / r) * B A and ``unload_lora`` removes the PEFT wrappers, so the
fused model is a plain model again (FP8, offload and compile see ordinary Linear layers). Mapped here, only
where diffusers has nothing:

* LongVie control-branch keys (``control_blocks_dense.0.self_attn.q.lora_A.weight``, optionally
  ``pipe.dual_controller.``-prefixed): our key table (:mod:`longvie.weights.checkpoint_keys`) names the
  module, alpha is folded into A as diffusers does, and PEFT loads them into the control branch. A LoRA
  touches the control branch only when the file has keys for it.
* full differences (``.diff`` weight, ``.diff_b`` bias, ``.diff_m`` modulation table), as LightX2V's
  distill LoRAs carry them: diffusers turns ``diff_b`` into a LoRA bias and drops ``diff_m`` and norm
  ``diff`` keys; here every one is added to its parameter (param += scale * diff), so the model is the
  one LightX2V's own loader builds.

Problems are found before sampling, from the safetensors header alone where possible
(:func:`check_lora_files`, before the model loads): keys that match nothing, wrong shapes, a LoRA made
for another model (Wan2.1 1.3B: 1536 wide; T2V: by its metadata, or a whole-model LoRA without the
image branch's k_img/v_img), unsupported kinds (DoRA, LyCORIS). One :class:`LoraError` names the file
and a few keys. Fused LoRAs can be removed again with :func:`unfuse_loras` (the same LoRA applied with
-scale, or the PEFT adapters deleted when loaded unfused).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import LongVieError
from .checkpoint_keys import original_to_diffusers_control_key, original_to_diffusers_dit_key
from .files import WeightsError, safetensors_header

__all__ = ["LoraSpec", "LoraError", "parse_lora_arg", "check_lora_files", "load_loras", "unfuse_loras",
           "loaded_loras", "RELEASE_TRANSFORMER_CONFIG", "RELEASE_CONTROL_LAYERS"]

# Wan2.1-I2V-14B-480P as diffusers' WanTransformer3DModel config (SPEC §1) and the release's control depth.
RELEASE_TRANSFORMER_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                                  added_kv_proj_dim=5120, rope_max_seq_len=1024)
RELEASE_CONTROL_LAYERS = 12
WAN_WIDTHS = {1536: "Wan2.1 1.3B", 5120: "Wan2.1 14B", 3072: "Wan2.2 5B"}

_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
                       "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
# Framework prefixes in front of the model's names (PEFT, DiffSynth-Studio pipelines, LongVie's trainer).
_STRIP_PREFIXES = ("base_model.model.", "pipe.dit.", "dit.", "pipe.dual_controller.", "dual_controller.")
_DIFF_SUFFIXES = {".diff": ".weight", ".diff_b": ".bias", ".diff_m": ".modulation"}
# Per-module LoRA tensors: (suffix in the file, role).
_LORA_SUFFIXES = (("lora_A.weight", "A"), ("lora_down.weight", "A"), ("lora_B.weight", "B"), ("lora_up.weight", "B"),
                  ("lora_B.bias", "bias"), ("alpha", "alpha"))
_ORIGINAL_WAN_KEY = re.compile(r"^(blocks\.\d+\.(self_attn|cross_attn|ffn\.\d|norm\d|modulation)|text_embedding|"
                               r"time_embedding|time_projection|img_emb|head)\b")
_UNSUPPORTED = (("dora_scale", "DoRA"), ("lora_magnitude_vector", "DoRA"), ("hada_w", "LyCORIS LoHa"),
                ("lokr_w", "LyCORIS LoKr"), ("lora_mid", "LyCORIS LoCon (lora_mid)"))
_adapter_ids = itertools.count()


class LoraError(LongVieError, ValueError):
    """A LoRA file cannot be applied to this model (every problem of every file, before sampling)."""


# --------------------------------------------------------------------------- what the user asks for
@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: a ``.safetensors`` file and its scale (1.0 = as trained, 0 = no effect)."""

    path: Path
    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path).expanduser())
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"LoRA {self.path}: scale must be a finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))


def parse_lora_arg(text: str) -> LoraSpec:
    """``PATH[:SCALE]`` -> :class:`LoraSpec` (``--lora style.safetensors:0.8``).

    The scale is what follows the last ``:`` when that is a number; a path that exists as given is
    taken whole, and a one-letter part before the colon is a Windows drive (``C:\\loras\\a.safetensors``).
    """
    text = str(text).strip()
    if not text:
        raise ValueError("--lora needs PATH[:SCALE], got an empty value")
    head, sep, tail = text.rpartition(":")
    if sep and head and not Path(text).expanduser().is_file() and not (len(head) == 1 and head.isalpha()):
        try:
            scale = float(tail)
        except ValueError:
            scale = None
        if scale is not None:
            if not math.isfinite(scale):
                raise ValueError(f"--lora {text}: the scale {tail!r} must be a finite number")
            return LoraSpec(Path(head), scale)
    return LoraSpec(Path(text), 1.0)


def _as_specs(specs) -> list[LoraSpec]:
    if isinstance(specs, (str, Path, LoraSpec)):
        specs = [specs]
    out = []
    for spec in specs or []:
        if isinstance(spec, LoraSpec):
            out.append(spec)
        elif isinstance(spec, (str, Path)):
            out.append(parse_lora_arg(str(spec)) if isinstance(spec, str) else LoraSpec(spec))
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            out.append(LoraSpec(*spec))
        elif isinstance(spec, dict) and "path" in spec:
            out.append(LoraSpec(spec["path"], spec.get("scale", 1.0)))
        else:
            raise ValueError(f"a LoRA is a path, 'PATH:SCALE', (path, scale), {{'path', 'scale'}} or LoraSpec; "
                             f"got {spec!r}")
    return out


# --------------------------------------------------------------------------- reading a file
@dataclass
class _LoraFile:
    """What one file means for the model: PEFT state dicts per part, full differences, problems."""

    spec: LoraSpec
    keys: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    format: str = "unknown"
    dit: dict = field(default_factory=dict)            # PEFT names in the DiT (blocks.0.attn1.to_q.lora_A.weight)
    control: dict = field(default_factory=dict)        # PEFT names in the control branch
    dit_diffs: dict = field(default_factory=dict)      # DiT parameter name -> full difference
    control_diffs: dict = field(default_factory=dict)
    peft_metadata: dict | None = None                  # diffusers' lora_adapter_metadata (LoraConfig) if any
    problems: list[str] = field(default_factory=list)
    t2v_evidence: str | None = None

    @property
    def targets(self) -> list[str]:
        return [name for name, parts in (("dit", (self.dit, self.dit_diffs)),
                                         ("control", (self.control, self.control_diffs))) if any(parts)]


def _short(keys, count: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (f" (+{len(keys) - count} more)" if len(keys) > count else "")


def _read_tensors(path: Path, header_only: bool) -> tuple[dict, dict]:
    """({key: tensor}, metadata). Header only: meta tensors of the right shapes, real ``alpha`` scalars."""
    header = safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not header_only:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu"), metadata
    from safetensors import safe_open

    tensors = {key: torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES.get(entry["dtype"], torch.float32),
                                device="meta") for key, entry in header.items()}
    alphas = [key for key in header if key.endswith("alpha")]
    if alphas:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors.update({key: handle.get_tensor(key) for key in alphas})
    return tensors, metadata


def _normalise_key(key: str) -> str:
    """Framework prefixes off, PEFT's adapter name (``.default``) out, ``model.diffusion_model.`` shortened."""
    if key.startswith("model.diffusion_model."):
        key = key[len("model."):]
    for prefix in _STRIP_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def _model_part(key: str) -> tuple[str, str]:
    """('control' | 'dit', key without a 'diffusion_model.'/'transformer.' prefix for control keys)."""
    bare = key
    for prefix in ("diffusion_model.", "transformer."):
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
    return ("control", bare) if bare.startswith("control_") else ("dit", key)


def _diff_parameter(key: str, part: str) -> str:
    """``blocks.0.self_attn.q.diff_b`` -> the parameter it changes, in our module's names."""
    for prefix in ("diffusion_model.", "transformer."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    for suffix, replacement in _DIFF_SUFFIXES.items():
        if key.endswith(suffix):
            name = key[: -len(suffix)] + replacement
            break
    mapped = (original_to_diffusers_control_key if part == "control" else original_to_diffusers_dit_key)(name)
    return mapped or name


def _convert_dit(group: dict, lora_file: _LoraFile) -> dict:
    """The DiT's LoRA keys -> PEFT names, through diffusers' Wan LoRA conversion where the layout needs it."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    keys = list(group)
    if all(k.startswith("transformer.") for k in keys):
        lora_file.format = "diffusers"
        return {k[len("transformer."):]: v for k, v in group.items()}
    if any(k.startswith(("diffusion_model.", "lora_unet_")) for k in keys):
        prefix = "diffusion_model." if keys[0].startswith("diffusion_model.") else "lora_unet_"
        lora_file.format = ("ComfyUI/LightX2V (diffusion_model.*)" if prefix == "diffusion_model."
                            else "kohya/musubi-tuner (lora_unet_*)")
        mixed = [k for k in keys if not k.startswith(prefix)]
        if mixed:
            lora_file.problems.append(f"{lora_file.spec.path}: mixes key layouts ({len(mixed)} key(s) without the "
                                      f"'{prefix}' prefix the others have, e.g. {_short(mixed)})")
            return {}
        source = group
    elif any(_ORIGINAL_WAN_KEY.match(k) for k in keys):
        lora_file.format = "DiffSynth-Studio (original Wan names)"
        source = {f"diffusion_model.{k}": v for k, v in group.items()}
    else:
        lora_file.format = "diffusers/PEFT"
        return dict(group)
    try:
        converted = WanLoraLoaderMixin.lora_state_dict(dict(source))
    except Exception as err:  # noqa: BLE001 - diffusers' converters raise KeyError/ValueError/IndexError alike
        message = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        lora_file.problems.append(f"{lora_file.spec.path}: diffusers' Wan LoRA conversion cannot read its "
                                  f"{lora_file.format} keys ({type(err).__name__}: {message}); first keys: "
                                  f"{_short(keys)}")
        return {}
    unplaced = [k for k in converted if not k.startswith("transformer.")]
    if unplaced:
        lora_file.problems.append(f"{lora_file.spec.path}: {len(unplaced)} key(s) for other models than the DiT, "
                                  f"e.g. {_short(unplaced)}")
    return {k[len("transformer."):]: v for k, v in converted.items() if k.startswith("transformer.")}


def _convert_control(group: dict, lora_file: _LoraFile) -> dict:
    """Control-branch LoRA keys (released names or ours) -> PEFT names, alpha folded into A as diffusers does."""
    modules: dict[str, dict] = {}
    for key, tensor in group.items():
        for suffix, role in _LORA_SUFFIXES:
            if key.endswith("." + suffix):
                module = key[: -len(suffix) - 1]
                mapped = original_to_diffusers_control_key(module + ".weight")
                module = mapped[: -len(".weight")] if mapped else module
                modules.setdefault(module, {})[role] = tensor
                break
        else:
            modules.setdefault(key, {})["unknown"] = tensor
    out = {}
    for module, parts in modules.items():
        if "unknown" in parts:
            out[module] = parts["unknown"]  # reported as matching nothing
            continue
        if "A" not in parts or "B" not in parts:
            lora_file.problems.append(f"{lora_file.spec.path}: control-branch module {module} has "
                                      f"{' and '.join(sorted(parts))} but needs both halves (lora_A/lora_down and "
                                      "lora_B/lora_up)")
            continue
        down = parts["A"]
        if "alpha" in parts and down.ndim == 2:
            down = down * (float(parts["alpha"].item()) / down.shape[0])  # scale alpha / rank, as PEFT's lora_alpha
        out[f"{module}.lora_A.weight"] = down
        out[f"{module}.lora_B.weight"] = parts["B"]
        if "bias" in parts:
            out[f"{module}.lora_B.bias"] = parts["bias"]
    return out


def _peft_metadata(metadata: dict) -> dict | None:
    """diffusers' ``lora_adapter_metadata`` (the LoraConfig it saved: r, lora_alpha, patterns) for the DiT."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    if any(k.startswith("transformer.") for k in config):
        config = {k[len("transformer."):]: v for k, v in config.items() if k.startswith("transformer.")}
    return config or None


def _t2v_from_metadata(metadata: dict) -> str | None:
    for key, value in metadata.items():
        if any(word in key.lower() for word in ("base_model", "architecture", "model_version", "model_name")):
            text = str(value).lower()
            if "t2v" in text:
                return f"its metadata says {key}={value!r}"
    return None


def _read(spec: LoraSpec, header_only: bool) -> _LoraFile:
    lora_file = _LoraFile(spec)
    path = spec.path
    if not path.is_file():
        lora_file.problems.append(f"{path}: LoRA file not found" + (" (it is a folder: name the .safetensors file "
                                                                     "inside it)" if path.is_dir() else ""))
        return lora_file
    if path.suffix != ".safetensors":
        lora_file.problems.append(f"{path}: only .safetensors LoRA files are read (pickled .pt/.ckpt/.bin files can "
                                  "run code when loaded); convert it with safetensors.torch.save_file")
        return lora_file
    try:
        tensors, metadata = _read_tensors(path, header_only)
    except (WeightsError, OSError, RuntimeError, ValueError) as err:
        lora_file.problems.append(f"{path}: cannot read it as safetensors ({err})" if str(path) not in str(err)
                                  else str(err))
        return lora_file
    lora_file.keys, lora_file.metadata = list(tensors), metadata
    if not tensors:
        lora_file.problems.append(f"{path}: holds no tensors")
        return lora_file
    for marker, kind in _UNSUPPORTED:
        found = [k for k in tensors if marker in k]
        if found:
            lora_file.problems.append(f"{path}: a {kind} file ({_short(found)}); only plain LoRAs (A/B or down/up "
                                      "pairs, alpha, full differences) are supported")
            return lora_file

    groups = {"dit": {}, "control": {}, "dit_diffs": {}, "control_diffs": {}}
    for key, tensor in tensors.items():
        key = _normalise_key(key)
        part, key = _model_part(key)
        if key.endswith(tuple(_DIFF_SUFFIXES)):
            groups[f"{part}_diffs"][_diff_parameter(key, part)] = tensor
        else:
            groups[part][key] = tensor
    lora_file.dit_diffs, lora_file.control_diffs = groups["dit_diffs"], groups["control_diffs"]
    if groups["dit"]:
        lora_file.dit = _convert_dit(groups["dit"], lora_file)
        if lora_file.format == "diffusers" or lora_file.format == "diffusers/PEFT":
            lora_file.peft_metadata = _peft_metadata(metadata)
    elif lora_file.dit_diffs:
        lora_file.format = "full differences (diff / diff_b / diff_m)"
    if groups["control"]:
        lora_file.control = _convert_control(groups["control"], lora_file)
        if not groups["dit"] and not lora_file.dit_diffs:
            lora_file.format = "LongVie control branch"
    lora_file.t2v_evidence = _t2v_from_metadata(metadata)
    return lora_file


# --------------------------------------------------------------------------- the model's side
@dataclass
class _Shapes:
    """Where a LoRA can go: Linear layers (out, in) and parameters, per part."""

    dit_linear: dict
    control_linear: dict
    dit_params: dict
    control_params: dict
    dit_width: int


def _shapes_of(transformer: nn.Module, control: nn.Module | None) -> _Shapes:
    def collect(module):
        if module is None:
            return {}, {}
        linear = {name: (m.out_features, m.in_features) for name, m in module.named_modules()
                  if isinstance(m, nn.Linear)}
        params = {name: tuple(p.shape) for name, p in module.named_parameters()}
        return linear, params

    dit_linear, dit_params = collect(transformer)
    control_linear, control_params = collect(control)
    config = transformer.config
    return _Shapes(dit_linear, control_linear, dit_params, control_params,
                   config.num_attention_heads * config.attention_head_dim)


@functools.lru_cache(maxsize=4)
def _config_shapes(key: str) -> _Shapes:
    from diffusers import WanTransformer3DModel

    from ..models.control_branch import LongVieControlBranch

    transformer_config, control_layers = json.loads(key)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in transformer_config.items()}
    with torch.device("meta"):
        transformer = WanTransformer3DModel(**config)
        control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, control_layers)) \
            if control_layers else None
    return _shapes_of(transformer, control)


def _model_shapes(model_config) -> _Shapes:
    """Shapes from a live denoiser, a ``{"transformer": config, "control_layers": n}`` dict (a preset's
    ``model`` section), a bare WanTransformer3DModel config, or None (the release: Wan2.1-I2V-14B, 12 blocks)."""
    if hasattr(model_config, "transformer") and isinstance(model_config, nn.Module):
        return _shapes_of(model_config.transformer, getattr(model_config, "control", None))
    if model_config is None:
        transformer, layers = RELEASE_TRANSFORMER_CONFIG, RELEASE_CONTROL_LAYERS
    elif "transformer" in model_config:
        transformer, layers = model_config["transformer"], model_config.get("control_layers", RELEASE_CONTROL_LAYERS)
    else:
        transformer, layers = model_config, RELEASE_CONTROL_LAYERS
    transformer = {k: v for k, v in dict(transformer).items() if not str(k).startswith("_")}
    return _config_shapes(json.dumps([transformer, layers], sort_keys=True, default=list))


def lora_model_config(base_dir=None, control_path=None) -> dict | None:
    """The model LoRAs are checked against, from config/header files only: ``{"transformer": config,
    "control_layers": n}`` of a Wan2.1-I2V folder (either layout) and a control.safetensors; None (the
    release) where they cannot be read — the weights checks report that."""
    from .checkpoint_keys import control_depth_from_keys, convert_control_state_dict
    from .files import safetensors_shapes

    transformer = None
    if base_dir is not None:
        base_dir = Path(base_dir)
        try:
            if (base_dir / "transformer" / "config.json").is_file():
                transformer = json.loads((base_dir / "transformer" / "config.json").read_text(encoding="utf-8"))
            elif (base_dir / "diffusion_pytorch_model.safetensors.index.json").is_file():
                from .files import check_sharded_checkpoint
                from .original_layout import dit_config_from_shapes

                shards = set(check_sharded_checkpoint(base_dir / "diffusion_pytorch_model.safetensors.index.json")
                             .values())
                shapes = {}
                for shard in shards:
                    shapes.update(safetensors_shapes(shard))
                wan_config = base_dir / "config.json"
                transformer = dit_config_from_shapes(
                    shapes, json.loads(wan_config.read_text(encoding="utf-8")) if wan_config.is_file() else None,
                    str(base_dir))
        except (OSError, ValueError, LongVieError):
            transformer = None
    layers = RELEASE_CONTROL_LAYERS
    if control_path is not None:
        try:
            names = convert_control_state_dict({k: k for k in safetensors_shapes(control_path)},
                                               source=str(control_path))
            layers = control_depth_from_keys(names)
        except (OSError, ValueError, LongVieError, KeyError):
            pass
    if transformer is None:
        return None if layers == RELEASE_CONTROL_LAYERS else {"transformer": RELEASE_TRANSFORMER_CONFIG,
                                                               "control_layers": layers}
    return {"transformer": transformer, "control_layers": layers}


def _module_of(key: str) -> tuple[str, str | None]:
    for suffix, role in _LORA_SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], role
    return key, None


def _check(lora_file: _LoraFile, shapes: _Shapes) -> list[str]:
    """Keys that match nothing, wrong shapes, another model: one line per kind of problem."""
    path = lora_file.spec.path
    unknown, wrong, widths = [], [], set()
    for part_name, state, linear in (("dit", lora_file.dit, shapes.dit_linear),
                                     ("control", lora_file.control, shapes.control_linear)):
        label = "" if part_name == "dit" else "control branch: "
        ranks: dict[str, dict] = {}
        for key, tensor in state.items():
            module, role = _module_of(key)
            if role is None or role == "alpha" or module not in linear:
                unknown.append(label + key)
                continue
            out_features, in_features = linear[module]
            shape = tuple(tensor.shape)
            expected = {"A": (None, in_features), "B": (out_features, None), "bias": (out_features,)}[role]
            if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
                wrong.append((label + key, shape, module, (out_features, in_features)))
                if role == "A" and len(shape) == 2:
                    widths.add(shape[1])
                continue
            if role in ("A", "B"):
                ranks.setdefault(module, {})[role] = shape[0] if role == "A" else shape[1]
        for module, pair in ranks.items():
            if len(pair) == 1:
                unknown.append(f"{label}{module} (lora_{'B' if 'A' in pair else 'A'} is missing)")
            elif pair["A"] != pair["B"]:
                wrong.append((f"{label}{module}.lora_A/lora_B", (pair["A"], pair["B"]), module, "equal ranks"))
    for part_name, diffs, params in (("dit", lora_file.dit_diffs, shapes.dit_params),
                                     ("control", lora_file.control_diffs, shapes.control_params)):
        label = "" if part_name == "dit" else "control branch: "
        for name, tensor in diffs.items():
            if name not in params:
                unknown.append(f"{label}{name} (a full difference)")
            elif tensor.numel() != math.prod(params[name]):
                wrong.append((f"{label}{name} (difference)", tuple(tensor.shape), name, params[name]))

    problems = []
    other = sorted(w for w in widths if w != shapes.dit_width)
    if other:
        made_for = ", ".join(f"{WAN_WIDTHS.get(w, 'another model')} (width {w})" for w in other)
        problems.append(f"{path}: made for {made_for}, not this model ({WAN_WIDTHS.get(shapes.dit_width, 'DiT')}, "
                        f"width {shapes.dit_width}): its LoRA layers do not fit, e.g. {wrong[0][0]} is {wrong[0][1]}")
    elif wrong:
        key, shape, module, expected = wrong[0]
        problems.append(f"{path}: {len(wrong)} tensor(s) have the wrong shape, e.g. {key} is {shape} but {module} "
                        f"needs {expected} (out, in)")
    if unknown:
        problems.append(f"{path}: {len(unknown)} key(s) match nothing in the DiT or the control branch, e.g. "
                        f"{_short(unknown)} (in diffusers/our names, read as {lora_file.format})")
    t2v = lora_file.t2v_evidence or _t2v_from_structure(lora_file)
    if t2v and not other:
        problems.append(f"{path}: made for Wan2.1 T2V, not I2V ({t2v}); LongVie 2 runs on Wan2.1-I2V-14B-480P — "
                        "use the LoRA's I2V version")
    if not problems and not lora_file.targets:
        problems.append(f"{path}: holds no LoRA or difference tensors for this model")
    return problems


def _t2v_from_structure(lora_file: _LoraFile) -> str | None:
    """A whole-model LoRA (full differences or embedder/head layers beside the blocks) that covers the
    cross-attention's text keys/values but has no image keys/values (k_img/v_img) nor image embedder was
    made on Wan2.1 T2V, which has no image branch. A LoRA of the attention/FFN layers alone may just have
    been trained without k_img/v_img (DiffSynth-Studio's default targets): accepted."""
    keys = list(lora_file.dit) + list(lora_file.dit_diffs)
    if not any(".attn2.to_k." in k or k.endswith(".attn2.to_k.weight") for k in keys):
        return None
    if any("add_k_proj" in k or "add_v_proj" in k or "image_embedder" in k for k in keys):
        return None
    whole_model = lora_file.dit_diffs or any(k.startswith(("condition_embedder.", "proj_out.")) for k in keys)
    if whole_model:
        return ("a whole-model LoRA with cross-attention k/v but no image-branch k_img/v_img or img_emb keys, "
                "which Wan2.1 T2V does not have")
    return None


def check_lora_files(specs, model_config=None) -> list[str]:
    """Problems of LoRA files against a model, from their safetensors headers only (before loading).

    Args:
        specs: :class:`LoraSpec`s (or ``PATH[:SCALE]`` strings).
        model_config: the model the LoRAs are for: a preset's ``model`` section
            (``{"transformer": WanTransformer3DModel config, "control_layers": n}``), a bare transformer
            config, a loaded :class:`LongVieDenoiser`, or None for the release (Wan2.1-I2V-14B-480P, 12
            control blocks).
    Returns:
        One line per problem, each naming the file (empty when all fit).
    """
    try:
        specs = _as_specs(specs)
    except ValueError as err:
        return [str(err)]
    if not specs:
        return []
    shapes = _model_shapes(model_config)
    problems = []
    for spec in specs:
        lora_file = _read(spec, header_only=True)
        problems += lora_file.problems or _check(lora_file, shapes)
    return problems


# --------------------------------------------------------------------------- applying
def file_sha256(path) -> str:
    """sha256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_unmergeable(denoiser) -> None:
    """LoRAs go into plain weights, before FP8 storage / quantisation and before group offloading."""
    for name, param in denoiser.named_parameters():
        if param.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or type(param.data) not in (torch.Tensor,):
            raise LoraError(f"the denoiser's weights are already quantised ({name}: {param.dtype}, "
                            f"{type(param.data).__name__}): apply LoRAs before FP8 (fuse, then quantise)")
    streamed = getattr(denoiser, "block_streamer", None) is not None  # acceleration.offload's group offload
    for module in denoiser.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if streamed or (registry is not None and registry.get_hook("group_offloading") is not None):
            raise LoraError("the denoiser is already group-offloaded: apply LoRAs before enabling offload "
                            "(LongViePipeline.from_pretrained(..., loras=...) does)")


def _parameter(module: nn.Module, name: str) -> nn.Parameter:
    """``module``'s parameter ``name``, looking through PEFT's wrapper (``.base_layer``) of an unfused LoRA."""
    path, _, attr = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if hasattr(owner, "get_base_layer"):
        owner = owner.get_base_layer()
    return getattr(owner, attr)


@torch.no_grad()
def _add_differences(module: nn.Module, diffs: dict, scale: float) -> None:
    for name, diff in diffs.items():
        param = _parameter(module, name)
        update = param.data.float() + scale * diff.to(param.device, torch.float32).reshape(param.shape)
        param.data.copy_(update.to(param.dtype))


def _apply(denoiser, lora_files: list[_LoraFile], scales: list[float], fuse: bool,
           saved: dict | None = None) -> list[str]:
    """PEFT adapters for every file at its scale (fused and unloaded when ``fuse``), then the differences
    (their parameters' values before are kept in ``saved`` for an exact unfuse; None: no differences)."""
    names = [f"longvie_lora_{next(_adapter_ids)}" for _ in lora_files]
    for part_name, module in (("dit", denoiser.transformer), ("control", denoiser.control)):
        active, weights = [], []
        for name, lora_file, scale in zip(names, lora_files, scales):
            state = lora_file.dit if part_name == "dit" else lora_file.control
            if not state:
                continue
            ordered = dict(sorted(state.items(), key=lambda item: ".lora_A." not in item[0]))  # lora_A key first
            metadata = lora_file.peft_metadata if part_name == "dit" else None
            with warnings.catch_warnings():  # PEFT notes that a second adapter joins the first: intended
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                module.load_lora_adapter(ordered, adapter_name=name, prefix=None, metadata=metadata)
            active.append(name)
            weights.append(scale)
        if not active:
            continue
        module.set_adapters(active, weights)
        if fuse:
            module.fuse_lora(adapter_names=active)
            module.unload_lora()  # PEFT wrappers out: plain Linear layers holding W + scale * BA
    if saved is not None:
        for lora_file, scale in zip(lora_files, scales):
            for part, module, diffs in (("dit", denoiser.transformer, lora_file.dit_diffs),
                                        ("control", denoiser.control, lora_file.control_diffs)):
                for name in diffs:
                    saved.setdefault((part, name), _parameter(module, name).detach().to("cpu", copy=True))
                _add_differences(module, diffs, scale)
    return names


def loaded_loras(denoiser) -> list[dict]:
    """Records of the LoRAs applied to ``denoiser`` (path, sha256, scale, matched_keys, targets, fused)."""
    return [{k: v for k, v in record.items() if not k.startswith("_")}
            for record in getattr(denoiser, "_longvie_loras", [])]


def load_loras(denoiser, specs, fuse: bool = True) -> list[dict]:
    """Apply LoRAs to a :class:`LongVieDenoiser` (DiT, and control branch where the files have keys for it).

    Every file is read and checked first; any problem raises one :class:`LoraError` listing all of them
    and nothing is changed. ``fuse=True`` (for sampling) merges W <- W + scale * BA into the weights and
    removes the PEFT layers: no per-step cost, and FP8 / offload / compile applied afterwards see plain
    layers. ``fuse=False`` keeps PEFT LoRA layers (scale changes and removal are exact; each step pays
    the low-rank products).

    Returns:
        One record per LoRA: path, sha256, scale, matched_keys, targets ("dit", "control"), format, fused.
    """
    specs = _as_specs(specs)
    if not specs:
        return []
    previous = getattr(denoiser, "_longvie_loras", [])
    if any(not record["fused"] for record in previous):
        raise LoraError("LoRAs are loaded unfused on this denoiser: unfuse_loras() first, then load them all at once")
    _refuse_unmergeable(denoiser)
    lora_files = [_read(spec, header_only=False) for spec in specs]
    shapes = _shapes_of(denoiser.transformer, denoiser.control)
    problems = [p for lora_file in lora_files for p in (lora_file.problems or _check(lora_file, shapes))]
    if problems:
        raise LoraError("cannot apply the LoRA(s):\n" + "\n".join(f"  - {p}" for p in problems))
    saved = getattr(denoiser, "_longvie_lora_saved", {})
    names = _apply(denoiser, lora_files, [spec.scale for spec in specs], fuse, saved)
    denoiser._longvie_lora_saved = saved
    records = []
    for lora_file, name in zip(lora_files, names):
        spec = lora_file.spec
        records.append({"path": str(spec.path.resolve()), "sha256": file_sha256(spec.path), "scale": spec.scale,
                        "matched_keys": len(lora_file.keys), "targets": lora_file.targets,
                        "format": lora_file.format, "fused": fuse, "_adapter": name})
    denoiser._longvie_loras = previous + records
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def unfuse_loras(denoiser) -> list[dict]:
    """Remove every LoRA :func:`load_loras` applied; returns their records.

    Fused LoRAs are taken out by applying the same file again with -scale (W + sBA - sBA: the base
    weights up to float rounding); the file must be unchanged (sha256). Unfused ones: their PEFT layers
    are deleted (exact). Parameters changed by full differences get their saved values back (exact).
    """
    records = getattr(denoiser, "_longvie_loras", [])
    if not records:
        return []
    _refuse_unmergeable(denoiser)
    fused = [r for r in records if r["fused"]]
    unfused = [r for r in records if not r["fused"]]
    if fused:
        lora_files = []
        for record in fused:
            path = Path(record["path"])
            if not path.is_file() or file_sha256(path) != record["sha256"]:
                raise LoraError(f"{path}: changed or removed since it was fused (sha256 {record['sha256'][:12]}); "
                                "the fused weights cannot be restored from it — reload the model instead")
            lora_files.append(_read(LoraSpec(path, record["scale"]), header_only=False))
        _apply(denoiser, lora_files, [-r["scale"] for r in fused], fuse=True, saved=None)
    if unfused:
        for module in (denoiser.transformer, denoiser.control):
            if getattr(module, "_hf_peft_config_loaded", False):
                module.unload_lora()
    with torch.no_grad():  # the parameters full differences changed: their values from before, exactly
        for (part, name), value in getattr(denoiser, "_longvie_lora_saved", {}).items():
            param = _parameter(denoiser.transformer if part == "dit" else denoiser.control, name)
            param.data.copy_(value.to(param.device))
    denoiser._longvie_lora_saved = {}
    denoiser._longvie_loras = []
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
