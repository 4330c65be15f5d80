"""Which folders training may write: its output folder and its latent cache, never a user's folder.

Both go through the one guard, :func:`longvie.media.output_dir.claim_output_dir`, before any model
loads. A training output is ours when it holds the marker that :func:`longvie.train.trainer.train`
writes first (``longvie_output.json``, kind ``train``), or, for outputs of earlier versions, when its
``config.yaml`` is a training config (a mapping with ``stage`` and a ``train`` section) or it holds a
checkpoint folder (``checkpoint-NNNNNN/trainer_state.json``): such outputs still resume. A latent
cache is ours with its marker (kind ``train-cache``), or when every file in it is a cache entry
(``00000042.safetensors``) or the cache's ``manifest.json``.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..media.output_dir import claim_output_dir, mark_output_dir

TRAIN_KIND = "train"
CACHE_KIND = "train-cache"
_CACHE_ENTRY = re.compile(r"^\d{8}\.safetensors$")
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def is_earlier_training_output(path: Path, entries: list[str]) -> bool:
    """A training output written before outputs were marked (it must still resume)."""
    if any(_CHECKPOINT.match(name) and (path / name / "trainer_state.json").is_file() for name in entries):
        return True
    config = path / "config.yaml"
    if not config.is_file():
        return False
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and data.get("stage") in (1, 2, 3) and isinstance(data.get("train"), dict)


def is_earlier_cache(path: Path, entries: list[str]) -> bool:
    """A latent cache written before caches were marked (or stopped before its manifest)."""
    return all(_CACHE_ENTRY.match(name) or name == "manifest.json" for name in entries)


def claim_training_output(path, flag: str = "--output") -> Path:
    """Raises :class:`longvie.media.output_dir.OutputDirError` when ``path`` holds files that are not ours."""
    return claim_output_dir(path, "training output", kind=TRAIN_KIND, flag=flag, ours=is_earlier_training_output)


def claim_cache_dir(path, flag: str = "--cache-dir") -> Path:
    return claim_output_dir(path, "latent cache", kind=CACHE_KIND, flag=flag, ours=is_earlier_cache)


def mark_training_output(path) -> Path:
    return mark_output_dir(path, TRAIN_KIND)


def mark_cache_dir(path) -> Path:
    return mark_output_dir(path, CACHE_KIND)
