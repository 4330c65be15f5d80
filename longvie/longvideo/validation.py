"""Input validation for long-video generation, run before any model is loaded.

Every problem is collected and reported at once in one :class:`InputValidationError`, each naming
the file and the fix. Adjustments that are not errors (resizing a control video, using only the
first ``num_frames`` frames of a longer one) are returned as notes.

The condition list (cond.json, SPEC §4) is a JSON array with one object per clip::

    [{"text": "a rider in the snow ...", "depth": "depth_00.mp4", "track": "track_00.mp4"}, ...]

``depth`` and ``track`` paths are relative to the JSON file (absolute paths are allowed); other keys
are ignored. Upstream's own cond.json files hold paths relative to the working directory
(``./example/ride_horse/depth_00.mp4``), so a relative path that does not exist next to the JSON file
is looked up by these rules, in order (:data:`PATH_RULES`): relative to the JSON file's folder, relative
to the working directory, then its file name inside the JSON file's folder. The rule that found each
file is kept (``ClipCondition.found_by``) and written to the run manifest; a file found nowhere is
reported with every place tried.

Long lists are cheap: each distinct path of cond.json is resolved once, and each distinct file is
probed once (container header and first frame; cached by resolved path and ``os.stat``, so a file
named by 100,000 clips costs one probe); a problem with a file is reported once, naming the clips
that use it. A progress bar (stderr) appears when checking takes longer than
:data:`PROGRESS_DELAY_S`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import LongVieError
from ..controls.captioning import is_placeholder_prompt
from ..media.video_io import RESIZE_MODES, load_image, probe_video, resolve_resize_mode

__all__ = ["InputValidationError", "ClipCondition", "ValidatedInputs", "load_conditions", "validate_inputs",
           "check_clip_settings", "resolve_condition_path", "PATH_RULES"]

CONDITION_KEYS = ("text", "depth", "track")
# How a control-video path of cond.json was found, in the order tried (recorded in the manifest).
PATH_RULES = ("absolute", "relative to cond.json", "relative to the working directory",
              "file name in cond.json's folder")

PROGRESS_MIN_CLIPS = 20  # condition lists at least this long show a progress bar while validated ...
PROGRESS_DELAY_S = 1.0   # ... once checking has taken this long (tqdm's delay: quick checks print nothing)


class InputValidationError(LongVieError, ValueError):
    """One or more inputs are unusable. ``problems`` lists them; the message shows them all."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) with the inputs, nothing was generated:\n{lines}")


@dataclass(frozen=True)
class ClipCondition:
    """One clip's conditions: its prompt and its depth (dense) and track (sparse) videos."""

    index: int
    text: str
    depth: Path
    track: Path
    # {"depth": rule, "track": rule}: the PATH_RULES entry that found each file ("not found" when none did)
    found_by: dict = field(default_factory=dict, compare=False)
    # {"depth": (paths tried, ...), "track": (...)}: every place looked at, for the not-found message
    tried: dict = field(default_factory=dict, compare=False, repr=False)
    # a placeholder prompt written by utils/prepare_controls.py (controls.captioning.is_placeholder_prompt)
    placeholder: bool = field(default=False, compare=False)


def resolve_condition_path(value: str, cond_dir: Path, cwd: Path | None = None) -> tuple[Path, str, tuple[Path, ...]]:
    """Find a cond.json path: ``(path, rule, places tried)``.

    ``rule`` is one of :data:`PATH_RULES`, or "not found" (then ``path`` is the JSON-relative candidate).
    Candidates in order: an absolute path as is; relative to ``cond_dir``; relative to ``cwd`` (the
    working directory by default; upstream's own cond.json files are written that way); the file name
    alone inside ``cond_dir``.
    """
    raw = Path(value)
    if raw.is_absolute():
        candidates = [(raw, PATH_RULES[0]), (cond_dir / raw.name, PATH_RULES[3])]
    else:
        cwd = Path.cwd() if cwd is None else Path(cwd)
        candidates = [(cond_dir / raw, PATH_RULES[1]), (cwd / raw, PATH_RULES[2]), (cond_dir / raw.name, PATH_RULES[3])]
    tried: list[Path] = []
    for candidate, rule in candidates:
        candidate = candidate.resolve()
        if candidate in tried:
            continue
        tried.append(candidate)
        if candidate.is_file():
            return candidate, rule, tuple(tried)
    return tried[0], "not found", tuple(tried)


@dataclass
class ValidatedInputs:
    """Inputs that passed validation. ``notes`` lists adjustments made to them (resizes, trims)."""

    image: Path
    cond: Path
    clips: list[ClipCondition]
    notes: list[str] = field(default_factory=list)


def check_clip_settings(num_frames: int, height: int, width: int, history_frames: int = 8,
                        resize: str = "auto") -> list[str]:
    """Shape rules of Wan2.1-I2V (VAE x4 in time, x8 in space, patch 2) as a list of problems."""
    problems = []
    if not isinstance(num_frames, int) or num_frames < 5 or (num_frames - 1) % 4:
        problems.append(f"num_frames={num_frames}: must be 4k+1 and at least 5 (81 for the released model) — "
                        "fix the config's sampling.num_frames")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % 16:
            problems.append(f"{name}={value}: must be a positive multiple of 16 (352 x 640 for the released "
                            f"model) — pass --{name} with a multiple of 16")
    if isinstance(num_frames, int) and not 1 <= history_frames <= num_frames:
        problems.append(f"history_frames={history_frames}: must be between 1 and num_frames={num_frames} "
                        "(8 for the released model) — fix the config's sampling.history_frames")
    if resize not in RESIZE_MODES:
        problems.append(f"--resize {resize!r}: must be one of {', '.join(RESIZE_MODES)}")
    return problems


MAX_LISTED_ENTRY_PROBLEMS = 20  # a broken list of 100,000 entries is reported with its first problems


def load_conditions(cond_path: str | Path, progress: bool = False) -> tuple[list[ClipCondition], list[str]]:
    """Parse cond.json into clip conditions without touching the videos.

    Each distinct path string is looked up once (:func:`resolve_condition_path`), so a list of
    100,000 clips naming the same two videos parses in about a second. ``progress`` shows a bar on
    stderr when parsing takes longer than :data:`PROGRESS_DELAY_S`.

    Returns:
        ``(clips, problems)``: the clips that parsed, and a list of problems (empty when valid; at most
        :data:`MAX_LISTED_ENTRY_PROBLEMS` bad entries are listed, then their count).
    """
    cond_path = Path(cond_path)
    if not cond_path.is_file():
        return [], [f"{cond_path}: condition list not found — pass --cond with the path of a cond.json "
                    "(a JSON list of {\"text\", \"depth\", \"track\"} objects)"]
    try:
        entries = json.loads(cond_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        return [], [f"{cond_path}: not UTF-8 text ({err}) — save it as UTF-8 JSON"]
    except json.JSONDecodeError as err:
        return [], [f"{cond_path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg} — fix the "
                    "syntax (e.g. a missing comma or quote); check it with `python -m json.tool cond.json`"]
    if not isinstance(entries, list) or not entries:
        kind = type(entries).__name__ if entries != [] else "an empty list"
        return [], [f"{cond_path}: must be a non-empty JSON list of clip objects, got {kind} — write it as "
                    '[{"text": "...", "depth": "depth_00.mp4", "track": "track_00.mp4"}, ...]']

    from tqdm.auto import tqdm

    clips, problems, bad_entries = [], [], 0
    resolved: dict[str, tuple[Path, str, tuple[Path, ...]]] = {}  # one lookup per distinct path string
    cwd = Path.cwd()
    bar = tqdm(entries, desc=f"reading {cond_path.name}", unit="clip", leave=False, dynamic_ncols=True,
               file=sys.stderr, delay=PROGRESS_DELAY_S, mininterval=0.5, disable=not progress)
    for index, entry in enumerate(bar):
        try:  # the usual entry first, in one step; anything else gets its message below
            text, depth, track = entry["text"], entry["depth"], entry["track"]
            usual = (type(text) is str and type(depth) is str and type(track) is str and text.strip()
                     and depth.strip() and track.strip())
        except (TypeError, KeyError, IndexError):
            usual = False
        if not usual:
            problem = _entry_problem(entry, f"{cond_path} clip {index}")
            if problem is not None:
                bad_entries += 1
                if bad_entries <= MAX_LISTED_ENTRY_PROBLEMS:
                    problems.append(problem)
                continue
        found = []
        for value in (depth, track):
            if value not in resolved:
                resolved[value] = resolve_condition_path(value, cond_path.parent, cwd)
            found.append(resolved[value])
        clips.append(ClipCondition(index=index, text=text, depth=found[0][0], track=found[1][0],
                                   found_by={"depth": found[0][1], "track": found[1][1]},
                                   tried={"depth": found[0][2], "track": found[1][2]},
                                   placeholder=is_placeholder_prompt(entry)))
    bar.close()
    if bad_entries > MAX_LISTED_ENTRY_PROBLEMS:
        problems.append(f"{cond_path}: {bad_entries - MAX_LISTED_ENTRY_PROBLEMS:,} more clip entries have problems "
                        f"({bad_entries:,} of {len(entries):,} in all) — fix the entries listed above the same way")
    return clips, problems


def _entry_problem(entry, where: str) -> str | None:
    """What is wrong with one cond.json entry (None when nothing is)."""
    if not isinstance(entry, dict):
        return (f"{where}: must be an object with keys text, depth, track, got {type(entry).__name__} — fix the "
                "entry")
    missing = [key for key in CONDITION_KEYS if key not in entry]
    if missing:
        return (f"{where}: missing key(s) {', '.join(missing)} — every clip needs \"text\" (prompt), \"depth\" "
                "and \"track\" (video paths relative to the JSON file)")
    bad_types = [key for key in CONDITION_KEYS if not isinstance(entry[key], str) or not entry[key].strip()]
    if bad_types:
        return f"{where}: {', '.join(bad_types)} must be non-empty string(s) — fix the entry"
    return None


_PROBES: dict = {}  # (resolved path, stat) -> (frames, width, height) or the problem text
_PROBES_MAX = 4096


def _probe_cached(path: Path) -> tuple[int, int, int] | str:
    """``probe_video`` of ``path`` once per file version (keyed by resolved path and ``os.stat``), or
    the problem text when it is missing or unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "missing"
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _PROBES:
        if len(_PROBES) >= _PROBES_MAX:
            _PROBES.clear()
        try:
            _PROBES[key] = probe_video(path)  # container header where it has them: ms per video
        except ValueError as err:
            _PROBES[key] = str(err)
    return _PROBES[key]


def _clip_list(indices: Sequence[int]) -> str:
    """'clip 3', or 'clips 0, 1, 2 and 99,997 more' for a file named by many clips."""
    if len(indices) == 1:
        return f"clip {indices[0]}"
    shown = ", ".join(str(i) for i in indices[:3])
    return f"clips {shown}" + (f" and {len(indices) - 3:,} more" if len(indices) > 3 else "")


def _check_control_video(path: Path, kind: str, clips: Sequence[int], num_frames: int | None,
                         problems: list[str], tried: Sequence[Path] = ()) -> tuple[int, int, int] | None:
    """Check one control video (named by ``clips``); returns its (frames, width, height) when it decodes."""
    where = f"{_clip_list(clips)} {kind} video {path}"
    info = _probe_cached(path)
    if info == "missing":
        places = "; ".join(str(p) for p in tried) if tried else str(path)
        problems.append(f"{where}: file not found (tried {places}) — fix the \"{kind}\" path "
                        "in cond.json (relative to the JSON file) or create the video")
        return None
    if isinstance(info, str):
        problems.append(f"{where}: {info}")
        return None
    frames = info[0]
    if num_frames is not None and frames < num_frames:
        problems.append(f"{where}: has {frames} frames, needs at least num_frames={num_frames} — use a control "
                        f"video of {num_frames} frames per clip (clip i = frames 80i..80i+80 of the full video)")
    return info


def _resize_note(what: str, sizes: dict, height: int, width: int, resize: str) -> str | None:
    """One note for all source sizes that differ from the target size (None when none differ)."""
    parts = [f"{count} {what} at {w}x{h} ({_resize_rule(resize, h, w, height, width)})"
             for (w, h), count in sorted(sizes.items()) if (w, h) != (width, height)]
    if not parts:
        return None
    return f"{', '.join(parts)} resized to {width}x{height}"


def _resize_rule(resize: str, src_height: int, src_width: int, height: int, width: int) -> str:
    """How ``resize`` treats one source size, in words."""
    if resize not in RESIZE_MODES:
        return f"unknown rule {resize!r}"
    rule = resolve_resize_mode(src_height, src_width, height, width, resize)
    prefix = "auto: " if resize == "auto" else ""
    if rule == "crop":
        return prefix + "resize the short side + centre crop; --resize stretch distorts instead"
    return prefix + "plain resize (stretch), as upstream inference"


def validate_inputs(
    image: str | Path,
    cond: str | Path,
    num_frames: int = 81,
    height: int = 352,
    width: int = 640,
    resize: str = "auto",
    num_clips: int | None = None,
    history_frames: int = 8,
    progress: bool = True,
    check_count: Callable[[int], list[str]] | None = None,
) -> ValidatedInputs:
    """Check every input of a long-video run and raise one error listing every problem.

    Args:
        image: the first frame (PNG/JPEG).
        cond: cond.json (SPEC §4).
        num_frames, height, width: the clip shape the videos are brought to.
        resize: "auto", "crop" or "stretch" (how sizes that differ are handled; reported in the notes).
        num_clips: use only the first ``num_clips`` clips of the list (all when None).
        progress: show a progress bar (stderr) while checking the control videos of long lists, once
            checking has taken :data:`PROGRESS_DELAY_S` seconds.
        check_count: ``check_count(number of clips) -> problems``, called as soon as cond.json is parsed
            (e.g. the disk space a run of that many clips needs); when it finds problems, the control
            videos are not checked, so that a run that cannot start is refused within seconds.

    Raises:
        InputValidationError: with every problem found (settings, cond.json, image, videos).
    """
    image, cond = Path(image), Path(cond)
    problems = check_clip_settings(num_frames, height, width, history_frames, resize)
    frames_ok = not any(p.startswith("num_frames=") for p in problems)  # else frame counts mean nothing
    notes: list[str] = []

    try:
        first = load_image(image)
    except ValueError as err:
        problems.append(f"first image: {err}")
    else:
        if first.size != (width, height):
            notes.append(f"first image {image} at {first.size[0]}x{first.size[1]} resized to {width}x{height} "
                         f"({_resize_rule(resize, first.size[1], first.size[0], height, width)})")

    clips, cond_problems = load_conditions(cond, progress=progress)
    problems += cond_problems
    if num_clips is not None:
        if num_clips < 1:
            problems.append(f"--clips {num_clips}: must be at least 1")
        elif not cond_problems and num_clips > len(clips):
            problems.append(f"--clips {num_clips}: {cond} has only {len(clips)} clip(s) — lower --clips or add "
                            "clips to the condition list")
        clips = clips[:max(num_clips, 0)]

    if check_count is not None and not cond_problems and clips:
        early = check_count(len(clips))
        if early:
            raise InputValidationError(problems + early)

    # Each distinct file once, whichever and however many clips name it.
    users: dict[tuple[str, Path], list[int]] = {}
    tried: dict[tuple[str, Path], Sequence[Path]] = {}
    for clip in clips:
        for kind, path in (("depth", clip.depth), ("track", clip.track)):
            key = (kind, path)
            if key not in users:
                users[key], tried[key] = [], clip.tried.get(kind, ())
            users[key].append(clip.index)
    video_sizes: dict[tuple[int, int], int] = {}
    longer = []  # (path, frames) of control videos with more than num_frames frames
    from tqdm.auto import tqdm

    bar = tqdm(users.items(), desc="checking control videos", unit="file", leave=False, dynamic_ncols=True,
               file=sys.stderr, delay=PROGRESS_DELAY_S, disable=not progress or len(clips) < PROGRESS_MIN_CLIPS)
    for (kind, path), indices in bar:
        info = _check_control_video(path, kind, indices, num_frames if frames_ok else None, problems,
                                    tried[(kind, path)])
        if info is None:
            continue
        size = (info[1], info[2])
        video_sizes[size] = video_sizes.get(size, 0) + len(indices)
        if frames_ok and info[0] > num_frames:
            longer.append((path, info[0]))
    bar.close()
    note = _resize_note("control video(s)", video_sizes, height, width, resize)
    if note:
        notes.append(note)
    if longer:
        notes.append(f"{len(longer)} control video(s) have more than num_frames={num_frames} frames (e.g. "
                     f"{longer[0][0].name}: {longer[0][1]}); the first {num_frames} of each are used")

    moved: dict[str, int] = {}
    for clip in clips:
        for kind in ("depth", "track"):
            rule = clip.found_by.get(kind)
            if rule in PATH_RULES[2:]:
                moved[rule] = moved.get(rule, 0) + 1
    for rule, count in moved.items():
        notes.append(f"{count} control video path(s) of {cond} not found relative to it were found {rule} "
                     "(recorded in the manifest)")

    if problems:
        raise InputValidationError(problems)
    return ValidatedInputs(image=image.resolve(), cond=cond.resolve(), clips=clips, notes=notes)
