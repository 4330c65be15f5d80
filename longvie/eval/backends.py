"""Load every model the evaluation uses, once, offline-safely: what cannot be had becomes a
:class:`~longvie.eval.availability.MetricUnavailable` (reported as "not computed: needs ..."), never an
exception.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from ..controls.depth_estimators import DEFAULT_DEPTH_ANYTHING_V2, build_depth_estimator
from ..controls.point_tracking import LucasKanadeTracker
from .availability import MetricUnavailable, downloads_allowed
from .quality import LpipsMetric, load_lpips
from .vbench_metrics import VBENCH_METRICS, ScorerSettings, load_scorers

__all__ = ["BackendOptions", "Backends", "load_backends"]

logger = logging.getLogger("longvie.eval")


@dataclass
class BackendOptions:
    """Which models to load and from where (the CLI's options)."""

    local_files_only: bool = False
    device: str | None = None
    metrics: tuple[str, ...] = VBENCH_METRICS  # VBench metrics to compute
    lpips: bool = True
    alexnet_weights: str | None = None
    aesthetic_head: str | None = None
    raft_weights: str | None = None
    musiq_weights: str | None = None
    depth: bool = True
    depth_model: str = DEFAULT_DEPTH_ANYTHING_V2
    vda_checkpoint: str | None = None
    tracks: bool = True


@dataclass
class Backends:
    scorers: dict = field(default_factory=dict)
    lpips: LpipsMetric | MetricUnavailable | None = None
    depth_estimator: Callable | MetricUnavailable | None = None
    depth_model_id: str | None = None
    tracker: Callable | None = None

    def unavailable(self) -> list[str]:
        """One line per model that could not be loaded."""
        items = [*self.scorers.values(), self.lpips, self.depth_estimator]
        return sorted({x.report for x in items if isinstance(x, MetricUnavailable)})


def _depth(options: BackendOptions):
    model_id = options.vda_checkpoint or options.depth_model
    local = options.local_files_only or not downloads_allowed(False)
    try:
        return build_depth_estimator("auto", options.depth_model, options.vda_checkpoint, local, options.device), \
            model_id
    except (RuntimeError, OSError, ValueError) as err:
        return MetricUnavailable(model_id, str(err).split(". ")[0][:200]), model_id


def load_backends(options: BackendOptions) -> Backends:
    """Every backend of ``options``; the unavailable ones logged once with what they need."""
    backends = Backends()
    settings = ScorerSettings(options.local_files_only, options.device, options.aesthetic_head,
                              options.raft_weights, options.musiq_weights)
    backends.scorers = load_scorers(settings, options.metrics) if options.metrics else {}
    if options.lpips:
        try:
            backends.lpips = load_lpips(options.local_files_only, options.alexnet_weights, options.device)
        except MetricUnavailable as err:
            backends.lpips = err
    if options.depth:
        backends.depth_estimator, backends.depth_model_id = _depth(options)
    if options.tracks:
        backends.tracker = LucasKanadeTracker()
    for line in backends.unavailable():
        logger.warning(line)
    return backends
