"""What the page sends, checked and turned into a condition folder the sampler reads.

Every check here returns messages meant for the page (file named, fix stated); nothing here raises
on bad user input except :class:`AppInputError`, which carries those messages.

A condition folder (SPEC §4; the layout of ``utils/prepare_controls.py``) holds ``first.png`` (or
another image), ``depth_XX.mp4`` / ``track_XX.mp4`` per clip and ``cond.json``
(``[{"text", "depth", "track"}, ...]``, paths relative to the JSON file).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from ..longvideo.validation import load_conditions
from ..media.atomic import atomic_write_json
from ..media.video_io import load_image
from .pairing import CONTROL_NAME

__all__ = ["AppInputError", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "PLACEHOLDER_PREFIX", "parse_prompt_table",
           "prompt_rows", "check_suffix", "read_condition_folder", "stage_condition_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
PLACEHOLDER_PREFIX = "PLACEHOLDER"  # utils/prepare_controls.py's captions for the user to replace


class AppInputError(ValueError):
    """Inputs from the page that cannot be used; ``problems`` are shown in the page, one per line."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from an emptied pandas cell
        return ""
    return str(value).strip()


def prompt_rows(texts: Sequence[str]) -> list[list]:
    """The prompt table's value for ``texts``: rows ``[clip, prompt]``."""
    return [[index, text] for index, text in enumerate(texts)]


def parse_prompt_table(rows, num_controls: int | None = None) -> list[str]:
    """The per-clip prompts of the page's table (rows ``[clip, prompt]``, or a pandas DataFrame).

    Trailing empty rows are dropped. The number of prompts is the number of clips to generate; it
    may be below ``num_controls`` (the depth/track pairs available), never above.

    Raises:
        AppInputError: no prompt, an empty prompt before the last one, a clip number out of order,
            a placeholder caption left in, or more prompts than control pairs.
    """
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # pandas DataFrame
        rows = rows.values.tolist()
    rows = [list(row) if isinstance(row, (list, tuple)) else [row] for row in (rows or [])]
    cells = [[_cell(value) for value in row] for row in rows]
    while cells and not any(cells[-1]):
        cells.pop()
    if not cells:
        raise AppInputError(["prompt table: no prompt — write one prompt per clip (one row each)"])
    problems, texts = [], []
    for position, row in enumerate(cells):
        clip, text = (row[0], row[1]) if len(row) >= 2 else (str(position), row[0] if row else "")
        if clip and clip != str(position):
            try:
                number = int(float(clip))
            except ValueError:
                number = None
            if number != position:
                problems.append(f"prompt table row {position + 1}: clip number {clip!r}, expected {position} — "
                                "keep the clip column 0, 1, 2, ... (rows are clips in order)")
        if not text:
            problems.append(f"prompt table row {position + 1} (clip {position}): empty prompt — describe the clip "
                            "(scene, subjects, motion, camera)")
        elif text.startswith(PLACEHOLDER_PREFIX):
            problems.append(f"prompt table row {position + 1} (clip {position}): still the placeholder caption — "
                            "replace it with a description of the clip")
        texts.append(text)
    if num_controls is not None and len(texts) > num_controls:
        problems.append(f"prompt table: {len(texts)} prompts but only {num_controls} depth/track pair(s) — "
                        f"delete rows or add control videos (one depth and one track video per clip)")
    if problems:
        raise AppInputError(problems)
    return texts


def check_suffix(path: str | Path | None, suffixes: Sequence[str], what: str) -> list[str]:
    """A problem when ``path`` does not end in one of ``suffixes`` (e.g. a PDF given as the first frame)."""
    if path is None:
        return []
    name = Path(path).name
    if Path(name).suffix.lower() not in suffixes:
        return [f"{what} {name}: wrong file type — expected {', '.join(suffixes)}"]
    return []


def read_condition_folder(folder: str | Path, allowed=None) -> tuple[Path | None, list[Path], list[Path], list[str]]:
    """``(first image or None, depth videos, track videos, prompts)`` of a condition folder.

    ``allowed`` (:class:`longvie.app.access.AllowedDirs`): every file the folder's cond.json points
    to must lie inside these folders too (a cond.json may name absolute or ``..`` paths).

    Raises:
        AppInputError: not a folder, no or broken cond.json, files outside the allowed folders
            (messages name files, not server folders).
    """
    folder = Path(str(folder).strip()).expanduser()
    if not str(folder).strip() or not folder.is_dir():
        raise AppInputError([f"condition folder {folder.name or folder}: not found — give a folder with cond.json, "
                             "first.png and the control videos (e.g. one made in the Driving video tab)"])
    clips, problems = load_conditions(folder / "cond.json")
    if problems:
        shown = str(folder.resolve())
        raise AppInputError([p.replace(shown, folder.name).replace(str(folder), folder.name)
                             .split(" — pass --cond")[0] for p in problems])
    image = next((folder / f"first{s}" for s in IMAGE_SUFFIXES if (folder / f"first{s}").is_file()), None)
    if allowed is not None:
        from .access import NotAllowedError

        problems = []
        for clip in clips:
            for kind in ("depth", "track"):
                try:
                    allowed.check_file(getattr(clip, kind), f"clip {clip.index} {kind} video")
                except NotAllowedError as err:
                    problems.append(str(err))
        if problems:
            raise AppInputError(problems)
    return image, [c.depth for c in clips], [c.track for c in clips], [c.text for c in clips]


def stage_condition_folder(out: str | Path, image: str | Path, depth: Sequence[str | Path],
                           track: Sequence[str | Path], texts: Sequence[str]) -> Path:
    """Copy the inputs of a run into ``out`` as a condition folder; returns its cond.json.

    Only the first ``len(texts)`` depth/track pairs are used. Checks file kinds and counts (the
    sampler's :func:`~longvie.longvideo.validation.validate_inputs` checks the contents after).

    Raises:
        AppInputError: a missing or wrong-type file, or unequal numbers of depth and track videos.
    """
    problems = []
    if image is None:
        problems.append("first frame: missing — upload an image (PNG/JPEG) or pick a condition folder with first.png")
    problems += check_suffix(image, IMAGE_SUFFIXES, "first frame")
    depth, track = [Path(p) for p in depth or []], [Path(p) for p in track or []]
    if not depth or not track:
        problems.append("control videos: missing — upload one depth and one track video per clip, extract them "
                        "from a driving video, or pick a condition folder")
    elif len(depth) != len(track):
        problems.append(f"control videos: {len(depth)} depth but {len(track)} track video(s) — give one of each "
                        "per clip")
    for kind, paths in (("depth", depth), ("track", track)):
        for path in paths:
            problems += check_suffix(path, VIDEO_SUFFIXES, f"{kind} video")
    if len(texts) > min(len(depth), len(track)) and depth and track:
        problems.append(f"prompt table: {len(texts)} prompts but only {min(len(depth), len(track))} depth/track "
                        "pair(s) — delete rows or add control videos")
    if not problems:
        try:
            load_image(image)
        except ValueError:
            problems.append(f"first frame {Path(image).name}: cannot be read as an image — upload a PNG or JPEG")
    if problems:
        raise AppInputError(problems)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = out / f"first{Path(image).suffix.lower()}"
    shutil.copyfile(image, first)
    entries = []
    for index, text in enumerate(texts):
        names = []
        for kind, source in (("depth", depth[index]), ("track", track[index])):
            name = CONTROL_NAME.format(kind=kind, index=index, suffix=source.suffix.lower())
            shutil.copyfile(source, out / name)
            names.append(name)
        entries.append({"text": text, "depth": names[0], "track": names[1]})
    atomic_write_json(out / "cond.json", entries)
    return out / "cond.json"



# Settings fields of the page, named as the page labels them.
SETTING_LABELS = {"seed": "Seed", "steps": "Steps", "cfg": "CFG", "height": "Height", "width": "Width",
                  "num_frames": "Frames per clip"}


def _number(value, label: str, problems: list[str], whole: bool = True):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{label} {value!r}: not a number")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        problems.append(f"{label} {value!r}: not a number")
        return None
    if whole:
        if number != int(number):
            problems.append(f"{label} {value!r}: must be a whole number")
            return None
        return int(number)
    return number


def check_page_settings(values: dict, history_frames: int = 8, resize: str = "auto") -> tuple[dict, list[str]]:
    """The page's settings (``SETTING_LABELS`` keys; None or "" keeps the config's value) as numbers,
    and problems in the page's words (the rules are the sampler's :func:`check_clip_settings`)."""
    from ..longvideo.validation import check_clip_settings

    problems: list[str] = []
    numbers = {key: _number(values.get(key), label, problems, whole=key != "cfg")
               for key, label in SETTING_LABELS.items()}
    if numbers["seed"] is not None and not 0 <= numbers["seed"] < 2**63:
        problems.append(f"Seed {numbers['seed']}: must be 0 or more")
    if numbers["steps"] is not None and numbers["steps"] < 1:
        problems.append(f"Steps {numbers['steps']}: must be at least 1 (50 for the released model)")
    frames, height, width = numbers["num_frames"], numbers["height"], numbers["width"]
    for rule in check_clip_settings(frames if frames is not None else 81, height if height is not None else 16,
                                    width if width is not None else 16, history_frames, resize):
        if rule.startswith("num_frames=") and frames is not None:
            problems.append(f"Frames per clip {frames}: must be 4k+1 and at least 5 (9, 13, ..., 81 for the "
                            "released model)")
        elif rule.startswith(("height=", "width=")):
            key = rule.split("=")[0]
            problems.append(f"{SETTING_LABELS[key]} {numbers[key]}: must be a positive multiple of 16 "
                            "(352 x 640 for the released model)")
        elif rule.startswith("history_frames=") and frames is not None:
            problems.append(f"Frames per clip {frames}: must be at least {history_frames} (the frames each clip "
                            "continues from)")
    return numbers, problems


LORA_SUFFIXES = (".safetensors",)


def lora_rows(table) -> list[tuple[str, str]]:
    """``(file, scale)`` of the LoRA table's non-empty rows."""
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    rows = []
    for row in table or []:
        row = list(row) if isinstance(row, (list, tuple)) else [row]
        name = _cell(row[0]) if row else ""
        scale = _cell(row[1]) if len(row) > 1 else ""
        if name:
            rows.append((name, scale))
    return rows


def lora_specs(table, uploaded: dict[str, str | Path], resolve) -> tuple[list[str], list[str]]:
    """``(["PATH:SCALE", ...], problems)`` of the LoRA table: each row names an uploaded file (by its
    name) or a file on the server, found by ``resolve(value, what)`` (e.g.
    :meth:`longvie.app.access.AllowedDirs.resolve`: only inside the allowed folders), with a scale
    (empty: 1.0)."""
    from .access import NotAllowedError

    specs, problems = [], []
    for name, scale in lora_rows(table):
        try:
            value = float(scale) if scale else 1.0
        except ValueError:
            problems.append(f"LoRA {name}: scale {scale!r} is not a number (1.0 = full strength)")
            continue
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"LoRA {name}: scale {scale!r} is not a number (1.0 = full strength)")
            continue
        if name in uploaded:
            path = Path(uploaded[name])
        else:
            try:
                path = resolve(name, "LoRA file")
            except NotAllowedError as err:
                problems.append(f"{err} — upload it, or give a file inside the shared folders")
                continue
        if path.suffix.lower() not in LORA_SUFFIXES or not path.is_file():
            problems.append(f"LoRA {Path(name).name}: not a .safetensors file")
            continue
        specs.append(f"{path}:{value:g}")
    return specs, problems
