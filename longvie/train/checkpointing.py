"""Checkpoints: weights in the released layout, plus the accelerate state for an exact resume.

    OUT/init/control.safetensors      stage 1: the half-copy initialisation
    OUT/checkpoint-000100/
        control.safetensors           released key layout (SPEC §2):
                                      LongViePipeline.from_pretrained(base_dir, "OUT/checkpoint-000100")
        dit.safetensors               stage 3: the trained DiT self-attention weights (original Wan names)
        trainer_state.json            step, data position of every rank, skipped clips
        state/                        accelerator.save_state: trainable weights (float32), optimizer, RNG
        checkpoint.json               written last: every file of the checkpoint with its size
    OUT/latest                        name of the newest complete checkpoint
    OUT/final/                        the last step's weights (control + dit), no state

A checkpoint folder is written under a temporary name and renamed when complete, and every file
in it is written atomically: a crash leaves the previous checkpoint intact and ``latest`` valid.
``checkpoint.json`` (written last, before the rename) records every file and its size; on resume a
checkpoint whose files are missing, of another size, truncated (safetensors / torch headers) or
whose trainer_state.json does not parse is reported and the previous intact one is used.
Only trainable weights go into ``state/`` (the 14B frozen DiT is rebuilt from the base model).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from .. import LongVieError
from ..media.atomic import atomic_save_tensors, atomic_write_json, atomic_write_text, fsync_dir
from ..weights.checkpoint_keys import to_original_dit_state_dict, to_released_control_state_dict
from ..weights.loading import CONTROL_FILENAME, DIT_FILENAME

CHECKPOINT_PREFIX = "checkpoint-"
LATEST = "latest"
FINAL = "final"
STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_RECORD = "checkpoint.json"

logger = logging.getLogger("longvie.train")


class CheckpointError(LongVieError, ValueError):
    """A checkpoint named on the command line is damaged or incomplete."""


def release_state_dicts(state_dict: dict, trainable: set[str], dtype: torch.dtype) -> tuple[dict, dict | None]:
    """Split a denoiser state dict into the released files' contents.

    Args:
        state_dict: ``LongVieDenoiser`` state dict (names ``control.*`` and ``transformer.*``).
        trainable: names of the trained parameters (same naming).
    Returns:
        (control, dit): the whole control branch in released names; the trained DiT tensors in
        original Wan names, or None when no DiT tensor was trained.
    """
    def cast(t: torch.Tensor) -> torch.Tensor:
        return (t.to(dtype) if t.is_floating_point() else t).detach().cpu().contiguous()

    control = {k[len("control."):]: cast(v) for k, v in state_dict.items() if k.startswith("control.")}
    dit = {k[len("transformer."):]: cast(v) for k, v in state_dict.items()
           if k.startswith("transformer.") and k in trainable}
    return to_released_control_state_dict(control), (to_original_dit_state_dict(dit) if dit else None)


def write_release_weights(directory, state_dict: dict, trainable: set[str], dtype: torch.dtype) -> None:
    """control.safetensors (+ dit.safetensors) into ``directory``, atomically."""
    control, dit = release_state_dicts(state_dict, trainable, dtype)
    atomic_save_tensors(Path(directory) / CONTROL_FILENAME, control, metadata={"format": "pt"})
    if dit is not None:
        atomic_save_tensors(Path(directory) / DIT_FILENAME, dit, metadata={"format": "pt"})


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def install_state_hooks(accelerator) -> None:
    """Make ``accelerator.save_state`` / ``load_state`` hold only the trainable weights.

    (DeepSpeed saves its own engine checkpoint; there, see :func:`save_checkpoint`.)
    """
    from safetensors.torch import load_file

    def trainable_names(model) -> set[str]:
        return {name for name, param in model.named_parameters() if param.requires_grad}

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            if i < len(weights):
                keep = trainable_names(model)
                weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            name = "model.safetensors" if i == 0 else f"model_{i}.safetensors"
            saved = load_file(os.path.join(input_dir, name))
            expected = trainable_names(model)
            if set(saved) != expected:
                missing, unknown = sorted(expected - set(saved)), sorted(set(saved) - expected)
                raise KeyError(f"{input_dir}/{name} does not hold this run's trainable weights "
                               f"(missing {missing[:5]}, unknown {unknown[:5]}); was it written by another stage?")
            model.load_state_dict(saved, strict=False)
        models.clear()  # loaded: accelerate must not load them again (strictly, with the frozen weights)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator, model, out_dir, step: int, trainer_state: dict, trainable: set[str],
                    save_dtype: torch.dtype, keep: int | None = None) -> Path:
    """Write ``OUT/checkpoint-{step}`` (collective: call on every process)."""
    out_dir = Path(out_dir)
    final = out_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = out_dir / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if is_deepspeed(accelerator):
        accelerator.save_state(str(tmp / STATE_DIR), exclude_frozen_parameters=True)
    else:
        accelerator.save_state(str(tmp / STATE_DIR))
    from .zero import release_tensors

    state_dict = release_tensors(accelerator, model, trainable)  # collective; host copy on the main process only
    if accelerator.is_main_process:
        write_release_weights(tmp, state_dict, trainable, save_dtype)
        atomic_write_json(tmp / TRAINER_STATE, trainer_state)
        write_checkpoint_record(tmp)
        if final.exists():  # the same step saved by an earlier, interrupted run
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(out_dir)
        atomic_write_text(out_dir / LATEST, final.name + "\n")
        prune_checkpoints(out_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(out_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoint folders."""
    if not keep:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(out_dir) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def write_checkpoint_record(folder) -> None:
    """``checkpoint.json``: every file of the checkpoint folder with its size (written last)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != CHECKPOINT_RECORD}
    atomic_write_json(folder / CHECKPOINT_RECORD, {"files": files})


def checkpoint_problems(checkpoint) -> list[str]:
    """Why a checkpoint folder cannot be resumed from ([] when intact).

    Checks (headers and sizes only, seconds for any size): trainer_state.json parses and has the
    step and data positions; every file listed in checkpoint.json exists with its recorded size;
    every .safetensors header and .bin/.pt/.pth torch archive is complete.
    """
    from ..weights.files import WeightsError, safetensors_header, torch_file_format

    checkpoint = Path(checkpoint)
    problems = []
    try:
        state = read_trainer_state(checkpoint)
        if not isinstance(state, dict) or not {"step", "positions"} <= set(state):
            problems.append(f"{checkpoint / TRAINER_STATE}: lacks 'step' / 'positions'")
    except (OSError, ValueError) as err:
        problems.append(f"{checkpoint / TRAINER_STATE}: unreadable ({err})")
    record = checkpoint / CHECKPOINT_RECORD
    if record.is_file():
        try:
            files = json.loads(record.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return problems + [f"{record}: unreadable ({err})"]
        for name, size in files.items():
            path = checkpoint / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != size:
                problems.append(f"{path}: {path.stat().st_size:,} bytes, {size:,} when it was saved (truncated or "
                                "overwritten)")
    state_dir = checkpoint / STATE_DIR
    if not state_dir.is_dir():
        problems.append(f"{state_dir}: missing (the optimizer and weights state)")
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                safetensors_header(path)
            elif path.suffix in (".bin", ".pt", ".pth"):
                torch_file_format(path)
        except WeightsError as err:
            problems.append(str(err).split(". ")[0])
    return problems


def latest_checkpoint(out_dir) -> Path | None:
    """The checkpoint named by ``OUT/latest`` (else the newest complete one), or None."""
    out_dir = Path(out_dir)
    pointer = out_dir / LATEST
    if pointer.is_file():
        candidate = out_dir / pointer.read_text().strip()
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resume_candidates(out_dir) -> list[Path]:
    """The run's checkpoints to try, newest first (``latest`` first where it names one)."""
    found = list_checkpoints(out_dir)[::-1]
    latest = latest_checkpoint(out_dir)
    if latest is not None and latest in found:
        found.remove(latest)
        found.insert(0, latest)
    return found


def intact_checkpoint(candidates: list[Path]) -> Path | None:
    """The first intact checkpoint of ``candidates``; each damaged one before it is logged as a warning."""
    for checkpoint in candidates:
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return checkpoint
        logger.warning("checkpoint %s is damaged, trying the previous one:\n  %s", checkpoint,
                       "\n  ".join(problems))
    return None


def resolve_resume(resume, out_dir) -> Path | None:
    """``--resume``: "auto" = the run's newest intact checkpoint if any (else start fresh); a path =
    that checkpoint (or that run's newest intact one).

    Raises:
        FileNotFoundError: an explicit path holds no checkpoint.
        CheckpointError: an explicit checkpoint (or every checkpoint of a run) is damaged.
    """
    if not resume:
        return None
    if resume == "auto":
        candidates = resume_candidates(out_dir)
        found = intact_checkpoint(candidates)
        if found is None and candidates:
            raise CheckpointError(f"every checkpoint in {out_dir} is damaged ({', '.join(c.name for c in candidates)}"
                                  f"; see the warnings above); move them aside to start over")
        return found
    path = Path(resume)
    if (path / TRAINER_STATE).is_file() or (path / CHECKPOINT_RECORD).is_file():
        problems = checkpoint_problems(path)
        if problems:
            previous = intact_checkpoint([c for c in resume_candidates(path.parent) if c != path])
            hint = f"; the newest intact one is {previous}" if previous else ""
            raise CheckpointError(f"--resume {path}: damaged checkpoint:\n  " + "\n  ".join(problems) + hint)
        return path
    candidates = resume_candidates(path)
    if not candidates:
        raise FileNotFoundError(f"--resume {path}: no checkpoint there (expected {TRAINER_STATE} or a run "
                                f"folder with {CHECKPOINT_PREFIX}* folders)")
    found = intact_checkpoint(candidates)
    if found is None:
        raise CheckpointError(f"--resume {path}: every checkpoint there is damaged (see the warnings above)")
    return found


def resolve_weights_dir(path) -> Path:
    """``--init-from``: a folder with control.safetensors, or a run folder (its final/ or latest checkpoint)."""
    path = Path(path)
    if (path / CONTROL_FILENAME).is_file():
        return path
    for candidate in (path / FINAL, latest_checkpoint(path)):
        if candidate is not None and (candidate / CONTROL_FILENAME).is_file():
            return candidate
    raise FileNotFoundError(f"--init-from {path}: no {CONTROL_FILENAME} there, nor in {path / FINAL} or a "
                            f"{CHECKPOINT_PREFIX}* folder; point it at the previous stage's output")


def read_trainer_state(checkpoint) -> dict:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
