"""Crash-safe file writes: write to a temporary file, fsync, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
partial write, whatever moment the process is killed at. The temporary file lives in the target's
directory so that the final ``os.replace`` is an atomic rename on the same file system.

    with atomic_path("out/video.mp4") as tmp:     # any writer that takes a path (ffmpeg, np.save)
        write_something(tmp)
    with atomic_write("out/state.bin") as f:      # a file object
        f.write(data)
    atomic_write_json("out/manifest.json", {"clips": []})
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_save_tensors",
    "fsync_dir",
]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry (a completed rename) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _temp_path_for(path: Path) -> Path:
    # Hidden, unique, and keeps the suffix so that tools which infer the format from the extension
    # (ffmpeg, np.save, safetensors) write the right kind of file.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The body must create the file at the yielded path. If the body raises, the temporary file is
    removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {path}: nothing was written to {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:  # KeyboardInterrupt included: never leave a temp file behind
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` "wb" or "w"); it replaces ``path`` on success."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write supports write modes 'w'/'wt'/'wb', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise first, then write: a value that is not JSON-serialisable leaves ``path`` untouched."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    """Save one numpy array losslessly (``np.save`` format)."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save a dict of tensors: safetensors for a ``.safetensors`` path, ``torch.save`` otherwise.

    Values may be torch tensors or numpy arrays (converted to tensors).
    """
    import numpy as np
    import torch

    path = Path(path)
    as_tensors = {
        name: (torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value)
        for name, value in tensors.items()
    }
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        as_tensors = {name: t.detach().cpu().contiguous() for name, t in as_tensors.items()}
        with atomic_path(path) as tmp:
            save_file(as_tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    else:
        payload = dict(as_tensors)
        if metadata:
            payload["__metadata__"] = dict(metadata)
        with atomic_write(path, "wb") as f:
            torch.save(payload, f)
