"""Checks of everything knowable before a model loads: settings, device, config file, output folder,
``--redo``, and the LongVie 2 weight files' headers against the base model's config.

Every check returns a list of problems (empty when fine) so that the command line reports them all
at once; each problem names the setting or file, what was expected and what was found. Nothing here
loads a model or reads tensor data (safetensors headers only; the control branch and the DiT are
built on the ``meta`` device to know their shapes).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from ..media.video_io import RESIZE_MODES
from ..presets.schema import model_section_schema, unknown_key_message, yaml_key_problems

__all__ = ["check_sampling_settings", "check_device", "check_config_file", "check_output_dir", "check_redo",
           "check_weight_headers", "estimate_run_bytes", "estimate_clip_memory_bytes", "SEED_LIMIT"]

SEED_LIMIT = 2**64  # torch.Generator.manual_seed accepts [0, 2^64)
MAX_STEPS = 1000
CFG_RANGE = (0.0, 50.0)
SHIFT_RANGE = (0.0, 100.0)  # exclusive lower bound
MAX_SIDE = 4096
MAX_FRAMES = 1001

# Top-level keys of a sampling config (configs/longvie2_i2v_14b.yaml, configs/tiny.yaml) and their types.
CONFIG_KEYS = {"preset": (str,), "base_model_dir": (str, type(None)), "longvie_dir": (str, type(None)),
               "dtype": (str,), "offload": (str,), "model": (dict,), "sampling": (dict,),
               "loras": (list, type(None))}  # LoRAs: PATH[:SCALE] strings or {path, scale, ...} (longvideo.loras)
SAMPLING_KEYS = {"num_frames": (int,), "height": (int,), "width": (int,), "steps": (int,), "cfg": (int, float),
                 "shift": (int, float), "seed": (int,), "history_frames": (int,), "resize": (str,),
                 "negative_prompt": (str, type(None)), "fps": (int, float), "vae_tiling": (bool,),
                 "fp8": (bool, str), "step_cache": (str, type(None)), "step_cache_threshold": (int, float, type(None)),
                 "timesteps": (list, type(None)), "step_cache_ratios": (str, type(None))}
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
OFFLOAD_MODES = ("none", "model", "group")
FP8_VALUES = ("off", "auto", "gemm", "weight-only")  # acceleration.modes.FP8_CHOICES (true = auto)

# The released DiT (Wan2.1-I2V-14B): 40 heads x 128, FFN 13824.
RELEASE_DIT = {"num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# Sampling settings
# --------------------------------------------------------------------------------------------------


def check_sampling_settings(s: dict) -> list[str]:
    """Types and ranges of the sampling settings (the shape rules are in validation.check_clip_settings)."""
    problems = []
    steps = s.get("steps")
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        problems.append(f"steps={steps!r}: must be an integer from 1 to {MAX_STEPS} (50 for the released model) "
                        "— pass --steps N")
    for name, (low, high), flag, default in (("cfg", CFG_RANGE, "--cfg", 5.0), ("shift", SHIFT_RANGE, "--shift", 5.0)):
        value = s.get(name)
        if not _is_number(value) or not math.isfinite(value):
            problems.append(f"{name}={value!r}: must be a finite number ({default} for the released model) — "
                            f"pass {flag} X")
        elif not (low <= value <= high if name == "cfg" else low < value <= high):
            interval = f"[{low}, {high}]" if name == "cfg" else f"({low}, {high}]"
            problems.append(f"{name}={value}: out of range {interval} ({default} for the released model) — "
                            f"pass {flag} X")
    seed = s.get("seed")
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        problems.append(f"seed={seed!r}: must be an integer in [0, 2^64) — pass --seed N")
    for name, limit in (("height", MAX_SIDE), ("width", MAX_SIDE), ("num_frames", MAX_FRAMES)):
        value = s.get(name)
        if _is_int(value) and value > limit:
            problems.append(f"{name}={value}: larger than {limit}, beyond what Wan2.1 was trained for "
                            "(352 x 640, 81 frames for the released model)")
    fps = s.get("fps")
    if not _is_number(fps) or not math.isfinite(fps) or not 0 < fps <= 240:
        problems.append(f"fps={fps!r}: must be a number in (0, 240] (16 for the released model) — fix sampling.fps")
    negative = s.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        problems.append(f"negative_prompt={negative!r}: must be a string or null — fix sampling.negative_prompt")
    return problems


def _dit_dims(config: dict) -> dict:
    transformer = ((config.get("model") or {}).get("transformer") or {}) if config.get("preset") == "tiny" else {}
    return {key: transformer.get(key, value) for key, value in RELEASE_DIT.items()}


def estimate_clip_memory_bytes(config: dict, s: dict) -> int:
    """A rough lower bound of the activation memory one clip needs beyond the weights.

    Counts the DiT's per-token activations of one block (hidden, q/k/v/o and FFN, bf16, with and
    without the prompt for CFG), the VAE decoder's full-resolution feature maps of one 4-frame chunk
    (96 channels, float32, a few live at once), and the decoded clip in float32.
    """
    dims = _dit_dims(config)
    dim = dims["num_attention_heads"] * dims["attention_head_dim"]
    tokens = (1 + (s["num_frames"] - 1) // 4) * (s["height"] // 16) * (s["width"] // 16)
    dit = tokens * (5 * dim + dims["ffn_dim"]) * 2 * 2
    vae = 4 * s["height"] * s["width"] * 96 * 4 * 4
    frames = s["num_frames"] * s["height"] * s["width"] * 3 * 4
    return dit + vae + frames


def estimate_run_bytes(s: dict, num_clips: int) -> int:
    """Disk space a run needs: per clip a lossless state (frames uint8 + noise float32) and an mp4, plus
    the stitched video (mp4 sizes estimated at a fifth of the raw frames, a generous bound for H.264)."""
    frames = s["num_frames"] * s["height"] * s["width"] * 3
    noise = 16 * (1 + (s["num_frames"] - 1) // 4) * (s["height"] // 8) * (s["width"] // 8) * 4
    mp4 = frames // 5
    return num_clips * (frames + noise + mp4) + num_clips * mp4 + (1 << 20)


def _gib(n: float) -> str:
    """A byte count for a message, in the unit that keeps it readable: 1.50 GiB, 52.3 MiB, 977 bytes
    (never "0.0 GiB" for the small sizes of the tiny preset or a nearly full disk)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            value = n / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(n)} bytes"


# --------------------------------------------------------------------------------------------------
# Device
# --------------------------------------------------------------------------------------------------


def check_device(device: str | None, config: dict | None = None, s: dict | None = None) -> list[str]:
    """The device exists and can hold a clip's activations (rough estimate, see estimate_clip_memory_bytes)."""
    import torch

    problems = []
    target = None
    if device is not None:
        try:
            target = torch.device(device)
        except (RuntimeError, ValueError) as err:
            return [f"--device {device!r}: not a device ({err}) — use cpu, cuda or cuda:N"]
        if target.type == "cuda":
            if not torch.cuda.is_available():
                problems.append(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                                f"CUDA build {torch.version.cuda}) — use --device cpu, or install a CUDA build "
                                "of torch and check the driver with nvidia-smi")
            elif target.index is not None and target.index >= torch.cuda.device_count():
                problems.append(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        elif target.type == "mps":
            if not torch.backends.mps.is_available():
                problems.append(f"--device {device}: MPS is not available here — use --device cpu")
        elif target.type != "cpu":
            problems.append(f"--device {device}: unsupported device type {target.type!r} — use cpu, cuda or cuda:N")
    if problems or config is None or s is None:
        return problems
    if target is None:
        target = torch.device("cpu" if config.get("preset") == "tiny" or not torch.cuda.is_available() else "cuda")
    total = _device_memory(target)
    if total:
        need = estimate_clip_memory_bytes(config, s)
        if need > total:
            problems.append(f"{s['height']}x{s['width']}, {s['num_frames']} frames per clip needs roughly "
                            f"{_gib(need)} of activations, more than the {_gib(total)} of {target} — lower "
                            "--height/--width/--num-frames (352 x 640, 81 for the released model)")
    return problems


def _device_memory(device) -> int | None:
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


# --------------------------------------------------------------------------------------------------
# Config file
# --------------------------------------------------------------------------------------------------


def check_config_file(path) -> list[str]:
    """YAML syntax and the schema of a sampling config, each problem naming the file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [f"{path}: cannot read the config ({err})"]
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(err, "problem", None) or str(err)
        return [f"{where}: YAML syntax error: {what} — fix the line (indentation, a missing ':' or quote)"]
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        return [f"{path}:{root.start_mark.line + 1}: a config is a mapping of keys (preset:, sampling:, ...)"]
    problems = []
    whole = {**CONFIG_KEYS, "sampling": SAMPLING_KEYS, **{k: v for k, v in SAMPLING_KEYS.items()}}
    if any(key_node.value == "model" for key_node, _ in root.value):  # model sizes (tiny): their names too
        whole["model"] = model_section_schema()

    def check_mapping(node, schema: dict, section: str) -> None:
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key not in schema:
                problems.append(f"{path}:{line}: {unknown_key_message(str(key), section, schema, whole)}")
                continue
            value = yaml.safe_load(yaml.serialize(value_node))
            if not isinstance(value, schema[key]) or (isinstance(value, bool) and bool not in schema[key]):
                kinds = " or ".join("null" if t is type(None) else t.__name__ for t in schema[key])
                problems.append(f"{path}:{line}: '{section}{key}' must be {kinds}, got {value!r}")
            elif key == "sampling":
                check_mapping(value_node, SAMPLING_KEYS, "sampling.")
            elif key == "model":
                problems.extend(yaml_key_problems(path, value_node, whole["model"], "model.", whole))
            elif key == "dtype" and value not in DTYPES:
                problems.append(f"{path}:{line}: dtype {value!r}: must be one of {', '.join(DTYPES)}")
            elif key == "offload" and value not in OFFLOAD_MODES:
                problems.append(f"{path}:{line}: offload {value!r}: must be one of {', '.join(OFFLOAD_MODES)}")
            elif key == "resize" and value not in RESIZE_MODES:
                problems.append(f"{path}:{line}: resize {value!r}: must be one of {', '.join(RESIZE_MODES)}")
            elif key == "fp8" and isinstance(value, str) and value not in FP8_VALUES:
                problems.append(f"{path}:{line}: fp8 {value!r}: must be true, false or one of {', '.join(FP8_VALUES)}")
            elif key == "step_cache" and value not in (None, "firstblock", "teacache", "magcache"):
                problems.append(f"{path}:{line}: step_cache {value!r}: must be null, firstblock, teacache or magcache")

    check_mapping(root, {**CONFIG_KEYS, **SAMPLING_KEYS}, "")
    return problems


# --------------------------------------------------------------------------------------------------
# Output folder and --redo
# --------------------------------------------------------------------------------------------------


RUN_MANIFEST = "manifest.json"  # what makes a folder a run of ours (longvie.longvideo.run_state)
SESSION_LOG_LINE = "=== session started:"  # the first line a run writes to run.log, before its manifest


def started_run(path: Path, entries: list[str]) -> bool:
    """A run stopped before it wrote its first manifest: only run.lock and a run.log that we began."""
    if not set(entries) <= {"run.lock", "run.log"}:
        return False
    log = path / "run.log"
    if not log.is_file():
        return True  # run.lock alone: the lock is taken first
    with open(log, encoding="utf-8", errors="replace") as handle:
        return SESSION_LOG_LINE in handle.read(4096)


def check_output_dir(out, needed_bytes: int = 0) -> list[str]:
    """``out`` is (or can be created as) a writable folder with room for the run, and it is new, empty
    or a run of ours (never a folder of the user's files: :func:`longvie.media.output_dir.claim_output_dir`)."""
    from ..media.output_dir import OutputDirError, claim_output_dir

    out = Path(out)
    if out.exists() and not out.is_dir():
        return [f"--out {out}: is a file, not a folder — choose another --out"]
    try:
        claim_output_dir(out, "run folder", markers=(RUN_MANIFEST,), ours=started_run)
    except OutputDirError as err:
        return [str(err)]
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return [f"--out {out}: {existing} is a file, so the folder cannot be created — choose another --out"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"--out {out}: {existing} is not writable (read-only file system or permissions) — choose a "
                "writable --out"]
    if needed_bytes:
        free = shutil.disk_usage(existing).free
        if free < needed_bytes:
            return [f"--out {out}: the run needs about {_gib(needed_bytes)} (clip states, clips and the video) "
                    f"but {existing} has {_gib(free)} free — free space or choose another --out"]
    return []


def check_redo(out, redo: int | None) -> list[str]:
    """``--redo`` regenerates clips of an existing run; the run's manifest must be readable."""
    from .run_state import RunDir, RunManifestError

    run = RunDir(out)
    try:
        manifest = run.load_manifest()
    except RunManifestError as err:
        return [str(err)]
    except OSError as err:
        return [f"{run.manifest_path}: cannot read ({err})"]
    if redo is not None and manifest is None:
        return [f"--redo {redo}: {out} holds no run yet (no manifest.json) — run without --redo first, or point "
                "--out at the run to redo"]
    return []


# --------------------------------------------------------------------------------------------------
# Weight headers
# --------------------------------------------------------------------------------------------------


def base_transformer_config(base_dir) -> SimpleNamespace | None:
    """The base DiT's width/heads/FFN/layers from its config.json (either layout), or None if unreadable."""
    base_dir = Path(base_dir)
    diffusers = base_dir / "transformer" / "config.json"
    original = base_dir / "config.json"
    try:
        if diffusers.is_file():
            c = json.loads(diffusers.read_text(encoding="utf-8"))
            return SimpleNamespace(num_attention_heads=c["num_attention_heads"],
                                   attention_head_dim=c["attention_head_dim"], ffn_dim=c["ffn_dim"],
                                   eps=c.get("eps", 1e-6), num_layers=c["num_layers"], raw=c)
        if original.is_file():
            c = json.loads(original.read_text(encoding="utf-8"))
            return SimpleNamespace(num_attention_heads=c["num_heads"], attention_head_dim=c["dim"] // c["num_heads"],
                                   ffn_dim=c["ffn_dim"], eps=c.get("eps", 1e-6), num_layers=c["num_layers"], raw=None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _shape_problems(source: str, found: dict, expected: dict, file_names: dict,
                    allow_missing: bool = False) -> list[str]:
    """Missing, unknown and mis-shaped tensors (``file_names``: our name -> the name in the file)."""
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if tuple(found[k]) != tuple(expected[k]))
    problems = []
    if missing and not allow_missing:
        problems.append(f"{source}: lacks {len(missing)} tensor(s) the base model's control branch needs, e.g. "
                        f"{missing[0]} (in our names)")
    if unknown:
        problems.append(f"{source}: holds {len(unknown)} tensor(s) with no place in the model, e.g. "
                        f"{file_names.get(unknown[0], unknown[0])}")
    if wrong:
        k = wrong[0]
        problems.append(f"{source}: {len(wrong)} tensor shape(s) differ from the base model's, e.g. "
                        f"{file_names.get(k, k)} is "
                        f"{tuple(found[k])}, expected {tuple(expected[k])} — the weights belong to another base "
                        "model (LongVie 2 needs Wan2.1-I2V-14B-480P)")
    return problems


def check_weight_headers(base_dir, longvie_dir) -> list[str]:
    """Key set and shapes of control.safetensors / dit.safetensors against the base model's config.

    Reads only the safetensors headers and config.json; the expected shapes come from the control
    branch (and, for the diffusers layout, the DiT) built on the ``meta`` device.
    """
    import torch

    from ..models.control_branch import LongVieControlBranch
    from ..weights.checkpoint_keys import (
        CheckpointKeyError,
        control_depth_from_keys,
        convert_control_state_dict,
        convert_dit_state_dict,
    )
    from ..weights.files import CONTROL_FILENAME, DIT_FILENAME, WeightsError, safetensors_shapes

    base = base_transformer_config(base_dir)
    if base is None:
        return []  # the folder checks report an unreadable base config
    problems = []
    control_path, dit_path = Path(longvie_dir) / CONTROL_FILENAME, Path(longvie_dir) / DIT_FILENAME
    try:
        in_file = safetensors_shapes(control_path)
        names = convert_control_state_dict({k: k for k in in_file}, source=str(control_path))
        shapes = {ours: in_file[theirs] for ours, theirs in names.items()}
        depth = control_depth_from_keys(shapes)
        if depth > base.num_layers:
            problems.append(f"{control_path}: {depth} control blocks, more than the base DiT's {base.num_layers}")
        else:
            with torch.device("meta"):
                control = LongVieControlBranch(**LongVieControlBranch.config_for(base, num_layers=depth))
            expected = {k: tuple(v.shape) for k, v in control.state_dict().items()}
            problems += _shape_problems(str(control_path), shapes, expected, names)
    except (WeightsError, CheckpointKeyError, ValueError) as err:
        problems.append(f"{control_path}: {err}" if str(control_path) not in str(err) else str(err))
    if dit_path.is_file():
        try:
            in_file = safetensors_shapes(dit_path)
            names = convert_dit_state_dict({k: k for k in in_file}, source=str(dit_path))
            shapes = {ours: in_file[theirs] for ours, theirs in names.items()}
            if base.raw is not None:
                from diffusers import WanTransformer3DModel

                config = {k: v for k, v in base.raw.items() if not k.startswith("_")}
                with torch.device("meta"):
                    transformer = WanTransformer3DModel.from_config(config)
                expected = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
                problems += _shape_problems(str(dit_path), shapes, expected, names, allow_missing=True)
        except (WeightsError, CheckpointKeyError, ValueError) as err:
            problems.append(f"{dit_path}: {err}" if str(dit_path) not in str(err) else str(err))
    return problems
