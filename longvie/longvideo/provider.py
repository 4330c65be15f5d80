"""Controls made while the video is generated: a provider called once per clip instead of control files.

The long-video sampler normally reads each clip's depth and track videos from cond.json's files. A
*control provider* makes them on demand instead, from the clips generated so far (the camera explorer
renders them from a 3D memory that grows with every clip; the app can use it for live controls)::

    def controls(index: int, finished: FinishedClips) -> tuple[np.ndarray, np.ndarray]:
        ...  # (T, H, W, 3) uint8 depth and track frames for clip ``index``
    controls.fingerprint = lambda index: "sha256 of whatever determines clip index's controls"  # optional

    sampler(run_dir, image, clips, controls=controls)

``finished`` holds clips ``0 .. index-1`` of this run exactly as generated (lossless frames, read
from the run's clip states on demand) and their state hashes. The controls are brought to the
run's size like control files are. The manifest records, as the clip's depth and track inputs, the
clip's own depth/track path (where a provider may write what it made), ``fingerprint(index)`` instead
of a file hash and the provider's name, so a resumed run with another provider setting is refused like
a run whose control files changed. A provider's output must depend only on its settings and
``finished``; then a killed run resumes to the same video.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["ControlProvider", "FinishedClips", "provided_source"]


@runtime_checkable
class ControlProvider(Protocol):
    def __call__(self, index: int, finished: "FinishedClips") -> tuple[np.ndarray, np.ndarray]: ...


class FinishedClips(Sequence):
    """The frames of a run's finished clips ``0 .. len-1`` (read lazily, lossless) and their state hashes."""

    def __init__(self, load: Callable[[int], np.ndarray], hashes: Sequence[str],
                 latest: tuple[int, np.ndarray] | None = None):
        self._load, self._hashes, self._latest = load, list(hashes), latest

    def __len__(self) -> int:
        return len(self._hashes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index}: only clips 0..{len(self) - 1} are finished")
        index %= len(self)
        if self._latest is not None and self._latest[0] == index:
            return self._latest[1]
        return self._load(index)

    def sha256(self, index: int) -> str:
        """The sha256 of clip ``index``'s state file (what the manifest records)."""
        return self._hashes[index]


def provided_source(controls, clip, kind: str) -> dict:
    """What the manifest records as a provided clip's depth/track input: the clip's own path for that
    control (where the provider may write what it made, for later inspection), the provider's fingerprint
    of the clip instead of a file hash, and the provider's name."""
    name = getattr(controls, "name", None) or type(controls).__name__
    fingerprint = controls.fingerprint(clip.index) if hasattr(controls, "fingerprint") else "unspecified"
    return {"path": str(getattr(clip, kind)), "sha256": fingerprint, "found_by": f"control provider {name}"}
