"""Which uploaded depth and track video goes with which clip, and what will be done to each.

Clip numbers start at 0 everywhere in the app (the page, the run folder's ``clips/clip_000.mp4``,
``inputs/depth_00.mp4`` and ``run.log``), as in a condition folder: ``utils/prepare_controls.py``,
the synthetic example and the app's own run inputs write clip ``i``'s controls as
``depth_{i:02d}.mp4`` / ``track_{i:02d}.mp4`` (:data:`CONTROL_NAME`). Uploaded controls are read
back by that rule: the number in a file's name is its clip (``depth_03.mp4`` -> clip 3). When every
file of a kind carries a different number they are paired by it (``track_03.mp4`` goes with
``depth_03.mp4`` whatever the upload order); numbers 1..n with no 0 are taken as counted from 1
(said in the page). Otherwise the files of that kind are used in upload order. The server's
temporary path of an upload is never used for ordering, only the user's own file name (gradio keeps
it as the last component of that path).

Each control is probed (frames, size; the container header, milliseconds) and flagged when the
sampler will change it, in the words of its own rules: resized by
:func:`longvie.media.video_io.resolve_resize_mode` (stretched, or short side + centre crop), cut to
the first ``num_frames`` frames, or too short to use.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..media.video_io import RESIZE_MODES, probe_video, resolve_resize_mode

__all__ = ["CONTROL_NAME", "KINDS", "clip_number", "ControlFile", "ClipPair", "Pairing", "order_by_clip",
           "pair_controls", "render_pairing", "display_name"]

# Clip i's control videos in a condition folder (utils/prepare_controls.py, controls/depth_video.py,
# controls/track_video.py, examples/synthetic.py, the app's run inputs): the rule read back here.
CONTROL_NAME = "{kind}_{index:02d}{suffix}"
KINDS = ("depth", "track")
# "depth_03", "scene-depth3", "track 12 (1)" -> the number after the kind's name; else the last number.
_AFTER_KIND = re.compile(r"(?:depth|track|dense|sparse)[^0-9a-z]*(\d+)", re.IGNORECASE)
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def display_name(path: str | Path) -> str:
    """The user's file name of an upload (gradio stores uploads as ``<cache>/<hash>/<name>``)."""
    return Path(str(path)).name


def clip_number(name: str | Path) -> int | None:
    """The clip number a control video's file name carries (``depth_03.mp4`` -> 3), or None."""
    stem = Path(str(name)).stem
    match = _AFTER_KIND.search(stem) or _LAST_NUMBER.search(stem)
    return int(match.group(1)) if match else None


def order_by_clip(paths: Sequence[str | Path], kind: str) -> tuple[dict[int, Path], str, list[str]]:
    """``({clip: path}, how, notes)`` for the uploaded files of one kind (see the module docstring).

    ``how`` is "file numbers" or "upload order"; notes explain a fallback or a count from 1.
    """
    paths = [Path(str(p)) for p in paths]
    if not paths:
        return {}, "none", []
    numbers = [clip_number(display_name(p)) for p in paths]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        notes = []
        if 0 not in numbers and sorted(numbers) == list(range(1, len(numbers) + 1)):
            numbers = [n - 1 for n in numbers]
            notes.append(f"{kind} file numbers start at 1: {display_name(paths[numbers.index(0)])} is clip 0")
        return dict(zip(numbers, paths)), "file numbers", notes
    if len(paths) > 1:
        missing = [display_name(p) for p, n in zip(paths, numbers) if n is None]
        repeated = sorted({n for n in numbers if n is not None and numbers.count(n) > 1})
        why = (f"{', '.join(missing[:3])} carr{'ies' if len(missing) == 1 else 'y'} no number" if missing
               else f"two {kind} files carry the number {repeated[0]}")
        notes = [f"{kind} videos paired with clips in upload order ({why})"]
    else:
        notes = []
    return dict(enumerate(paths)), "upload order", notes


@dataclass
class ControlFile:
    """One control video as the page shows it."""

    path: Path
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    changes: list[str] = field(default_factory=list)  # what the sampler will do to it, in words
    problem: str | None = None  # why it cannot be used

    @property
    def name(self) -> str:
        return display_name(self.path)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}" if self.width else "?"


@dataclass
class ClipPair:
    clip: int
    depth: ControlFile | None
    track: ControlFile | None

    @property
    def complete(self) -> bool:
        return self.depth is not None and self.track is not None


@dataclass
class Pairing:
    """Controls paired with clips. ``clips`` counts the usable clips (0, 1, ... with both videos)."""

    rows: list[ClipPair] = field(default_factory=list)
    how: dict = field(default_factory=dict)  # kind -> "file numbers" | "upload order" | "none"
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # in page words, one per line

    @property
    def clips(self) -> int:
        count = 0
        for row in self.rows:
            if row.clip != count or not row.complete:
                break
            count += 1
        return count

    @property
    def depth(self) -> list[Path]:
        return [row.depth.path for row in self.rows[:self.clips]]

    @property
    def track(self) -> list[Path]:
        return [row.track.path for row in self.rows[:self.clips]]


def _describe_changes(info: ControlFile, num_frames: int, height: int, width: int, resize: str) -> None:
    if info.frames is not None and num_frames:
        if info.frames < num_frames:
            info.problem = f"{info.frames} frames, a clip needs {num_frames}"
        elif info.frames > num_frames:
            info.changes.append(f"cut: its first {num_frames} of {info.frames} frames are used")
    if info.width and (info.width, info.height) != (width, height) and height and width and resize in RESIZE_MODES:
        rule = resolve_resize_mode(info.height, info.width, height, width, resize)
        how = "stretched" if rule == "stretch" else "short side scaled, then centre-cropped"
        info.changes.append(f"resized {info.width}x{info.height} -> {width}x{height} ({how})")


def pair_controls(depth: Sequence[str | Path], track: Sequence[str | Path], num_frames: int | None = None,
                  height: int | None = None, width: int | None = None, resize: str = "auto",
                  probe: Callable[[Path], tuple[int, int, int]] = probe_video, order: str = "names") -> Pairing:
    """Pair depth and track videos with clips and describe each (see the module docstring).

    ``num_frames``/``height``/``width`` are the clip settings the controls are checked against
    (None: not checked). ``order``: "names" (uploads: by the numbers in the file names, else upload
    order) or "given" (already in clip order, e.g. a cond.json's list). Problems are in the page's
    words (file names, never server paths).
    """
    if order not in ("names", "given"):
        raise ValueError(f"order must be 'names' or 'given', got {order!r}")
    pairing = Pairing()
    by_kind = {}
    for kind, paths in (("depth", depth), ("track", track)):
        if order == "given":
            mapping, how, notes = dict(enumerate(Path(str(p)) for p in paths or [])), "cond.json order", []
            how = how if mapping else "none"
        else:
            mapping, how, notes = order_by_clip(paths or [], kind)
        by_kind[kind] = mapping
        pairing.how[kind] = how
        pairing.notes += notes
    probed: dict[Path, ControlFile] = {}

    def describe(path: Path) -> ControlFile:
        info = ControlFile(path)
        try:
            info.frames, info.width, info.height = probe(path)
        except (ValueError, OSError):
            info.problem = "cannot be read as a video"
            return info
        _describe_changes(info, num_frames or 0, height or 0, width or 0, resize)
        return info

    numbers = sorted(set(by_kind["depth"]) | set(by_kind["track"]))
    for number in numbers:
        files = {}
        for kind in KINDS:
            path = by_kind[kind].get(number)
            files[kind] = None if path is None else probed.setdefault(path, describe(path))
        pairing.rows.append(ClipPair(number, files["depth"], files["track"]))

    expected = 0
    for row in pairing.rows:
        if row.clip != expected:
            missing = ", ".join(str(n) for n in range(expected, row.clip))
            pairing.problems.append(f"no depth or track video for clip {missing}: clips run 0, 1, 2, ... "
                                    f"(depth_00.mp4 is clip 0), so clip {row.clip} and after cannot be used")
            break
        for kind in KINDS:
            info = getattr(row, kind)
            if info is None:
                pairing.problems.append(f"clip {row.clip}: no {kind} video — upload one {kind} video per clip")
            elif info.problem:
                pairing.problems.append(f"clip {row.clip} {kind} video {info.name}: {info.problem}")
        expected += 1
    return pairing


def render_pairing(pairing: Pairing) -> str:
    """The pairing as an HTML table (clip, depth file, track file, frames, size, what changes)."""
    if not pairing.rows:
        return '<div class="lv-pairing" id="pairing-table"><p>No control videos yet.</p></div>'
    head = ("<tr><th>clip</th><th>depth video</th><th>track video</th><th>frames</th><th>size</th>"
            "<th>adjusted</th></tr>")
    body = []
    for row in pairing.rows:
        cells = [f"<td>{row.clip}</td>"]
        for kind in KINDS:
            info = getattr(row, kind)
            name = html.escape(info.name) if info else '<span class="lv-bad">missing</span>'
            cells.append(f'<td class="lv-{kind}">{name}</td>')
        files = [f for f in (row.depth, row.track) if f is not None]
        cells.append("<td>" + " / ".join(str(f.frames) if f.frames is not None else "?" for f in files) + "</td>")
        cells.append("<td>" + " / ".join(f.size for f in files) + "</td>")
        flags = []
        for kind in KINDS:
            info = getattr(row, kind)
            if info is None:
                continue
            if info.problem:
                flags.append(f'<span class="lv-bad">{kind}: {html.escape(info.problem)}</span>')
            flags += [f'<span class="lv-flag">{kind}: {html.escape(c)}</span>' for c in info.changes]
        cells.append("<td>" + ("<br>".join(flags) or "as is") + "</td>")
        bad = not row.complete or any(f.problem for f in files)
        body.append(f'<tr id="pair-{row.clip}" class="{"lv-bad-row" if bad else ""}">{"".join(cells)}</tr>')
    how = "; ".join(f"{kind}: by {how}" for kind, how in pairing.how.items() if how != "none")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in pairing.notes)
    return (f'<div class="lv-pairing" id="pairing-table"><table>{head}{"".join(body)}</table>'
            f'<p class="lv-how">Paired {html.escape(how)}.</p>' + (f"<ul>{notes}</ul>" if notes else "") + "</div>")
