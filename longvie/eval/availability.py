"""Whether a learned metric's weights can be had, and the error that says which ones are missing.

Every learned metric names its model and loads it through huggingface_hub / transformers or through
torchvision's weights cache. Offline, a download attempt would hang on network timeouts for minutes,
so before any download the hub host is probed once with a short TCP connect (:func:`network_reachable`);
when it does not answer, or with ``local_files_only=True`` (``--local-files``), only local directories
and already cached files are used and a missing model raises :class:`MetricUnavailable` at once.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

__all__ = ["MetricUnavailable", "network_reachable", "downloads_allowed", "torch_hub_weights"]

PROBE_TIMEOUT_S = 3.0


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed: its weights or package are missing. ``needs`` names what."""

    def __init__(self, needs: str, detail: str = ""):
        self.needs = needs
        self.detail = detail
        super().__init__(f"needs {needs}" + (f" ({detail})" if detail else ""))

    @property
    def report(self) -> str:
        """What metrics.json and the table show in place of a number."""
        return f"not computed: needs {self.needs}"


@functools.lru_cache(maxsize=None)
def network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` seconds (probed once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def downloads_allowed(local_files_only: bool) -> bool:
    """Whether a missing model may be downloaded now (not forbidden, and the hub answers)."""
    return not local_files_only and network_reachable()


def torch_hub_weights(url: str, model_id: str, local_files_only: bool, path: str | os.PathLike | None = None):
    """The state dict of a torchvision-style weights file: ``path``, else torch.hub's cache, else a download.

    Raises:
        MetricUnavailable: the file is not local and may not (or cannot) be downloaded.
    """
    import torch

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MetricUnavailable(model_id, f"weights file {path} not found")
        return torch.load(path, map_location="cpu", weights_only=True)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    if not downloads_allowed(local_files_only):
        why = "--local-files forbids downloads" if local_files_only else "no network"
        raise MetricUnavailable(model_id, f"{cached} not cached and {why}; download {url} there")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any download failure means the same thing here
        raise MetricUnavailable(model_id, f"download of {url} failed: {err}") from err
