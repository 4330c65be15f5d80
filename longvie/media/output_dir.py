"""Output folders that never overwrite what the user owns.

Every command that writes a folder (a sampling run, a training output, an evaluation report, a
camera or control-extraction folder) calls :func:`claim_output_dir` before it writes anything. A
folder may be written when it does not exist yet, when it is empty, or when it is one of ours: it
holds the marker file that the command itself writes first (``manifest.json`` of a run,
``longvie_output.json`` elsewhere). Any other folder that holds files is refused with one sentence
naming the folder, why, and what to do.

``mark_output_dir`` writes the generic marker (atomically) for commands without a manifest of their
own, so that running the same command again on its own folder (resume, re-run) is allowed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .. import LongVieError
from .atomic import atomic_write_json

MARKER = "longvie_output.json"
# Files that some tools leave in any folder; a folder holding only these counts as empty.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class OutputDirError(LongVieError, FileExistsError):
    """The output folder is not ours to write (it holds the user's files, or it is a file)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:  # FileExistsError would otherwise format (errno, strerror)
        return self.args[0]


def _entries(path: Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name not in IGNORED_NAMES)


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
                     markers: tuple[str, ...] = (), flag: str = "--out") -> Path:
    """Check that ``path`` may be written by a command of ``kind``; raises :class:`OutputDirError`.

    Args:
        path: the folder the command will write.
        what: what the folder is for, in the message ("run folder", "training output", ...).
        kind: the marker's ``kind`` this command writes (``mark_output_dir``); None accepts any of ours.
        markers: file names that also make the folder ours (``manifest.json`` of a sampling run).
        flag: the option that named the folder, for the message.

    Returns the path. Nothing is created here: the caller creates the folder when it starts writing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{flag} {path} is a file, not a folder; name a new folder for the {what}.", path)
    if not path.is_dir():
        return path
    try:
        entries = _entries(path)
    except OSError as err:
        raise OutputDirError(f"{flag} {path} cannot be read ({err.strerror}); name another folder for the "
                             f"{what}.", path) from err
    if not entries or is_ours(path, kind, markers):
        return path
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise OutputDirError(f"{flag} {path} already holds files that are not a LongVie {what} ({shown}); "
                         f"name a new or empty folder, so that nothing of yours is overwritten.", path)


def mark_output_dir(path: str | os.PathLike, kind: str, **details) -> Path:
    """Create ``path`` (parents too) and write the marker that makes it ours (idempotent)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.is_file():
        atomic_write_json(marker, {"kind": kind, "written_by": "longvie", **details})
    return path
