"""The run directory of a long-video generation: file layout, manifest, per-clip state and lock.

Layout::

    run_dir/
      manifest.json                 resolved config, seed, input hashes, per-clip status and timings
      run.log                       log of every session on this run (appended)
      run.lock                      exists while a process works on the run (flock; holds its pid)
      state/clip_000.safetensors    clip 0, lossless: "frames" uint8 (T, H, W, 3) + "noise" float32
      clips/clip_000.mp4            clip 0 as H.264, 16 fps
      video.mp4                     all clips stitched (81 + (n-1)*80 frames)

A clip is finished when the manifest says so and its state file matches the recorded sha256. Each
clip is committed in the order state -> mp4 -> manifest, every file written atomically, so a kill at
any moment leaves either a finished clip or one that is generated again on the next run.

The state of clip k is everything clip k+1 needs: its frames (the next input image and history) and
the unified noise it was sampled from (SPEC §4), stored losslessly because mp4 is lossy.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import LongVieError
from ..media.atomic import atomic_write_bytes
from ..media.video_io import write_video

__all__ = [
    "MANIFEST_FORMAT",
    "new_manifest",
    "apply_redo",
    "plan_resume",
    "mark_clip_done",
    "expected_clip_inputs",
    "input_differences",
    "RunDir",
    "ClipState",
    "RedoRequest",
    "RunMismatchError",
    "RunLockedError",
    "RunManifestError",
    "sha256_file",
    "now_iso",
    "record_modes",
]

MANIFEST_FORMAT = "longvie-run/1"
INDENTED_MANIFEST_CLIPS = 1000  # manifests of longer runs are written without indentation (speed)


class RunMismatchError(LongVieError, ValueError):
    """Inputs or settings of already finished clips differ from this command's; nothing was mixed."""

    def __init__(self, run_dir: Path, problems: list[str], first_changed: int | None):
        self.problems = problems
        self.first_changed = first_changed
        lines = "\n".join(f"  - {p}" for p in problems)
        if first_changed is None:
            fix = ("re-run with the original settings, or --redo 0 to regenerate every clip with the new "
                   "ones, or choose a new --out directory")
        else:
            fix = (f"restore the original inputs, or re-run with --redo {first_changed} to regenerate clip "
                   f"{first_changed} and every clip after it, or choose a new --out directory")
        super().__init__(f"run directory {run_dir} was made with different inputs:\n{lines}\nFix: {fix}.")


class RunLockedError(LongVieError, RuntimeError):
    """Another live process is working on the same run directory."""


class RunManifestError(LongVieError, ValueError):
    """A run directory's manifest.json is unreadable, damaged, or belongs to something else."""


@dataclass(frozen=True)
class RedoRequest:
    """Regenerate clip ``clip`` and every clip after it, optionally with a new seed or prompt.

    ``seed`` for clip 0 becomes the run's seed; for a later clip it draws new noise for that clip,
    which later clips then carry (unified noise restarts there).
    """

    clip: int
    seed: int | None = None
    text: str | None = None

    def as_dict(self) -> dict:
        return {"clip": self.clip, "seed": self.seed, "text": self.text}


@dataclass
class ClipState:
    """What a finished clip leaves for the next one."""

    frames: np.ndarray  # (T, H, W, 3) uint8, exactly as generated
    noise: "torch.Tensor"  # (1, 16, F, H/8, W/8) float32: the initial noise this clip was sampled from  # noqa: F821


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class RunDir:
    """Paths and file operations of one run directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- paths
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    @property
    def lock_path(self) -> Path:
        return self.root / "run.lock"

    @property
    def video_path(self) -> Path:
        return self.root / "video.mp4"

    def clip_state_path(self, index: int) -> Path:
        return self.root / "state" / f"clip_{index:03d}.safetensors"

    def clip_video_path(self, index: int) -> Path:
        return self.root / "clips" / f"clip_{index:03d}.mp4"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- manifest
    def load_manifest(self) -> dict | None:
        """The manifest, or None for a new run.

        Raises:
            RunManifestError: the manifest is unreadable, not JSON, or not a LongVie run manifest.
        """
        path = self.manifest_path
        if not path.exists():
            return None
        recover = (f"the finished clips' files are kept in {self.root / 'state'}; to start this run over, move "
                   f"{path.name} aside (e.g. `mv {path} {path}.bad`) and run the same command, or choose a new --out")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except IsADirectoryError:
            raise RunManifestError(f"{path} is a directory, not a run manifest — remove it or choose a new "
                                   "--out") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunManifestError(f"{path} is not valid JSON ({err}); it is only ever replaced atomically, so "
                                   f"it was damaged or edited by hand — {recover}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise RunManifestError(f"{path} is not a LongVie run manifest (format {MANIFEST_FORMAT}); {self.root} "
                                   "belongs to something else — choose a new --out directory")
        if not isinstance(manifest.get("clips"), list) or not isinstance(manifest.get("settings"), dict):
            raise RunManifestError(f"{path} lacks its 'clips' list or 'settings' — {recover}")
        return manifest

    def save_manifest(self, manifest: dict) -> None:
        """Write the manifest atomically; a non-finite number (NaN) is refused, so the file stays JSON."""
        manifest["updated_at"] = now_iso()
        # Indented for reading; a run of thousands of clips is written compact (json's C encoder, ~10x
        # faster: a 100,000-clip manifest takes well under a second instead of many, at every clip).
        indent = 2 if len(manifest.get("clips") or ()) <= INDENTED_MANIFEST_CLIPS else None
        text = json.dumps(manifest, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write_bytes(self.manifest_path, text.encode("utf-8"))

    # -- clip files
    def save_clip_state(self, index: int, frames: np.ndarray, noise, metadata: dict | None = None) -> str:
        """Write clip ``index``'s lossless state atomically; returns the file's sha256."""
        import torch
        from safetensors.torch import save as safetensors_bytes

        tensors = {"frames": torch.from_numpy(np.ascontiguousarray(frames)),
                   "noise": noise.detach().to("cpu", torch.float32).contiguous()}
        data = safetensors_bytes(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
        atomic_write_bytes(self.clip_state_path(index), data)
        return hashlib.sha256(data).hexdigest()

    def load_clip_state(self, index: int, sha256: str | None = None) -> ClipState:
        """Read clip ``index``'s state; with ``sha256`` given, a file that differs is an error."""
        from safetensors.torch import load as safetensors_load

        path = self.clip_state_path(index)
        data = path.read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{path} does not match the sha256 recorded in {self.manifest_path}")
        tensors = safetensors_load(data)
        return ClipState(frames=tensors["frames"].numpy(), noise=tensors["noise"])

    def clip_state_ok(self, index: int, sha256: str | None) -> bool:
        path = self.clip_state_path(index)
        return sha256 is not None and path.is_file() and sha256_file(path) == sha256

    def write_clip_video(self, index: int, frames: np.ndarray, fps: float) -> Path:
        return write_video(self.clip_video_path(index), frames, fps=fps)

    # -- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``run.lock`` exclusively for the duration of the block.

        The lock is an OS lock (``fcntl.flock``) on the open file, so it is held exactly as long as
        this process lives: a process killed with ``kill -9`` releases it, and its successor takes
        it over without guessing from pids. The file holds the holder's pid for the error message
        only. It is removed on release while still locked, and a process that locked a file that
        was meanwhile removed (its inode no longer at ``run.lock``) starts over, so two processes
        never both hold it and no process removes a lock it does not hold.

        Raises:
            RunLockedError: another live process holds the lock.
        """
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                who = f"process {owner}" if owner else "another process"
                raise RunLockedError(f"{self.root} is in use by {who} (it holds {self.lock_path}); wait for it to "
                                     "finish or stop it") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # locked a file that its holder removed on release: take the current one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)  # still locked by us: nobody else can hold this file
            os.close(fd)  # releases the flock


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0")
    except (OSError, ValueError, UnicodeDecodeError):
        return 0


# --------------------------------------------------------------------------------------------------
# Manifest: what a run was made from, and what is finished
# --------------------------------------------------------------------------------------------------


def new_manifest(settings: dict, seed: int, config: dict | None = None, command: str | None = None,
                 environment: dict | None = None) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "created_at": now_iso(),
        "updated_at": now_iso(),
        "seed": seed,
        "settings": settings,
        "config": config or {},
        "command": command,
        "environment": environment or {},
        "inputs": {},
        "overrides": {},      # per clip (str index): {"text": ..., "seed": ...} set by --redo
        "pending_redo": None,  # the --redo request being carried out, so that re-running it resumes it
        "clips": [],
        "video": None,
        "seconds_total": 0.0,
    }


def expected_clip_inputs(index: int, text: str, depth: dict, track: dict, image: dict,
                         seed: int, overrides: dict) -> dict:
    """The inputs that determine clip ``index`` (recorded per clip and compared on resume).

    ``depth``/``track``/``image`` are ``{"path", "sha256"}``. Clip 0 draws its noise from the run's
    seed; later clips carry the previous clip's noise (``noise_seed`` None) unless --redo gave them
    a seed of their own.
    """
    override = overrides.get(str(index), {})
    inputs = {
        "text": override.get("text", text),
        "depth": depth,
        "track": track,
        "noise_seed": override.get("seed", seed if index == 0 else None),
    }
    if index == 0:
        inputs["image"] = image
    return inputs


_COMPARED_INPUTS = (("text", "prompt"), ("depth", "depth video"), ("track", "track video"),
                    ("noise_seed", "seed"), ("image", "first image"))


def _short(text: str, length: int = 50) -> str:
    return repr(text if len(text) <= length else text[:length] + "...")


def input_differences(recorded: dict, expected: dict) -> list[str]:
    """Human-readable differences between a clip's recorded and current inputs."""
    differences = []
    for key, label in _COMPARED_INPUTS:
        old, new = recorded.get(key), expected.get(key)
        if isinstance(old, dict) or isinstance(new, dict):
            old, new = old or {}, new or {}
            if old.get("sha256") != new.get("sha256"):
                differences.append(f"{label} {new.get('path')} changed (sha256 {str(new.get('sha256'))[:12]}, "
                                   f"recorded {str(old.get('sha256'))[:12]} for {old.get('path')})")
        elif old != new:
            if key == "text":
                differences.append(f"prompt changed (recorded {_short(old or '')}, now {_short(new or '')})")
            else:
                differences.append(f"{label} changed (recorded {old}, now {new})")
    return differences


def apply_redo(manifest: dict, redo: RedoRequest, settings: dict) -> bool:
    """Mark clip ``redo.clip`` and all later clips for regeneration; returns False when this exact
    request is already under way (a re-run of an interrupted --redo continues it)."""
    if manifest.get("pending_redo") == redo.as_dict():
        return False
    override = {}
    if redo.text is not None:
        override["text"] = redo.text
    if redo.seed is not None:
        if redo.clip == 0:
            manifest["seed"] = redo.seed
        else:
            override["seed"] = redo.seed
    if override:
        manifest["overrides"][str(redo.clip)] = override
    else:
        manifest["overrides"].pop(str(redo.clip), None)
    for record in manifest["clips"][redo.clip:]:
        if record is not None:
            record["status"] = "pending"
    if redo.clip == 0:
        manifest["settings"] = settings
    manifest["pending_redo"] = redo.as_dict()
    manifest["video"] = None
    return True


def recorded_settings(manifest: dict) -> dict:
    """The manifest's sampling settings, with settings added after the run was made filled in with the
    value that run used, so that runs made by an earlier version resume.

    ``vae_tiling`` became a setting of its own later; before, the VAE was tiled exactly when the run
    used ``offload: group``.
    """
    recorded = dict(manifest["settings"])
    if "vae_tiling" not in recorded:
        recorded["vae_tiling"] = (manifest.get("config") or {}).get("offload") == "group"
    for key, value in (("fp8", False), ("step_cache", None), ("step_cache_threshold", None), ("loras", []),
                       ("timesteps", None), ("step_cache_ratios", None)):
        recorded.setdefault(key, value)  # added later; earlier runs ran without them
    # fp8_kind came with per-row scaled FP8; earlier FP8 runs stored unscaled weights (other pixels)
    recorded.setdefault("fp8_kind", UNSCALED_FP8 if recorded["fp8"] else None)
    return recorded


UNSCALED_FP8 = "unscaled (before per-row scales)"


def record_modes(manifest: dict, modes: dict, step_cache: dict | None) -> None:
    """Record what runs (``acceleration.modes.ModeRecord.as_dict()``) as ``manifest["modes"]``, with the run's
    own step cache, and a one-line ``summary`` that each clip generated in this session also keeps. Offload,
    compile and the attention backend may differ between sessions of one run (same math); the settings
    that change pixels are compared on resume (:func:`plan_resume`)."""
    modes = {**modes, "step_cache": step_cache}
    modes["summary"] = {"offload": modes.get("offload"), "fp8": modes.get("fp8"),
                        "compiled_blocks": sum((modes.get("compiled") or {}).values()),
                        "attention": modes.get("attention"),
                        "step_cache": None if step_cache is None else step_cache.get("kind"),
                        "loras": len(modes.get("loras") or [])}
    manifest["modes"] = modes


def plan_resume(manifest: dict, run: RunDir, settings: dict, seed: int | None, clip_sources: list[dict],
                image: dict, run_dir_for_errors: Path | None = None) -> tuple[int, list[str]]:
    """Reconcile the manifest with this command's inputs; find the first clip to generate.

    Finished clips whose inputs changed raise :class:`RunMismatchError` (all of them listed). A
    finished clip whose state file is missing or corrupt, or whose predecessor changed, is
    regenerated together with every clip after it.

    Args:
        clip_sources: per clip ``{"text", "depth": {"path", "sha256"}, "track": {...}}``.
        image: ``{"path", "sha256"}`` of the first image.
        seed: the run seed requested now (None: keep the recorded one).

    Returns:
        ``(first_pending, warnings)``; ``first_pending == len(clip_sources)`` when all are finished.
        The manifest's clip records are updated in place (pending clips get fresh records).
    """
    num_clips = len(clip_sources)
    records = manifest["clips"]
    records.extend([None] * (num_clips - len(records)))
    run_seed = manifest["seed"] if seed is None else seed
    finished = [r is not None and r.get("status") == "done" for r in records[:num_clips]]
    problems, warnings = [], []
    first_changed = None

    recorded = recorded_settings(manifest)
    if any(finished) and recorded != settings:
        for key in sorted(set(recorded) | set(settings)):
            old, new = recorded.get(key), settings.get(key)
            if old != new:
                problems.append(f"setting {key}: recorded {old!r}, now {new!r}")

    first_pending = None
    for index, source in enumerate(clip_sources):
        expected = expected_clip_inputs(index, source["text"], source["depth"], source["track"], image,
                                        run_seed, manifest["overrides"])
        record = records[index]
        if first_pending is None and finished[index]:
            differences = input_differences(record["inputs"], expected)
            if differences:
                problems += [f"clip {index}: {d}" for d in differences]
                first_changed = index if first_changed is None else first_changed
                continue
            previous = records[index - 1]["state_sha256"] if index > 0 else None
            if record.get("prev_state_sha256") != previous:
                warnings.append(f"clip {index}: made from a different clip {index - 1}; regenerating from clip {index}")
            elif not run.clip_state_ok(index, record.get("state_sha256")):
                warnings.append(f"clip {index}: state file {run.clip_state_path(index)} is missing or does not "
                                f"match the manifest; regenerating from clip {index}")
            else:
                record["inputs"] = expected  # same content; paths may have moved
                continue
        if first_pending is None:
            first_pending = index
        records[index] = {"index": index, "status": "pending", "inputs": expected}

    if problems:
        raise RunMismatchError(run_dir_for_errors or run.root, problems, first_changed)
    manifest["settings"] = settings
    manifest["seed"] = run_seed
    return (num_clips if first_pending is None else first_pending), warnings


def mark_clip_done(manifest: dict, run: RunDir, index: int, state_sha256: str, num_frames: int,
                   seconds: float) -> None:
    record = manifest["clips"][index]
    record.update(
        status="done",
        state=run.relative(run.clip_state_path(index)),
        state_sha256=state_sha256,
        prev_state_sha256=manifest["clips"][index - 1]["state_sha256"] if index > 0 else None,
        video=run.relative(run.clip_video_path(index)),
        frames=num_frames,
        seconds=round(seconds, 3),
        finished_at=now_iso(),
    )
    manifest["seconds_total"] = round(manifest.get("seconds_total", 0.0) + seconds, 3)
