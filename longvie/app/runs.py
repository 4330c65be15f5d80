"""Past runs: the sampler's run directories under the app's output folder, summarised and zipped.

A run directory is :class:`longvie.longvideo.RunDir`'s layout (manifest.json, clips/, state/,
video.mp4, run.log). Runs started from the page also hold ``inputs/`` (the condition folder they
were made from), so that a run folder is complete on its own; runs made with ``python -m
longvie.sample`` are listed too and resumed from the inputs their manifest records.
"""
from __future__ import annotations

import datetime as _dt
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..longvideo.run_state import RunDir
from ..longvideo.validation import ClipCondition, load_conditions
from ..media.atomic import atomic_path

__all__ = ["RunSummary", "list_runs", "visible_runs", "summarize_run", "run_inputs", "zip_run", "INPUTS_DIR"]

INPUTS_DIR = "inputs"  # the condition folder a page-started run was made from


@dataclass(frozen=True)
class RunSummary:
    """One run directory as the page lists it."""

    path: Path
    num_clips: int  # clips the run was last asked for
    done: int  # clips finished (in order from clip 0)
    has_video: bool  # video.mp4 holds exactly the finished clips
    updated_at: str
    problem: str | None = None  # unreadable manifest
    owner: str | None = None  # longvie.app.access.owner_key of the browser that started it (None: unknown)

    @property
    def finished(self) -> bool:
        return self.problem is None and self.num_clips > 0 and self.done == self.num_clips and self.has_video

    @property
    def label(self) -> str:
        if self.problem:
            return f"{self.path.name} — unreadable: {self.problem}"
        state = "finished" if self.finished else ("interrupted" if self.done < self.num_clips else "not stitched")
        return f"{self.path.name} — {self.done}/{self.num_clips} clips, {state} ({self.updated_at})"

    def label_for(self, viewer: str | None) -> str:
        """The label, marked read only for a viewer who does not own the run."""
        return self.label if self.owner is not None and self.owner == viewer else f"{self.label} · read only"


def summarize_run(run_dir: str | Path) -> RunSummary:
    from .access import read_owner

    run = RunDir(run_dir)
    owner = read_owner(run.root)
    try:
        manifest = run.load_manifest()
    except ValueError as err:
        return RunSummary(run.root, 0, 0, False, "", problem=str(err).split(" — ")[0], owner=owner)
    if manifest is None:
        return RunSummary(run.root, 0, 0, False, "", problem="no manifest.json", owner=owner)
    num_clips = int((manifest.get("inputs") or {}).get("num_clips") or len(manifest.get("clips") or []))
    done = 0
    for record in (manifest.get("clips") or [])[:num_clips]:
        if not record or record.get("status") != "done":
            break
        done += 1
    video = manifest.get("video") or {}
    has_video = run.video_path.is_file() and video.get("clips") == num_clips
    return RunSummary(run.root, num_clips, done, has_video, str(manifest.get("updated_at", "")), owner=owner)


def list_runs(outputs: str | Path) -> list[RunSummary]:
    """Run directories directly under ``outputs`` (those with a manifest.json), newest first."""
    outputs = Path(outputs)
    if not outputs.is_dir():
        return []
    found = [p for p in outputs.iterdir() if p.is_dir() and (p / "manifest.json").is_file()]
    found.sort(key=lambda p: (p / "manifest.json").stat().st_mtime, reverse=True)
    return [summarize_run(p) for p in found]


def visible_runs(outputs: str | Path, viewer: str | None, shared: bool = False) -> list[RunSummary]:
    """The runs a browser session sees: its own, and every other one (read only) when runs are shared."""
    return [r for r in list_runs(outputs) if shared or (r.owner is not None and r.owner == viewer)]


def run_inputs(run_dir: str | Path) -> tuple[Path, list[ClipCondition]]:
    """The first frame and clip conditions a run was made from, to resume or redo it.

    The condition list recorded in the manifest's config (``cond``) is read when it still exists;
    otherwise the per-clip inputs recorded in the manifest are used.

    Raises:
        ValueError: not a run directory, or its inputs are gone (message names what is missing).
    """
    run = RunDir(run_dir)
    manifest = run.load_manifest()
    if manifest is None:
        raise ValueError(f"{run.root}: not a run directory (no manifest.json)")
    image_info = (manifest.get("inputs") or {}).get("image") or {}
    num_clips = int((manifest.get("inputs") or {}).get("num_clips") or 0)
    if not image_info.get("path") or not num_clips:
        raise ValueError(f"{run.root}: the manifest records no inputs (the run never started a clip) — start a "
                         "new run instead")
    image = Path(image_info["path"])
    cond = (manifest.get("config") or {}).get("cond")
    clips: list[ClipCondition] = []
    if cond and Path(cond).is_file():
        clips, problems = load_conditions(cond)
        if problems:
            raise ValueError("; ".join(problems))
        clips = clips[:num_clips]
    else:
        for index, record in enumerate((manifest.get("clips") or [])[:num_clips]):
            inputs = (record or {}).get("inputs") or {}
            if not inputs.get("depth") or not inputs.get("track"):
                raise ValueError(f"{run.root}: the manifest records no inputs for clip {index} — start a new run")
            clips.append(ClipCondition(index, inputs.get("text", ""), Path(inputs["depth"]["path"]),
                                       Path(inputs["track"]["path"])))
    missing = [str(p) for p in [image] + [q for c in clips for q in (c.depth, c.track)] if not p.is_file()]
    if missing:
        raise ValueError(f"{run.root}: input file(s) of this run are gone: {', '.join(missing[:3])}"
                         + (" ..." if len(missing) > 3 else "") + " — restore them or start a new run")
    if len(clips) < num_clips:
        raise ValueError(f"{run.root}: its condition list has {len(clips)} clip(s), the run {num_clips}")
    return image, clips


def zip_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """The whole run folder as ``out_dir/<run name>.zip`` (written atomically; the lock file left out)."""
    run = RunDir(run_dir)
    out = Path(out_dir) / f"{run.root.name}.zip"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(run.root.rglob("*")):
            if path.is_file() and path != run.lock_path and ".tmp" not in path.name:
                archive.write(path, Path(run.root.name) / path.relative_to(run.root))
        archive.comment = f"LongVie run {run.root.name}, zipped {stamp}".encode()
    return out
