"""Output folders that never overwrite what the user owns.

Every command that writes a folder (a sampling run, a training output, an evaluation report, a
camera or control-extraction folder) calls :func:`claim_output_dir` before it writes anything. A
folder may be written when it does not exist yet, when it is empty, or when it is one of ours: it
holds the marker file that the command itself writes first (``manifest.json`` of a run,
``longvie_output.json`` elsewhere). Any other folder that holds files is refused with one sentence
naming the folder, why, and what to do.

``mark_output_dir`` writes the generic marker (atomically) for commands without a manifest of their
own, so that running the same command again on its own folder (resume, re-run) is allowed.

Two refinements keep real workflows working without loosening the rule:

* ``inputs``: files the command only reads that may sit inside the folder (``get_track.py VIDEO OUT
  --depth OUT/depth.npy``) do not count as the user's files there;
* ``ours``: a predicate for folders that this code wrote before it wrote markers (training outputs
  of earlier versions, a run killed before its first manifest), so that they still resume.

Hidden temporary files of our atomic writes (:mod:`longvie.media.atomic`) do not count either, so a
folder whose first marker is being written by another rank is still seen as empty.

``python -m longvie.media.output_dir DIR --kind KIND --what "..."`` runs the same check from a shell
script (exit 2 and the sentence when refused; nothing is written); ``--mark`` then marks the folder.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

from .. import LongVieError
from .atomic import atomic_write_json

MARKER = "longvie_output.json"
# Files that some tools leave in any folder; a folder holding only these counts as empty.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# A temporary file of longvie.media.atomic (".NAME.<12 hex>.tmp[.ext]"): ours, and gone once the write ends.
_ATOMIC_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[^.]*)?$")


class OutputDirError(LongVieError, FileExistsError):
    """The output folder is not ours to write (it holds the user's files, or it is a file)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:  # FileExistsError would otherwise format (errno, strerror)
        return self.args[0]


def _entries(path: Path, inputs: Iterable[str | os.PathLike] = ()) -> list[str]:
    """The names in ``path`` that count as someone's files (not tool litter, our temp files or ``inputs``)."""
    skip = set()
    for item in inputs:
        item = Path(item)
        try:
            if item.resolve().parent == path.resolve():
                skip.add(item.name)
        except OSError:
            continue
    return sorted(name for name in os.listdir(path)
                  if name not in IGNORED_NAMES and name not in skip and not _ATOMIC_TEMP.match(name))


def is_ours(path: str | os.PathLike, kind: str | None = None, markers: tuple[str, ...] = ()) -> bool:
    """True when ``path`` holds the generic marker (of ``kind``, when given) or one of ``markers``."""
    path = Path(path)
    if any((path / name).is_file() for name in markers):
        return True
    marker = path / MARKER
    if not marker.is_file():
        return False
    if kind is None:
        return True
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def claim_output_dir(path: str | os.PathLike, what: str, kind: str | None = None,
                     markers: tuple[str, ...] = (), flag: str = "--out",
                     ours: Callable[[Path, list[str]], bool] | None = None,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that ``path`` may be written by a command of ``kind``; raises :class:`OutputDirError`.

    Args:
        path: the folder the command will write.
        what: what the folder is for, in the message ("run folder", "training output", ...).
        kind: the marker's ``kind`` this command writes (``mark_output_dir``); None accepts any of ours.
        markers: file names that also make the folder ours (``manifest.json`` of a sampling run).
        flag: the option that named the folder, for the message ("" for a positional argument).
        ours: ``ours(path, entries)`` is True for a folder this code wrote without a marker (earlier
            versions; a run stopped before its first manifest). Called only for a non-empty folder.
        inputs: files the command reads that may lie in the folder; they do not count as the user's.

    Returns the path. Nothing is created here: the caller creates the folder when it starts writing.
    """
    path = Path(path)
    named = f"{flag} {path}" if flag else str(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{named} is a file, not a folder; name a new folder for the {what}.", path)
    if not path.is_dir():
        return path
    try:
        entries = _entries(path, inputs)
    except OSError as err:
        raise OutputDirError(f"{named} cannot be read ({err.strerror}); name another folder for the "
                             f"{what}.", path) from err
    if not entries or is_ours(path, kind, markers) or (ours is not None and _safe(ours, path, entries)):
        return path
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise OutputDirError(f"{named} already holds files that are not a LongVie {what} ({shown}); "
                         f"name a new or empty folder, so that nothing of yours is overwritten.", path)


def _safe(ours: Callable[[Path, list[str]], bool], path: Path, entries: list[str]) -> bool:
    try:
        return bool(ours(path, entries))
    except (OSError, ValueError):  # an unreadable file is no proof that the folder is ours
        return False


def mark_output_dir(path: str | os.PathLike, kind: str, **details) -> Path:
    """Create ``path`` (parents too) and write the marker that makes it ours (idempotent)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.is_file():
        atomic_write_json(marker, {"kind": kind, "written_by": "longvie", **details})
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m longvie.media.output_dir DIR --kind KIND --what WHAT``: the check for shell scripts."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m longvie.media.output_dir",
                                     description="Exit 2 with one sentence when DIR holds files that are not "
                                                 "a LongVie output of KIND; writes nothing.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--kind", default=None, help="the marker kind the command writes (any of ours when left out)")
    parser.add_argument("--what", default="output folder", help="what the folder is for, in the message")
    parser.add_argument("--flag", default="", help="the option that named the folder, in the message")
    parser.add_argument("--input", action="append", default=[], help="a file the command reads (may be in DIR)")
    parser.add_argument("--mark", action="store_true", help="when allowed, create DIR and write the marker of --kind")
    args = parser.parse_args(argv)
    if args.mark and not args.kind:
        parser.error("--mark needs --kind")
    try:
        claim_output_dir(args.dir, args.what, args.kind, flag=args.flag, inputs=args.input)
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.mark:
        mark_output_dir(args.dir, args.kind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
