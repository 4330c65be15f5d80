"""Training configuration: a stage YAML (configs/train_stage{1,2,3}.yaml), a preset, overrides.

The configuration is a plain nested dict with the sections ``model``, ``data``, ``train``,
``degradation`` and ``loss`` (see configs/train_stage1.yaml for every key and its meaning).
Overrides use dotted keys, e.g. ``{"train.learning_rate": 1e-3}`` (``--set train.learning_rate=1e-3``).

Keys are checked by name: a key that the stage configs do not have (``learning_rat: 1e-4``, a
misspelt ``degradation.depth_pp``) is refused with the file, its line and the closest known key,
before anything loads. A ``--config`` file may leave keys out: they keep the value of the shipped
configs/train_stageN.yaml of its stage.
"""
from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import yaml

from ..media.video_io import RESIZE_MODES
from ..presets.config import CONFIG_DIR, merge
from ..presets.schema import schema_of, unknown_key_message, yaml_key_problems

SECTIONS = ("model", "data", "train", "degradation", "loss")
DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # longvie.presets.config.torch_dtype
TRAINABLE_GROUPS = ("control", "dit_self_attention")


# Keys a stage config may hold beyond those of configs/train_stageN.yaml (read with defaults in the code).
OPTIONAL_KEYS = {"preset": None, "train": {"load_ranks_at_once": None}}


def stage_config_path(stage: int) -> Path:
    return CONFIG_DIR / f"train_stage{stage}.yaml"


def config_schema(stage: int = 1) -> dict:
    """Every key a training config may hold: those of configs/train_stage{stage}.yaml plus OPTIONAL_KEYS."""
    shipped = yaml.safe_load(stage_config_path(stage if stage in (1, 2, 3) else 1).read_text(encoding="utf-8"))
    schema = schema_of(shipped)
    for key, value in OPTIONAL_KEYS.items():
        if isinstance(value, dict):
            schema.setdefault(key, {}).update(value)
        else:
            schema.setdefault(key, value)
    return schema


def set_dotted(config: dict, key: str, value) -> None:
    """``set_dotted(cfg, "train.learning_rate", 1e-3)``; the key must exist (the stage configs list
    every key), so a typo fails loudly, naming the closest known key, instead of being ignored."""
    parts = key.split(".")
    node = config
    schema = schema_of(config)
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            section = ".".join(parts[:depth])
            known = {k: v for k, v in node.items() if isinstance(v, dict)}
            message = unknown_key_message(part, f"{section}." if section else "", known, schema,
                                          section_label="the top level" if not section else None)
            raise ValueError(f"--set {key}: {message.replace('unknown key', 'unknown config section', 1)}")
        node = node[part]
    if parts[-1] not in node:
        section = ".".join(parts[:-1])
        message = unknown_key_message(parts[-1], f"{section}." if section else "", node, schema)
        raise ValueError(f"--set {key}: {message}")
    node[parts[-1]] = value


def _fill_missing(config: dict, defaults: dict) -> dict:
    """``config`` with every key of ``defaults`` that it lacks (None values of ``config`` are kept)."""
    out = dict(config)
    for key, value in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _fill_missing(out[key], value)
    return out


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
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: YAML syntax error: {getattr(err, 'problem', None) or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}) — save it as UTF-8 YAML") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a training config is a mapping of sections (stage, model, data, train, ...)")
    if stage is not None and config_path and "stage" not in config:
        config["stage"] = stage  # a --config file without "stage:" takes it from --stage
    if stage is not None and config.get("stage") != stage:
        raise ValueError(f"{path} is a stage-{config.get('stage')} config, but --stage {stage} was given")
    unknown = yaml_key_problems(path, root, config_schema(config.get("stage")))
    if unknown:
        raise ValueError("unknown key(s) in the training config — fix the spelling (the stage configs in "
                         "configs/ list every key):\n  " + "\n  ".join(unknown))
    if config.get("stage") in (1, 2, 3) and path.resolve() != stage_config_path(config["stage"]).resolve():
        shipped = yaml.safe_load(stage_config_path(config["stage"]).read_text(encoding="utf-8"))
        config = _fill_missing(config, shipped)  # keys left out keep the shipped stage config's value
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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def settings_problems(config: dict) -> list[str]:
    """Every setting that cannot train (wrong type, NaN/inf, out of range), as messages with the key."""
    problems = []

    def need(ok: bool, key: str, value, rule: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: must be {rule} (--set {key}=...)")

    train, data, model = config["train"], config["data"], config["model"]
    lr = train.get("learning_rate")
    need(_is_number(lr) and 0 < lr < 1, "train.learning_rate", lr, "a finite number in (0, 1) (paper: 1e-5)")
    for key in ("max_steps", "gradient_accumulation_steps", "save_every", "log_every"):
        value = train.get(key)
        need(_is_int(value) and value >= 1, f"train.{key}", value, "an integer >= 1")
    value = train.get("warmup_steps")
    need(_is_int(value) and value >= 0, "train.warmup_steps", value, "an integer >= 0")
    value = train.get("weight_decay")
    need(_is_number(value) and value >= 0, "train.weight_decay", value, "a finite number >= 0")
    betas = train.get("adam_betas")
    need(isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
         "train.adam_betas", betas, "two numbers in [0, 1), e.g. [0.9, 0.999]")
    value = train.get("max_grad_norm")
    need(value is None or (_is_number(value) and value >= 0), "train.max_grad_norm", value,
         "null or a finite number >= 0")
    value = train.get("shift")
    need(_is_number(value) and value > 0, "train.shift", value, "a finite number > 0 (5.0)")
    value = train.get("seed")
    need(_is_int(value) and 0 <= value < 2**63, "train.seed", value, "an integer in [0, 2^63)")
    value = train.get("keep_frozen_fp32", True)
    need(isinstance(value, bool), "train.keep_frozen_fp32", value, "true or false (false under DeepSpeed ZeRO-3)")
    value = train.get("keep_checkpoints")
    need(value is None or (_is_int(value) and value >= 1), "train.keep_checkpoints", value, "null or an integer >= 1")
    for key in ("height", "width"):
        value = data.get(key)
        need(_is_int(value) and value > 0 and value % 16 == 0, f"data.{key}", value, "a positive multiple of 16")
    value = data.get("num_frames")
    need(_is_int(value) and value >= 5 and (value - 1) % 4 == 0, "data.num_frames", value, "4k+1 and >= 5 (81)")
    value = data.get("num_workers")
    need(_is_int(value) and value >= 0, "data.num_workers", value, "an integer >= 0")
    value = model.get("control_layers")
    need(_is_int(value) and value >= 1, "model.control_layers", value, "an integer >= 1 (12)")
    for key, value in (("model.weight_dtype", model.get("weight_dtype")), ("model.vae_dtype", model.get("vae_dtype")),
                       ("train.save_dtype", train.get("save_dtype"))):
        need(value in DTYPE_NAMES, key, value, f"one of {', '.join(DTYPE_NAMES)}")
    need(data.get("resize") in RESIZE_MODES, "data.resize", data.get("resize"), f"one of {', '.join(RESIZE_MODES)}")
    for key, value in (("data.skip_bad", data.get("skip_bad")), ("train.overfit", train.get("overfit")),
                       ("train.gradient_checkpointing", train.get("gradient_checkpointing")),
                       ("loss.degraded_terms", config["loss"].get("degraded_terms"))):
        need(isinstance(value, bool), key, value, "true or false")
    value = data.get("max_consecutive_bad")
    need(_is_int(value) and value >= 1, "data.max_consecutive_bad", value, "an integer >= 1")
    from .degradations import DegradationSettings

    try:  # its own range checks (probabilities, kernels, weights), as messages instead of a traceback
        DegradationSettings(**config["degradation"])
    except (ValueError, TypeError) as err:
        key = str(err).split()[0] if str(err).startswith("degradation.") else "degradation.KEY"
        problems.append(f"{err} (--set {key}=...)")
    for section in ("degradation", "loss"):
        for key, value in config[section].items():
            flat = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in flat):
                problems.append(f"{section}.{key}={value!r}: must be finite (--set {section}.{key}=...)")
    return problems


def validate(config: dict) -> None:
    """Reject configurations that cannot train, with the fix in the message (every problem at once)."""
    for section in SECTIONS:
        if not isinstance(config.get(section), dict):
            raise ValueError(f"training config lacks the '{section}' section")
    if config.get("stage") not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {config.get('stage')!r}")
    train = config["train"]
    problems = settings_problems(config)
    unknown = set(train["trainable"]) - set(TRAINABLE_GROUPS)
    if unknown:
        problems.append(f"train.trainable: unknown group(s) {sorted(unknown)}; choose from {TRAINABLE_GROUPS}")
    if train["mixed_precision"] not in ("no", "bf16", "fp16"):
        problems.append(f"train.mixed_precision must be no, bf16 or fp16, got {train['mixed_precision']!r}")
    elif config["model"]["weight_dtype"] not in ("float32", "fp32") and train["mixed_precision"] == "no":
        problems.append("model.weight_dtype is not float32, so train.mixed_precision must be bf16 "
                        "(frozen bf16 weights meet float32 trainable weights under autocast)")
    if problems:
        raise ValueError("invalid training settings:\n  " + "\n  ".join(problems))


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
