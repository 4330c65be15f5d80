"""LoRAs and the fast (step-distilled) mode for the long-video command line.

* ``--lora PATH[:SCALE]`` (repeatable) and a config's ``loras:`` list (entries ``PATH[:SCALE]`` or
  ``{path, scale}``, relative to the working directory, else to the repository) name LoRAs fused into the
  denoiser (:mod:`longvie.weights.lora`). They are checked from the files' headers before anything
  loads, and recorded in the run: settings ``loras`` = [{sha256, scale}] (a resume with another set is
  refused), config ``loras`` = [{path, sha256, scale}].
* ``--fast``: the sampling section and the LoRA of ``configs/longvie2_i2v_14b_fast.yaml`` laid over the
  chosen config: 4 steps at timesteps 1000, 750, 500, 250 (shift 5), guidance off (one denoiser call per
  step), with LightX2V's step- and CFG-distilled LoRA for Wan2.1-I2V-14B-480P. On the tiny preset the
  schedule alone is used (that LoRA is for the 14B model).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..presets.config import load_config, merge
from ..weights.lora import LoraSpec, check_lora_files, lora_model_config, parse_lora_arg

logger = logging.getLogger(__name__)

FAST_CONFIG = "longvie2_i2v_14b_fast"
FAST_SAMPLING_KEYS = ("steps", "cfg", "shift", "timesteps")
REPO_ROOT = Path(__file__).resolve().parents[2]


def apply_fast(config: dict, tiny: bool) -> str:
    """Lay the fast config's sampling schedule (and, except on the tiny preset, its LoRAs) over ``config``
    in place; returns a one-line note for the log."""
    fast = load_config(FAST_CONFIG)
    sampling = fast.get("sampling") or {}
    config["sampling"] = merge(config.get("sampling") or {}, {k: sampling[k] for k in FAST_SAMPLING_KEYS
                                                             if k in sampling})
    if tiny:
        return ("--fast on the tiny preset: the 4-step schedule without guidance; the distill LoRA is for "
                "Wan2.1-I2V-14B and is not applied")
    config["loras"] = list(fast.get("loras") or []) + [e for e in config.get("loras") or []
                                                       if e not in (fast.get("loras") or [])]
    return (f"--fast: {len(sampling.get('timesteps') or [])} steps at timesteps {sampling.get('timesteps')}, "
            f"cfg {sampling.get('cfg')}, LoRA(s) {', '.join(str(_entry_path(e)) for e in fast.get('loras') or [])}")


def _entry_path(entry) -> str:
    return entry.get("path") if isinstance(entry, dict) else str(entry)


def _resolve(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def lora_specs(config: dict) -> tuple[list[LoraSpec], list[str]]:
    """The config's ``loras`` as :class:`LoraSpec` s (paths resolved), and problems with the entries."""
    specs, problems = [], []
    for entry in config.get("loras") or []:
        try:
            if isinstance(entry, dict):
                if "path" not in entry:
                    raise ValueError(f"loras entry {entry!r} has no 'path'")
                spec = LoraSpec(Path(str(entry["path"])), entry.get("scale", 1.0))
            else:
                spec = parse_lora_arg(str(entry))
        except (TypeError, ValueError) as err:
            problems.append(f"LoRA {entry!r}: {err}")
            continue
        specs.append(LoraSpec(_resolve(spec.path), spec.scale))
    return specs, problems


def add_cli_loras(config: dict, values: list[str] | None) -> None:
    """``--lora`` values appended to the config's ``loras``."""
    if values:
        config["loras"] = list(config.get("loras") or []) + list(values)


def check_loras(config: dict, specs: list[LoraSpec], base_dir=None, longvie_dir=None, tiny: bool = False,
                model_known: bool = True) -> list[str]:
    """Header-only problems of the LoRAs against the run's model (before any model loads); with
    ``model_known`` False (the weights folders have problems of their own) only missing files."""
    if not specs:
        return []
    missing = [s for s in specs if not s.path.is_file()]
    if missing:
        hint = ""
        fast_names = {Path(_entry_path(e)).name for e in load_config(FAST_CONFIG).get("loras") or []}
        if any(s.path.name in fast_names for s in missing):
            hint = " — fetch the fast mode's LoRA with `python download_wan2.1.py --fast-lora`"
        return [f"LoRA {s.path}: file not found{hint}" for s in missing]
    if not model_known:
        return []
    if tiny:
        model = (config.get("model") or load_config("tiny")["model"])
    else:
        from ..weights.files import CONTROL_FILENAME

        control = Path(longvie_dir) / CONTROL_FILENAME if longvie_dir else None
        model = lora_model_config(base_dir, control if control and control.is_file() else None)
    return [f"--lora: {p}" for p in check_lora_files(specs, model)]


def lora_records(specs: list[LoraSpec]) -> tuple[list[dict], list[dict]]:
    """(settings entries [{sha256, scale}] compared on resume, manifest records [{path, sha256, scale}])."""
    from ..weights.lora import file_sha256

    records = [{"path": str(s.path.resolve()), "sha256": file_sha256(s.path), "scale": s.scale} for s in specs]
    settings = [{"sha256": r["sha256"], "scale": r["scale"]} for r in records]
    return settings, records
