"""Rewrite every clip caption of a cond.json to match an (edited) first frame, with Qwen2.5-VL.

    python utils/qwen_caption_refine.py --cond cond.json --image first_edited.png --out cond_edited.json

The output keeps every other field of each entry; ``depth``/``track`` paths (relative to the JSON
file, SPEC §4) are rewritten to stay valid relative to the output file. It is written atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvie.controls.captioning import DEFAULT_CAPTION_MODEL
from longvie.media.atomic import atomic_write_json

PATH_FIELDS = ("depth", "track")


def load_cond(path: str | Path) -> list[dict]:
    """A cond.json condition list: a JSON array of objects with at least "text".

    Raises:
        ValueError: missing file, invalid JSON or wrong structure (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"condition file not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty JSON array with one object per clip")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise ValueError(f"{path}: entry {index} must be an object with a \"text\" string")
    return entries


def rebase_paths(entry: dict, source_dir: Path, target_dir: Path) -> dict:
    """Make the entry's relative depth/track paths relative to ``target_dir`` instead of ``source_dir``."""
    entry = dict(entry)
    for field in PATH_FIELDS:
        value = entry.get(field)
        if isinstance(value, str) and value and not os.path.isabs(value):
            entry[field] = Path(os.path.relpath(source_dir / value, target_dir)).as_posix()
    return entry


def refine_captions(entries: list[dict], image, captioner,
                    progress: Callable[[Iterable], Iterable] | None = None) -> list[dict]:
    """Entries with "text" rewritten by ``captioner.refine(image, text)``; other fields unchanged."""
    items = progress(entries) if progress else entries
    return [{**entry, "text": captioner.refine(image, entry["text"])} for entry in items]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Rewrite each clip caption of a cond.json to match a new first frame (Qwen2.5-VL).")
    parser.add_argument("--cond", required=True, help="input cond.json (JSON array of {text, depth, track})")
    parser.add_argument("--image", required=True, help="the (edited) first frame the captions must describe")
    parser.add_argument("--out", required=True, help="output cond.json (written atomically; may equal --cond)")
    parser.add_argument("--model", default=DEFAULT_CAPTION_MODEL,
                        help=f"Qwen2.5-VL hub id or local directory (default {DEFAULT_CAPTION_MODEL})")
    parser.add_argument("--local-files", action="store_true", help="never download: use a local directory or the hub cache")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from longvie.controls.captioning import QwenCaptioner
    from longvie.media.video_io import load_image

    try:
        entries = load_cond(args.cond)
        image = load_image(args.image)
        captioner = QwenCaptioner.from_pretrained(args.model, args.local_files, args.device, args.max_new_tokens)
        refined = refine_captions(entries, image, captioner, progress=lambda it: tqdm(it, desc="captions", unit="clip"))
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    source_dir, target_dir = Path(args.cond).resolve().parent, Path(args.out).resolve().parent
    atomic_write_json(args.out, [rebase_paths(entry, source_dir, target_dir) for entry in refined])
    print(f"wrote {len(refined)} refined caption(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
