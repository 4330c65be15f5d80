"""Point trackers: follow query points from a clip's first frame through the clip.

A tracker is a callable ``tracker(frames, points) -> (tracks, visible)``:
frames (T, H, W, 3) uint8 RGB, points (N, 2) float (x, y) on frame 0 -> tracks (T, N, 2) float32
(x, y) and visible (T, N) bool. Frame 0 returns the query points themselves, all visible. A position
the tracker cannot estimate at all is NaN (never drawn); an occluded point with an estimated
position is finite and ``visible`` False (drawn by default, as upstream).

Backends:

* ``lk`` (default, weight-free, runs anywhere): OpenCV pyramidal Lucas-Kanade (Bouguet's
  implementation, ``cv2.calcOpticalFlowPyrLK``) from frame to frame, with a forward-backward check
  (Kalal et al., "Forward-Backward Error", ICPR 2010). A point is lost — invisible for the rest of the
  clip, since LK cannot re-acquire it — when LK fails, when tracking it back to the previous frame
  misses its position by more than ``fb_threshold`` px, or when it leaves the frame. A lost point has
  no position estimate: its track is NaN from then on. Sub-pixel on
  textured content; within half a window (10 px) of the border the cut-off window costs ~1 px.
* ``cotracker``: CoTracker3 offline (Karaev et al., arXiv 2410.11831) through ``torch.hub``
  (facebookresearch/co-tracker); needs internet or a warm torch.hub cache, and a GPU to be quick.

Upstream LongVie uses SpatialTracker (3D); neither backend here is that model, so track videos
differ in detail (which points survive occlusions) but not in layout or colouring.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

BACKENDS = ("lk", "cotracker")
COTRACKER_HUB_REPO = "facebookresearch/co-tracker"
COTRACKER_HUB_MODEL = "cotracker3_offline"


class LucasKanadeTracker:
    """Frame-to-frame pyramidal Lucas-Kanade with a forward-backward consistency check.

    ``min_eigen`` is OpenCV's minEigThreshold, lowered from its 1e-4 default: on a zooming, panning
    832x480 landscape (ride_horse/first.png warped) 1e-4 drops ~10% of the points that stay in view
    within 80 frames in low-texture areas (snow, sky), 1e-5 keeps all of them at the same accuracy; the
    forward-backward check still rejects the inconsistent ones.
    """

    def __init__(self, fb_threshold: float = 1.0, window: int = 21, levels: int = 3, min_eigen: float = 1e-5):
        self.fb_threshold = fb_threshold
        self.params = dict(
            winSize=(window, window),
            maxLevel=levels,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
            minEigThreshold=min_eigen,
        )

    def _flow(self, source: np.ndarray, target: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(source, target, points.reshape(-1, 1, 2), None, **self.params)
        return moved.reshape(-1, 2), status.reshape(-1).astype(bool)

    def __call__(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        num_frames, height, width = frames.shape[:3]
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        tracks = np.zeros((num_frames, len(points), 2), dtype=np.float32)
        visible = np.zeros((num_frames, len(points)), dtype=bool)
        tracks[0], visible[0] = points, True
        grey_prev = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        for t in range(1, num_frames):
            grey = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
            alive = np.flatnonzero(visible[t - 1])
            tracks[t] = np.nan  # lost points have no position estimate (never drawn)
            if alive.size:
                start = tracks[t - 1, alive]
                forward, ok_forward = self._flow(grey_prev, grey, start)
                backward, ok_backward = self._flow(grey, grey_prev, forward)
                error = np.linalg.norm(backward - start, axis=1)
                inside = (forward[:, 0] >= 0) & (forward[:, 0] <= width - 1) & (forward[:, 1] >= 0) & (forward[:, 1] <= height - 1)
                keep = ok_forward & ok_backward & (error <= self.fb_threshold) & inside
                tracks[t, alive] = np.where(keep[:, None], forward, start)
                visible[t, alive] = keep
            grey_prev = grey
        return tracks, visible


class CoTrackerTracker:
    """CoTracker3 (offline) from torch.hub, queried at frame 0."""

    def __init__(self, device: str | None = None, model=None):
        import torch

        from .model_loading import pick_device

        self.device = pick_device(device)
        if model is None:
            try:
                model = torch.hub.load(COTRACKER_HUB_REPO, COTRACKER_HUB_MODEL)
            except Exception as err:  # no internet, no cache, incompatible hub code ...
                raise RuntimeError(
                    f"CoTracker3 could not be loaded through torch.hub ('{COTRACKER_HUB_REPO}', "
                    f"'{COTRACKER_HUB_MODEL}'): {err}. It needs internet access once (then the hub cache "
                    f"in ~/.cache/torch/hub is used). Use --track-backend lk for the weight-free tracker."
                ) from err
            if self.device.type != "cuda":
                print("warning: CoTracker3 on CPU is very slow; use a GPU or --track-backend lk")
        self.model = model.to(self.device).eval()

    def __call__(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(self.device)  # (1, T, 3, H, W) 0..255
        queries = torch.from_numpy(np.concatenate([np.zeros((len(points), 1), np.float32), points], 1))
        with torch.no_grad():
            tracks, visible = self.model(video, queries=queries[None].to(self.device))
        tracks = tracks[0].float().cpu().numpy()
        visible = visible[0].cpu().numpy().astype(bool)
        tracks[0], visible[0] = points, True
        return tracks, visible


def build_tracker(backend: str = "lk", device: str | None = None) -> Callable:
    if backend == "lk":
        return LucasKanadeTracker()
    if backend == "cotracker":
        return CoTrackerTracker(device)
    raise ValueError(f"unknown track backend {backend!r}; choose one of {BACKENDS}")
