"""The ``tiny`` training preset: the real code path on a CPU in seconds.

``--preset tiny`` trains the tiny random-weight Wan2.1-I2V of configs/tiny.yaml (written by
:func:`longvie.presets.tiny.write_tiny_checkpoints`, nothing is downloaded) on the synthetic example
(``python -m longvie.examples.synthetic``: a ray-cast scene with exact depth and tracks, whose
rendered RGB video is the training video), at 32 x 48 pixels and 9 frames per clip.

One change to the tiny DiT: its output projection is scaled by ``TINY_HEAD_GAIN``. With the
N(0, 0.05) weights of the inference preset, the head (LayerNorm, then a 64 -> 64 projection) can
only produce outputs of std ~0.4, while the flow-matching target ε - x0 has std > 1: the loss then
has a floor that no control branch can go below, and "does it learn?" tests would measure the
head, not the training code. Scaled by 4, the outputs match the target's scale.

Assets go to ``$LONGVIE_TINY_DIR`` (default ``~/.cache/longvie/tiny``) and are reused.
"""
from __future__ import annotations

import os
from pathlib import Path

TINY_FRAMES, TINY_HEIGHT, TINY_WIDTH, TINY_CLIPS = 9, 32, 48, 3
TINY_HEAD_GAIN = 4.0


def tiny_root() -> Path:
    return Path(os.environ.get("LONGVIE_TINY_DIR") or Path.home() / ".cache" / "longvie" / "tiny")


def preset_overrides(name: str, stage: int) -> dict:
    """Config overrides of a preset (merged over the stage config)."""
    if name != "tiny":
        raise ValueError(f"unknown training preset {name!r}; available: tiny")
    from ..presets.config import load_config

    overrides = {
        "model": {"base_model_dir": "",  # "" = the tiny checkpoints (resolve_preset)
                  "control_layers": load_config("tiny")["model"]["control_layers"],
                  "weight_dtype": "float32", "vae_dtype": "float32"},
        "data": {"metadata": "",  # "" = the synthetic example
                 "height": TINY_HEIGHT, "width": TINY_WIDTH, "num_frames": TINY_FRAMES,
                 "num_workers": 0},
        "train": {"output_dir": f"outputs/train/tiny_stage{stage}", "learning_rate": 1.0e-3, "warmup_steps": 0,
                  "max_steps": 30, "gradient_accumulation_steps": 1, "mixed_precision": "no",
                  "save_every": 10, "save_dtype": "float32", "keep_checkpoints": None},
    }
    if stage > 1:
        # A standalone tiny run of stage 2/3 may start from a fresh half copy; --init-from wins.
        overrides["model"]["init_from"] = "half_copy"
    return overrides


def prepare_tiny_assets(root: Path | None = None) -> tuple[Path, Path]:
    """Write (once) the tiny base model and the synthetic training data; returns (base_dir, metadata)."""
    from ..examples.synthetic import make_synthetic_example
    from ..media.atomic import atomic_write_json
    from .metadata import rows_from_conditions

    root = Path(root or tiny_root())
    base_dir = write_trainable_tiny_base(root)
    metadata = root / "data" / "metadata.json"
    if not metadata.is_file():
        example = root / "data" / "example"
        cond = make_synthetic_example(example, clips=TINY_CLIPS, height=TINY_HEIGHT, width=TINY_WIDTH,
                                      frames_per_clip=TINY_FRAMES)
        rows = rows_from_conditions(example / "reference.mp4", cond, metadata.parent, clip_frames=TINY_FRAMES)
        atomic_write_json(metadata, rows)
    return base_dir, metadata


def write_trainable_tiny_base(root: Path) -> Path:
    """The tiny Wan2.1-I2V folder with its DiT head scaled by ``TINY_HEAD_GAIN`` (see the module doc)."""
    import shutil

    import torch
    from diffusers import WanTransformer3DModel

    from ..media.atomic import atomic_write_text
    from ..presets.tiny import write_tiny_checkpoints

    base_dir = root / "Wan2.1-I2V-tiny-train-Diffusers"
    marker = base_dir / ".complete"
    if marker.is_file():
        return base_dir
    source, _ = write_tiny_checkpoints(root / "checkpoints")
    shutil.rmtree(base_dir, ignore_errors=True)
    shutil.copytree(source, base_dir, ignore=shutil.ignore_patterns("transformer"))
    transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer")
    with torch.no_grad():
        transformer.proj_out.weight.mul_(TINY_HEAD_GAIN)
    transformer.save_pretrained(base_dir / "transformer")
    atomic_write_text(marker, "ok\n")
    return base_dir


def resolve_preset(config: dict) -> dict:
    """Fill in the preset's asset paths (call once per process, main process first)."""
    if config.get("preset") != "tiny":
        return config
    base_dir, metadata = prepare_tiny_assets()
    if not config["model"]["base_model_dir"]:
        config["model"]["base_model_dir"] = str(base_dir)
    if not config["data"]["metadata"]:
        config["data"]["metadata"] = str(metadata)
    return config
