"""Optional report sections of ``python -m longvie.eval`` (e.g. camera adherence), each in its own module.

A section module defines:

* ``KEY`` — the key of its entry in ``metrics.json`` (top level, e.g. ``"camera"``);
* ``compute(context: SectionContext)`` — the entry (a JSON-able dict, or a ``"not computed: ..."``
  string), or None when the section does not apply to this video (it is then left out);
* ``markdown(value) -> str`` — its part of ``metrics.md`` (a ``## `` heading and text);
* optionally ``summary(value) -> str`` — a short text appended to the console summary line.

Add the module's import path to :data:`SECTION_MODULES`; :func:`longvie.eval.evaluate.evaluate_files`
runs every listed section after the core metrics, and :mod:`longvie.eval.report` renders them in order.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["SECTION_MODULES", "SectionContext", "load_sections", "run_sections"]

SECTION_MODULES: tuple[str, ...] = ("longvie.eval.camera_adherence",)


@dataclass
class SectionContext:
    """What a section may use: the generated video (frames, fps, its run directory and cond.json), the
    reference frames (cut to the compared length, or None), the clip ranges, the backends and the
    result computed so far (read only)."""

    video: Any  # longvie.eval.inputs.GeneratedVideo
    reference: np.ndarray | None
    ranges: list[tuple[int, int]]
    fps: float
    settings: Any  # longvie.eval.evaluate.EvalSettings
    backends: Any = None  # longvie.eval.backends.Backends
    result: dict = field(default_factory=dict)
    out_dir: Path | None = None  # the report folder, for a section's own files (e.g. a plot)


def load_sections(modules: tuple[str, ...] | None = None) -> list[ModuleType]:
    """The section modules of ``modules`` (default :data:`SECTION_MODULES`), imported."""
    return [importlib.import_module(name) for name in (SECTION_MODULES if modules is None else modules)]


def run_sections(context: SectionContext, result: dict, modules: tuple[str, ...] | None = None) -> list[str]:
    """Compute every section into ``result[KEY]``; returns the keys written (in order)."""
    written = []
    for module in load_sections(modules):
        value = module.compute(context)
        if value is not None:
            result[module.KEY] = value
            written.append(module.KEY)
    result["sections"] = [*result.get("sections", []), *written]
    return written


def section_markdown(result: dict, modules: tuple[str, ...] | None = None) -> list[str]:
    """The markdown of each section present in ``result``."""
    return [module.markdown(result[module.KEY]) for module in load_sections(modules) if module.KEY in result]


def section_summaries(result: dict, modules: tuple[str, ...] | None = None) -> list[str]:
    return [module.summary(result[module.KEY]) for module in load_sections(modules)
            if module.KEY in result and hasattr(module, "summary")]
