"""What a person reads: metrics.json, a markdown table in the paper's column order, PNG plots, one line.

``metrics.json`` is strict JSON: an infinite PSNR (identical frames) is written as the string
``"inf"`` (with ``"psnr_is_inf": true`` beside the video value), a NaN as ``null``.

The table puts the paper's LongVie 2 row (LongVGenBench, LongVie 2 paper Table 1; SPEC §7) beside
ours. Percent metrics are shown as percentages like the paper; PSNR, drift and the boundary count are
ours (the paper has no such columns).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..media.atomic import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["PAPER_COLUMNS", "PAPER_LONGVIE2", "json_safe", "write_metrics_json", "markdown_table",
           "write_plots", "summary_line", "write_report"]

# (key, header, shown as percent)
PAPER_COLUMNS = (("aesthetic_quality", "A.Q.", True), ("imaging_quality", "I.Q.", True), ("ssim", "SSIM", False),
                 ("lpips", "LPIPS", False), ("subject_consistency", "S.C.", True),
                 ("background_consistency", "B.C.", True), ("overall_consistency", "O.C.", True),
                 ("dynamic_degree", "D.D.", True))
EXTRA_COLUMNS = (("psnr", "PSNR (dB)", False),)
PAPER_LONGVIE2 = {"aesthetic_quality": 0.5847, "imaging_quality": 0.6977, "ssim": 0.529, "lpips": 0.295,
                  "subject_consistency": 0.9105, "background_consistency": 0.9245, "overall_consistency": 0.2337,
                  "dynamic_degree": 0.8295}


def json_safe(value: Any) -> Any:
    """A copy with inf as "inf"/"-inf", NaN as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def write_metrics_json(path: str | Path, result: dict) -> Path:
    data = json_safe(result)
    psnr = result.get("video", {}).get("psnr")
    if isinstance(psnr, float):
        data["video"]["psnr_is_inf"] = math.isinf(psnr)
    atomic_write_json(path, data)
    return Path(path)


def _cell(value, percent: bool) -> str:
    if isinstance(value, str):
        return "n/c" if value.startswith("not computed") else value
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{100 * value:.2f}%" if percent else f"{value:.3f}"


def markdown_table(rows: Sequence[tuple[str, dict]], paper_row: bool = True) -> str:
    """A table with one row per (name, result["video"]) plus the paper's LongVie 2 row, and a legend of
    what every "n/c" (not computed) cell needs."""
    columns = PAPER_COLUMNS + EXTRA_COLUMNS
    lines = ["| | " + " | ".join(h for _, h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    if paper_row:
        lines.append("| LongVie 2 (paper, LongVGenBench) | " + " | ".join(
            _cell(PAPER_LONGVIE2.get(k), p) if k in PAPER_LONGVIE2 else "–" for k, _, p in columns) + " |")
    missing: dict[str, str] = {}
    for name, video in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(video.get(k), p) for k, _, p in columns) + " |")
        for key, header, _ in columns:
            value = video.get(key)
            if isinstance(value, str) and value.startswith("not computed"):
                missing.setdefault(header, value)
    lines.append("")
    lines += [f"- {header}: {why}" for header, why in missing.items()]
    if "O.C." not in missing:
        lines.append("- O.C.: ours is the mean CLIP ViT-L/14 frame-prompt cosine, a stand-in for VBench's ViCLIP: "
                     "not comparable to the paper's")
    lines.append("- whole video: SSIM/LPIPS over all frames, PSNR from the pooled MSE, VBench metrics averaged "
                 "over clips (D.D. = fraction of dynamic clips); n/c = not computed")
    return "\n".join(lines) + "\n"


def _numeric(curve) -> list[float]:
    return [math.nan if v is None or isinstance(v, str) else float(v) for v in curve]


def write_plots(out_dir: str | Path, results: Sequence[tuple[str, dict]]) -> list[Path]:
    """PNG plots of the per-clip curves of one or more results: quality.png (one panel per metric),
    drift.png (relative change vs clip 0), boundaries.png (boundary score), colour.png (CIELAB shift)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out_dir / name
        for axis in fig.axes:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
        plt.close(fig)
        written.append(path)

    metrics = [k for k, _, _ in PAPER_COLUMNS + EXTRA_COLUMNS if any(k in r["per_clip"] for _, r in results)]
    headers = {k: h for k, h, _ in PAPER_COLUMNS + EXTRA_COLUMNS}
    cols = min(4, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, metrics):
        for name, r in results:
            if key in r["per_clip"]:
                curve = [min(v, 100.0) if isinstance(v, float) else v for v in _numeric(r["per_clip"][key])]
                ax.plot(range(len(curve)), curve, marker="o", label=name)
        ax.set_title(headers[key] + (" (inf shown as 100)" if key == "psnr" else ""), fontsize=9)
        ax.set_xlabel("clip", fontsize=8)
    if metrics:
        axes.flat[0].legend(fontsize=7)
    save(fig, "quality.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, r in results:
        for key in metrics:
            curve = _numeric(r["per_clip"].get(key, []))
            if len(curve) > 1 and curve[0] not in (0.0,) and math.isfinite(curve[0]):
                ax.plot(range(len(curve)), [100 * (v - curve[0]) / abs(curve[0]) for v in curve], marker=".",
                        label=f"{name}: {headers[key]}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="clip", ylabel="change vs clip 0 (%)", title="drift")
    if ax.lines[1:]:
        ax.legend(fontsize=6)
    save(fig, "drift.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, r in results:
        scores = [b["score"] for b in r["boundaries"]]
        ax.plot(range(1, len(scores) + 1), scores, marker="o", label=name)
        flagged = [b for b in r["boundaries"] if b["flagged"]]
        ax.scatter([b["boundary"] + 1 for b in flagged], [b["score"] for b in flagged], color="red", zorder=3)
    ax.set(xlabel="boundary before clip", ylabel="jump / median in-clip difference", title="clip boundaries")
    ax.legend(fontsize=7)
    save(fig, "boundaries.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, r in results:
        ax.plot(r["colour"]["shift_vs_clip0"], marker="o", label=f"{name} vs clip 0")
        if r["colour"].get("shift_vs_reference") is not None:
            ax.plot(r["colour"]["shift_vs_reference"], marker="s", ls="--", label=f"{name} vs reference")
    ax.set(xlabel="clip", ylabel="mean CIELAB shift (ΔE76)", title="colour drift")
    ax.legend(fontsize=7)
    save(fig, "colour.png")
    return written


def summary_line(name: str, result: dict) -> str:
    """One console line: the headline numbers and what was not computed."""
    v = result["video"]
    parts = []
    for key, header, percent in (("ssim", "SSIM", False), ("psnr", "PSNR", False), ("lpips", "LPIPS", False),
                                 *((k, h, p) for k, h, p in PAPER_COLUMNS if k not in ("ssim", "lpips"))):
        value = v.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{header} {_cell(float(value), percent)}")
    missing = sum(isinstance(x, str) and x.startswith("not computed") for x in v.values())
    colour = result["colour"]["shift_vs_clip0"][-1]
    return (f"{name}: {result['clips']} clip(s), {result['frames']} frames | " + ", ".join(parts)
            + f" | colour drift {colour:.2f} ΔE | boundaries flagged {result['boundaries_flagged']}/"
            f"{len(result['boundaries'])} | {missing} metric(s) not computed")


def write_report(out_dir: str | Path, result: dict, name: str = "generated") -> dict:
    """metrics.json, metrics.md and the plots of one evaluated video into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out_dir, [(name, result)])
    table = markdown_table([(name, result["video"])])
    atomic_write_text(out_dir / "metrics.md", f"# Evaluation of {result['generated']}\n\n{table}\n"
                      + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    # metrics.json last: its presence means the report is complete (the benchmark runner relies on it)
    return {"table": out_dir / "metrics.md", "plots": plots,
            "json": write_metrics_json(out_dir / "metrics.json", result)}
