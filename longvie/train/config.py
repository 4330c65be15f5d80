"""Training configuration: a stage YAML (configs/train_stage{1,2,3}.yaml), a preset, overrides.

The configuration is a plain nested dict with the sections ``model``, ``data``, ``train``,
``degradation`` and ``loss`` (see configs/train_stage1.yaml for every key and its meaning).
Overrides use dotted keys, e.g. ``{"train.learning_rate": 1e-3}`` (``--set train.learning_rate=1e-3``).
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

from ..presets.config import CONFIG_DIR, merge

SECTIONS = ("model", "data", "train", "degradation", "loss")
TRAINABLE_GROUPS = ("control", "dit_self_attention")


def stage_config_path(stage: int) -> Path:
    return CONFIG_DIR / f"train_stage{stage}.yaml"


def set_dotted(config: dict, key: str, value) -> None:
    """``set_dotted(cfg, "train.learning_rate", 1e-3)``; the key must exist (the stage configs list
    every key), so a typo fails loudly instead of being ignored."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ValueError(f"unknown config section '{part}' in '{key}' (sections: {', '.join(SECTIONS)})")
        node = node[part]
    if parts[-1] not in node:
        raise ValueError(f"unknown config key '{key}'; known keys of '{'.'.join(parts[:-1]) or 'top'}': "
                       f"{', '.join(sorted(node))}")
    node[parts[-1]] = value


def parse_assignment(text: str) -> tuple[str, object]:
    """'train.learning_rate=1e-3' -> ('train.learning_rate', 0.001) (the value is parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def load_train_config(config_path=None, stage: int | None = None, preset: str | None = None,
                      overrides: dict | None = None) -> dict:
    """Load a stage config, apply a preset (``"tiny"``) and dotted overrides; validate.

    Either ``config_path`` or ``stage`` (or both, if they agree) must be given.
    """
    if config_path is None and stage is None:
        raise ValueError("give a stage config (--config configs/train_stage1.yaml) or a stage number (--stage 1)")
    path = Path(config_path) if config_path else stage_config_path(stage)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if stage is not None and config.get("stage") != stage:
        raise ValueError(f"{path} is a stage-{config.get('stage')} config, but --stage {stage} was given")
    config = copy.deepcopy(config)
    if preset:
        from .presets import preset_overrides

        config = merge(config, preset_overrides(preset, config["stage"]))
        config["preset"] = preset
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(config, key, value)
    validate(config)
    return config


def validate(config: dict) -> None:
    """Reject configurations that cannot train, with the fix in the message."""
    for section in SECTIONS:
        if not isinstance(config.get(section), dict):
            raise ValueError(f"training config lacks the '{section}' section")
    if config.get("stage") not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {config.get('stage')!r}")
    train = config["train"]
    unknown = set(train["trainable"]) - set(TRAINABLE_GROUPS)
    if unknown:
        raise ValueError(f"train.trainable: unknown group(s) {sorted(unknown)}; choose from {TRAINABLE_GROUPS}")
    for key in ("max_steps", "gradient_accumulation_steps", "save_every"):
        if int(train[key]) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {train[key]}")
    if train["mixed_precision"] not in ("no", "bf16", "fp16"):
        raise ValueError(f"train.mixed_precision must be no, bf16 or fp16, got {train['mixed_precision']!r}")
    if config["model"]["weight_dtype"] not in ("float32", "fp32") and train["mixed_precision"] == "no":
        raise ValueError("model.weight_dtype is not float32, so train.mixed_precision must be bf16 "
                         "(frozen bf16 weights meet float32 trainable weights under autocast)")


# Flag -> dotted config key (a flag left out keeps the config's value).
FLAG_KEYS = {
    "output": "train.output_dir",
    "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate",
    "seed": "train.seed",
    "save_every": "train.save_every",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "init_from": "model.init_from",
    "base_model": "model.base_model_dir",
    "metadata": "data.metadata",
    "num_workers": "data.num_workers",
    "cache_dir": "data.cache_dir",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that select and override a training config (shared with ``longvie.train.cache``)."""
    parser.add_argument("--config", default=None, help="stage config, e.g. configs/train_stage1.yaml")
    parser.add_argument("--stage", type=int, choices=(1, 2, 3), default=None,
                        help="stage number (selects configs/train_stageN.yaml when --config is not given)")
    parser.add_argument("--preset", choices=("tiny",), default=None,
                        help="tiny: tiny random model + synthetic data, runs on a CPU")
    parser.add_argument("--output", default=None, help="output folder (train.output_dir)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (train.max_steps)")
    parser.add_argument("--learning-rate", "--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=None)
    parser.add_argument("--init-from", default=None,
                        help="previous stage's output folder or checkpoint (stages 2-3), or 'half_copy'")
    parser.add_argument("--base-model", default=None, help="Wan2.1-I2V-14B-480P folder (either layout)")
    parser.add_argument("--metadata", default=None, help="training metadata JSON/CSV")
    parser.add_argument("--num-workers", type=int, default=None, help="data-loader workers per process")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (see python -m longvie.train.cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set degradation.first_frame_p=0.3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> dict:
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    overrides.update(parse_assignment(text) for text in args.set)
    return load_train_config(args.config, args.stage, args.preset, overrides)
