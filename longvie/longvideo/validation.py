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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import LongVieError
from ..controls.captioning import is_placeholder_prompt
from ..media.video_io import RESIZE_MODES, load_image, probe_video, resolve_resize_mode

__all__ = ["InputValidationError", "ClipCondition", "ValidatedInputs", "load_conditions", "validate_inputs",
           "check_clip_settings", "resolve_condition_path", "PATH_RULES"]

CONDITION_KEYS = ("text", "depth", "track")
# How a control-video path of cond.json was found, in the order tried (recorded in the manifest).
PATH_RULES = ("absolute", "relative to cond.json", "relative to the working directory",
              "file name in cond.json's folder")

PROGRESS_MIN_CLIPS = 20  # condition lists at least this long show a progress bar while validated


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


def load_conditions(cond_path: str | Path) -> tuple[list[ClipCondition], list[str]]:
    """Parse cond.json into clip conditions without touching the videos.

    Returns:
        ``(clips, problems)``: the clips that parsed, and a list of problems (empty when valid).
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

    clips, problems = [], []
    for index, entry in enumerate(entries):
        where = f"{cond_path} clip {index}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with keys text, depth, track, got "
                            f"{type(entry).__name__} — fix the entry")
            continue
        missing = [key for key in CONDITION_KEYS if key not in entry]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(missing)} — every clip needs "
                            "\"text\" (prompt), \"depth\" and \"track\" (video paths relative to the JSON file)")
            continue
        bad_types = [key for key in CONDITION_KEYS if not isinstance(entry[key], str) or not entry[key].strip()]
        if bad_types:
            problems.append(f"{where}: {', '.join(bad_types)} must be non-empty string(s) — fix the entry")
            continue
        found = {key: resolve_condition_path(entry[key], cond_path.parent) for key in ("depth", "track")}
        clips.append(ClipCondition(index=index, text=entry["text"], depth=found["depth"][0], track=found["track"][0],
                                   found_by={key: value[1] for key, value in found.items()},
                                   tried={key: value[2] for key, value in found.items()},
                                   placeholder=is_placeholder_prompt(entry)))
    return clips, problems


def _check_control_video(path: Path, kind: str, clip: int, num_frames: int | None,
                         problems: list[str], tried: Sequence[Path] = ()) -> tuple[int, int, int] | None:
    """Check one control video; returns its (width, height, frame count) when it decodes."""
    where = f"clip {clip} {kind} video {path}"
    if not path.is_file():
        places = "; ".join(str(p) for p in tried) if tried else str(path)
        problems.append(f"{where}: file not found (tried {places}) — fix the \"{kind}\" path "
                        "in cond.json (relative to the JSON file) or create the video")
        return None
    try:
        frames, width, height = probe_video(path)  # container header where it has them: ms per video
    except ValueError as err:
        problems.append(f"{where}: {err}")
        return None
    if num_frames is not None and frames < num_frames:
        problems.append(f"{where}: has {frames} frames, needs at least num_frames={num_frames} — use a control "
                        f"video of {num_frames} frames per clip (clip i = frames 80i..80i+80 of the full video)")
    return width, height, frames


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
) -> ValidatedInputs:
    """Check every input of a long-video run and raise one error listing every problem.

    Args:
        image: the first frame (PNG/JPEG).
        cond: cond.json (SPEC §4).
        num_frames, height, width: the clip shape the videos are brought to.
        resize: "auto", "crop" or "stretch" (how sizes that differ are handled; reported in the notes).
        num_clips: use only the first ``num_clips`` clips of the list (all when None).
        progress: show a progress bar while checking the control videos of long lists.

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

    clips, cond_problems = load_conditions(cond)
    problems += cond_problems
    if num_clips is not None:
        if num_clips < 1:
            problems.append(f"--clips {num_clips}: must be at least 1")
        elif not cond_problems and num_clips > len(clips):
            problems.append(f"--clips {num_clips}: {cond} has only {len(clips)} clip(s) — lower --clips or add "
                            "clips to the condition list")
        clips = clips[:max(num_clips, 0)]

    video_sizes: dict[tuple[int, int], int] = {}
    longer = []  # (path, frames) of control videos with more than num_frames frames
    from tqdm.auto import tqdm

    bar = tqdm(clips, desc="checking control videos", unit="clip", leave=False, dynamic_ncols=True,
               disable=not progress or len(clips) < PROGRESS_MIN_CLIPS)
    for clip in bar:
        for kind, path in (("depth", clip.depth), ("track", clip.track)):
            info = _check_control_video(path, kind, clip.index, num_frames if frames_ok else None, problems,
                                        clip.tried.get(kind, ()))
            if info is None:
                continue
            video_sizes[info[:2]] = video_sizes.get(info[:2], 0) + 1
            if frames_ok and info[2] > num_frames:
                longer.append((path, info[2]))
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
