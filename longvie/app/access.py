"""Who may do what in the app: logins, the server folders the page may read, and who owns a run.

* **Logins** (``--auth USER:PASSWORD``, repeatable, or ``--auth-file`` with one ``USER:PASSWORD`` a
  line) become gradio's ``auth`` list. A server opened to the network (``--host`` other than a
  loopback address, or ``--share``) without one gets a loud warning.
* **Allowed folders**: the "server folder" fields (condition folder, LoRA files, depth checkpoints)
  read only inside the folders the server was started with (``--allowed-dir``; the outputs folder
  always, ``examples`` by default). A path is resolved first (symlinks, ``..``), then checked.
* **Owners**: each browser keeps a random session id (its local storage); a job and the run folder
  it writes belong to it. The run folder records a hash of the id (:data:`OWNER_FILE`), so a copy of
  the folder (a zip) gives nobody the id, and ownership survives a server restart.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..media.atomic import atomic_write_json

__all__ = ["parse_auth", "read_auth_file", "load_logins", "is_exposed", "exposure_warning", "AllowedDirs",
           "NotAllowedError", "new_session_id", "owner_key", "OWNER_FILE", "write_owner", "read_owner",
           "DEFAULT_ALLOWED_DIRS"]

OWNER_FILE = "app_owner.json"
DEFAULT_ALLOWED_DIRS = ("examples",)  # besides the outputs folder, which is always allowed
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


# ------------------------------------------------------------------------------------------ logins
def parse_auth(value: str, where: str = "--auth") -> tuple[str, str]:
    """``"USER:PASSWORD"`` -> ``(user, password)`` (the password may contain ':').

    Raises:
        ValueError: no ':' or an empty user or password (the message names ``where``).
    """
    user, sep, password = str(value).strip().partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError(f"{where}: expected USER:PASSWORD (e.g. alice:a-long-password), got "
                         f"{'an empty value' if not str(value).strip() else 'no user or no password'}")
    return user.strip(), password


def read_auth_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Logins from a file: one ``USER:PASSWORD`` a line; blank lines and ``#`` comments skipped.

    Raises:
        ValueError: the file is missing, empty, or a line is malformed (named by its number).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--auth-file {path}: file not found — write one USER:PASSWORD per line")
    logins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            logins.append(parse_auth(line, f"--auth-file {path} line {number}"))
    if not logins:
        raise ValueError(f"--auth-file {path}: no USER:PASSWORD line in it")
    return logins


def auth_file_is_private(path: str | os.PathLike) -> bool:
    """False when other users of the machine may read the file (group/other read bits)."""
    mode = Path(path).stat().st_mode
    return not mode & (stat.S_IRGRP | stat.S_IROTH)


def load_logins(auth: Sequence[str] = (), auth_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """All logins of ``--auth`` values and ``--auth-file`` (a later duplicate user wins)."""
    logins = [parse_auth(value) for value in auth or ()]
    if auth_file:
        logins += read_auth_file(auth_file)
    return list(dict(logins).items())


def is_exposed(host: str, share: bool = False) -> bool:
    """True when others than this machine can reach the server (a non-loopback host, or ``share``)."""
    if share:
        return True
    name = (host or "").strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:
        return True  # a host name that is not localhost: assume it is reachable


def exposure_warning(host: str, share: bool, has_logins: bool) -> str | None:
    """The loud start-up warning for a server open to the network without a login (else None)."""
    if has_logins or not is_exposed(host, share):
        return None
    where = "a public gradio.live link (--share)" if share else f"every network interface ({host})"
    bar = "!" * 78
    return (f"{bar}\n"
            f"WARNING: the LongVie app is open to {where} WITHOUT A LOGIN.\n"
            "Anyone who can reach it can run jobs on this GPU and read the files under the allowed folders.\n"
            "Add --auth USER:PASSWORD or --auth-file FILE, or keep --host 127.0.0.1 and use\n"
            "`ssh -L 7860:127.0.0.1:7860 host` to reach it from another machine.\n"
            f"{bar}")


# ----------------------------------------------------------------------------------- allowed dirs
class NotAllowedError(ValueError):
    """A server path outside the allowed folders (message in the page's words)."""


@dataclass
class AllowedDirs:
    """The folders the page may read server files from (resolved at start-up)."""

    roots: list[Path]
    labels: list[str]  # as given on the command line, for messages

    @classmethod
    def create(cls, outputs: str | os.PathLike, extra: Sequence[str | os.PathLike] | None = None) -> "AllowedDirs":
        """The outputs folder plus ``extra`` (None: :data:`DEFAULT_ALLOWED_DIRS`); duplicates dropped."""
        given = [outputs, *(DEFAULT_ALLOWED_DIRS if extra is None else extra)]
        roots, labels = [], []
        for item in given:
            root = Path(os.path.realpath(Path(item).expanduser()))
            if root not in roots:
                roots.append(root)
                labels.append(str(item))
        return cls(roots, labels)

    def describe(self) -> str:
        return ", ".join(self.labels)

    def root_of(self, path: str | os.PathLike) -> Path | None:
        """The allowed folder holding ``path`` once resolved (symlinks, ``..``), or None."""
        real = Path(os.path.realpath(Path(path).expanduser()))
        return next((root for root in self.roots if real == root or real.is_relative_to(root)), None)

    def resolve(self, value: str | os.PathLike, what: str = "folder") -> Path:
        """The resolved path of a page's server-path field, when it lies in an allowed folder.

        A relative path is tried against the working directory, then inside each allowed folder.

        Raises:
            NotAllowedError: empty, outside every allowed folder, or not found there.
        """
        text = str(value or "").strip()
        if not text:
            raise NotAllowedError(f"{what}: empty — give a path inside {self.describe()}")
        raw = Path(text).expanduser()
        candidates = [raw] if raw.is_absolute() else [raw, *(root / raw for root in self.roots)]
        inside = [Path(os.path.realpath(c)) for c in candidates if self.root_of(c) is not None]
        for path in inside:
            if path.exists():
                return path
        if not inside:
            raise NotAllowedError(f"{what} {text}: not inside the folders this server shares ({self.describe()})")
        raise NotAllowedError(f"{what} {text}: not found in {self.describe()}")

    def check_file(self, path: str | os.PathLike, what: str) -> Path:
        """``path`` resolved, when inside an allowed folder (files a condition list points to)."""
        if self.root_of(path) is None:
            raise NotAllowedError(f"{what} {Path(path).name}: outside the folders this server shares "
                                  f"({self.describe()})")
        return Path(os.path.realpath(path))


# ------------------------------------------------------------------------------------------ owners
def new_session_id() -> str:
    """A browser's secret session id (kept in its local storage)."""
    return secrets.token_hex(16)


def owner_key(session_id: str | None) -> str | None:
    """What is stored for an owner: a hash of the session id (None for no id)."""
    if not session_id:
        return None
    return hashlib.sha256(f"longvie-app:{session_id}".encode()).hexdigest()[:32]


def write_owner(folder: str | os.PathLike, owner: str) -> None:
    """Record ``owner`` (an :func:`owner_key`) in a run or controls folder."""
    atomic_write_json(Path(folder) / OWNER_FILE, {"owner": owner, "written_by": "python -m longvie.app"})


def read_owner(folder: str | os.PathLike) -> str | None:
    """The owner recorded in ``folder`` (None: none, e.g. a run made with ``python -m longvie.sample``)."""
    try:
        return json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8")).get("owner")
    except (OSError, ValueError, AttributeError):
        return None
