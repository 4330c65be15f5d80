"""What a person reads: metrics.json, metrics.md (the paper's columns, the per-clip breakdown, seams,
colour drift, warnings), PNG plots and one console line.

``metrics.json`` is strict JSON: an infinite PSNR (identical frames) is written as the string
``"inf"`` (with ``"psnr_is_inf": true`` beside the video value), a NaN as ``null``.

The main table puts the paper's LongVie 2 row (LongVGenBench, LongVie 2 paper Table 1; SPEC §7)
beside our whole-video values, which are computed as VBench computes them
(:data:`~longvie.eval.evaluate.AGGREGATION` says why that is the comparison). Percent metrics are shown
as percentages like the paper. The per-clip table, PSNR, O.C.-CLIP, drift, seams and colour figures are
ours (the paper has no such columns). Extra sections (:mod:`longvie.eval.sections`) follow.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..media.atomic import atomic_path, atomic_write_json, atomic_write_text
from ..media.output_dir import claim_output_dir, mark_output_dir
from .diagnostics import COLOUR_JUMP_THRESHOLD, COLOUR_WINDOW, SEAM_THRESHOLD

__all__ = ["PAPER_COLUMNS", "EXTRA_COLUMNS", "PAPER_LONGVIE2", "REPORT_KIND", "json_safe", "write_metrics_json",
           "markdown_table", "per_clip_table", "boundaries_table", "write_plots", "summary_line", "write_report",
           "report_markdown"]

REPORT_KIND = "eval"  # the output-folder marker's kind (longvie.media.output_dir)
# (key, header, shown as percent)
PAPER_COLUMNS = (("aesthetic_quality", "A.Q.", True), ("imaging_quality", "I.Q.", True), ("ssim", "SSIM", False),
                 ("lpips", "LPIPS", False), ("subject_consistency", "S.C.", True),
                 ("background_consistency", "B.C.", True), ("overall_consistency", "O.C.", True),
                 ("dynamic_degree", "D.D.", True))
EXTRA_COLUMNS = (("overall_consistency_clip", "O.C.-CLIP (ours)", True), ("psnr", "PSNR (dB)", False))
PAPER_LONGVIE2 = {"aesthetic_quality": 0.5847, "imaging_quality": 0.6977, "ssim": 0.529, "lpips": 0.295,
                  "subject_consistency": 0.9105, "background_consistency": 0.9245, "overall_consistency": 0.2337,
                  "dynamic_degree": 0.8295}
_OC_NOTE = ("- O.C.: VBench computes it with ViCLIP, which LongVie does not implement, so it is never computed "
            "here; O.C.-CLIP (ours) is the mean CLIP ViT-L/14 frame-prompt cosine, in its own column: not "
            "comparable to the paper's O.C.")


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
        if value in ("inf", "-inf"):
            return "∞" if value == "inf" else "-∞"
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
            if isinstance(value, str) and value.startswith("not computed") and key != "overall_consistency":
                missing.setdefault(header, value)
    lines.append("")
    lines += [f"- {header}: {why}" for header, why in missing.items()]
    lines.append(_OC_NOTE)
    lines.append("- n/c = not computed; – = no such value")
    return "\n".join(lines) + "\n"


def per_clip_table(result: dict) -> str:
    """One row per clip (ours), then the whole video's row (VBench's aggregation) for comparison."""
    columns = [(k, h, p) for k, h, p in PAPER_COLUMNS + EXTRA_COLUMNS if k in result["per_clip"]]
    if not columns:
        return "No per-clip metric was computed.\n"
    partial = set(result.get("partial_clips", []))
    lines = ["| clip | frames | " + " | ".join(h for _, h, _ in columns) + " |",
             "|---|---" + "|---" * len(columns) + "|"]
    for i, (start, end) in enumerate(result["clip_ranges"]):
        label = f"{i}" + (" (partial)" if i in partial else "")
        lines.append(f"| {label} | {start}–{end - 1} | " + " | ".join(
            _cell(result["per_clip"][k][i], p) for k, _, p in columns) + " |")
    lines.append("| whole video (VBench) | all | " + " | ".join(_cell(result["video"].get(k), p)
                                                               for k, _, p in columns) + " |")
    return "\n".join(lines) + "\n"


def boundaries_table(result: dict) -> str:
    if not result["boundaries"]:
        return "One clip: no boundary.\n"
    lines = ["| boundary | frame | seam score | residual / inside (grey) | motion jump / inside (px) | "
             "colour_jump (ΔE) | flagged |", "|---|---|---|---|---|---|---|"]
    for b in result["boundaries"]:
        colour = f"{b['colour_jump']:.2f}" + (" (whole frame)" if b["colour_jump_region"] != "matched" else "")
        lines.append(f"| {b['boundary']} | {b['frame']} | {b['score']:.2f} | {b['residual']:.2f} / "
                     f"{b['residual_inside']:.2f} | {b['motion_jump_px']:.2f} / {b['motion_inside_px']:.2f} | "
                     f"{colour} | {', '.join(b['reasons']) if b['flagged'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _numeric(curve) -> list[float]:
    out = []
    for v in curve:
        if v in ("inf", "-inf"):
            out.append(math.inf if v == "inf" else -math.inf)
        else:
            out.append(math.nan if v is None or isinstance(v, str) else float(v))
    return out


def write_plots(out_dir: str | Path, results: Sequence[tuple[str, dict]]) -> list[Path]:
    """PNG plots of one or more results: quality.png (per-clip curve of each metric with the whole-video
    value as a dashed line), drift.png (relative change vs clip 0), boundaries.png (seam score and
    colour jump per boundary, thresholds dashed), colour.png (colour drift over clips, and against the
    reference)."""
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

    columns = PAPER_COLUMNS + EXTRA_COLUMNS
    metrics = [k for k, _, _ in columns if any(k in r["per_clip"] for _, r in results)]
    headers = {k: h for k, h, _ in columns}
    cols = min(4, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, metrics):
        for name, r in results:
            if key in r["per_clip"]:
                curve = [min(v, 100.0) for v in _numeric(r["per_clip"][key])]
                line, = ax.plot(range(len(curve)), curve, marker="o", label=f"{name} per clip (ours)")
                whole = _numeric([r["video"].get(key)])[0]
                if math.isfinite(min(whole, 100.0)):
                    ax.axhline(min(whole, 100.0), color=line.get_color(), ls="--", lw=1,
                               label=f"{name} whole video")
        ax.set_title(headers[key] + (" (inf shown as 100)" if key == "psnr" else ""), fontsize=9)
        ax.set_xlabel("clip", fontsize=8)
    if metrics:
        axes.flat[0].legend(fontsize=6)
    save(fig, "quality.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, r in results:
        partial = set(r.get("partial_clips", []))
        for key in metrics:
            curve = [min(v, 100.0) for i, v in enumerate(_numeric(r["per_clip"].get(key, []))) if i not in partial]
            if len(curve) > 1 and curve[0] != 0.0 and math.isfinite(curve[0]):
                ax.plot(range(len(curve)), [100 * (v - curve[0]) / abs(curve[0]) for v in curve], marker=".",
                        label=f"{name}: {headers[key]}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="clip", ylabel="change vs clip 0 (%)", title="drift of the per-clip metrics (full clips)")
    if ax.lines[1:]:
        ax.legend(fontsize=6)
    save(fig, "drift.png")

    fig, (ax_seam, ax_colour) = plt.subplots(1, 2, figsize=(8, 3))
    for name, r in results:
        bounds = r["boundaries"]
        x = [b["boundary"] + 1 for b in bounds]
        ax_seam.plot(x, [b["score"] for b in bounds], marker="o", label=name)
        ax_colour.plot(x, [b["colour_jump"] for b in bounds], marker="o", label=name)
        for ax, key, flag in ((ax_seam, "score", "seam_flagged"), (ax_colour, "colour_jump", "colour_jump_flagged")):
            hits = [b for b in bounds if b.get(flag)]
            ax.scatter([b["boundary"] + 1 for b in hits], [b[key] for b in hits], color="red", zorder=3)
    ax_seam.axhline(SEAM_THRESHOLD, color="grey", ls="--", lw=0.8)
    ax_colour.axhline(COLOUR_JUMP_THRESHOLD, color="grey", ls="--", lw=0.8)
    ax_seam.set(xlabel="boundary before clip", ylabel="change / change motion explains", title="seams")
    ax_colour.set(xlabel="boundary before clip", ylabel="ΔE76", title="colour jump (matched region)")
    ax_seam.legend(fontsize=7)
    save(fig, "boundaries.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, r in results:
        if r["colour"].get("drift") is not None:
            ax.plot(r["colour"]["drift_per_clip"], marker="o", label=f"{name}: colour drift (seam steps)")
        else:
            ax.plot([], [], label=f"{name}: colour drift not measurable (no matched boundary region)")
        if r["colour"].get("shift_vs_reference") is not None:
            ax.plot(_numeric(r["colour"]["shift_vs_reference"]), marker="s", ls="--", label=f"{name} vs reference")
    ax.set(xlabel="clip", ylabel="ΔE76", title="colour drift")
    ax.legend(fontsize=7)
    save(fig, "colour.png")
    return written


def _delta_e(value) -> str:
    return "not measurable (no matched boundary region)" if value is None else f"{value:.2f} ΔE"


def summary_line(name: str, result: dict) -> str:
    """One console line: the headline numbers, seams, colour drift, what was not computed, and warnings."""
    from .sections import section_summaries

    v = result["video"]
    parts = []
    for key, header, percent in (("ssim", "SSIM", False), ("psnr", "PSNR", False), ("lpips", "LPIPS", False),
                                 *((k, h, p) for k, h, p in PAPER_COLUMNS + EXTRA_COLUMNS[:1]
                                   if k not in ("ssim", "lpips"))):
        value = v.get(key)
        if isinstance(value, (int, float)) or value in ("inf", "-inf"):
            parts.append(f"{header} {_cell(value, percent)}")
    missing = sum(isinstance(x, str) and x.startswith("not computed") for x in v.values())
    colour_jumps = sum(bool(b.get("colour_jump_flagged")) for b in result["boundaries"])
    compared = ""
    if result.get("compared_frames") is not None and result["compared_frames"] < result["frames"]:
        compared = f" | WARNING: reference shorter: {result['compared_frames']} of {result['frames']} frames compared"
    extra = "".join(f" | {s}" for s in section_summaries(result))
    return (f"{name}: {result['clips']} clip(s), {result['frames']} frames | " + ", ".join(parts)
            + f" | colour drift {_delta_e(result['colour']['drift'])} | boundaries flagged {result['boundaries_flagged']}/"
            f"{len(result['boundaries'])} (colour jumps {colour_jumps}) | {missing} metric(s) not computed"
            + extra + compared)


def report_markdown(result: dict, name: str, plots: Sequence[Path] = ()) -> str:
    """metrics.md of one evaluated video."""
    from .sections import section_markdown

    out = [f"# Evaluation of {result['generated']}", ""]
    out += [f"> **Warning:** {w}" for w in result.get("warnings", [])]
    if result.get("warnings"):
        out.append("")
    frames = f"{result['frames']} frames at {result['fps']:g} fps ({result['fps_source']}), {result['clips']} clip(s)"
    if result.get("reference") is not None:
        frames += (f"; reference {result['reference']}: {result['reference_frames']} frames, "
                   f"{result['compared_frames']} compared")
    out += [frames, "", "## Whole video, as VBench scores it", "", markdown_table([(name, result["video"])]),
            f"**Aggregation.** {result['aggregation']['video']} {result['aggregation']['paper_row']}", ""]
    details = result.get("details", {}).get("dynamic_degree")
    if details:
        out += [f"D.D.: frames every {details['frame_interval']} at {details['fps']:g} fps ({details['sampled_frames']} "
                f"frames); {details['pairs_over_threshold']} pair(s) over {details['threshold_px']:.2f} px, "
                f"{details['pairs_needed']} needed for a dynamic video.", ""]
    out += ["## Per clip (ours)", "", result["aggregation"]["per_clip"], "", per_clip_table(result)]
    drift = {k: v for k, v in result["drift"].items() if v is not None}
    if drift:
        headers = {k: h for k, h, _ in PAPER_COLUMNS + EXTRA_COLUMNS}
        out += ["Drift over the full clips (mean relative change from clip 0, weighted by clip index; PSNR capped "
                "at 100 dB): " + ", ".join(f"{headers.get(k, k)} {100 * v:.2f}%" for k, v in drift.items()), ""]
    colour = result["colour"]
    out += ["## Seams and colour jumps at clip boundaries (ours)", "", boundaries_table(result),
            "Seam score: the change across the boundary over the change the motion around it explains (flow-"
            "compensated residual, jump of the flow against the neighbouring pairs); flagged above "
            f"{SEAM_THRESHOLD:g}. colour_jump: ΔE76 of the mean colour of the {COLOUR_WINDOW} frames before the "
            f"shared frame against the {COLOUR_WINDOW} after, on the region matched by optical flow; flagged above "
            f"{COLOUR_JUMP_THRESHOLD:g} ΔE.", "", "## Colour drift (ours)", "",
            f"{_delta_e(colour['drift'])} after the last clip ({colour['boundaries_used']} boundary colour step(s) "
            f"summed" + (f"; boundaries {colour['boundaries_unmatched']} had no matched region and are left out"
                         if colour["boundaries_unmatched"] else "") + "). " + colour["definition"], ""]
    control = result.get("control", {})
    if control:
        out += ["## Control adherence (ours)", ""]
        for key, value in control.items():
            if isinstance(value, str):
                out.append(f"- {key}: {value}")
            elif key == "depth":
                out.append(f"- depth: mean error {value['mean']:.4f} ({value['model']}); {value['definition']}")
            elif key == "tracks":
                mean = value["mean_error_px"]
                out.append(f"- tracks: mean end-point error {'–' if mean is None else f'{mean:.2f} px'} over "
                           f"{value['clips_compared']} clip(s) ({value['tracker']})")
        out.append("")
    out += section_markdown(result)
    out += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(out) + "\n"


def write_report(out_dir: str | Path, result: dict, name: str = "generated") -> dict:
    """metrics.json, metrics.md and the plots of one evaluated video into ``out_dir`` (a new, empty or
    earlier evaluation folder: :func:`~longvie.media.output_dir.claim_output_dir`)."""
    out_dir = claim_output_dir(out_dir, "evaluation report", kind=REPORT_KIND)
    mark_output_dir(out_dir, REPORT_KIND)
    data = json_safe(result)
    plots = write_plots(out_dir, [(name, data)])
    atomic_write_text(out_dir / "metrics.md", report_markdown(data, name, plots))
    # metrics.json last: its presence means the report is complete (the benchmark runner relies on it)
    return {"table": out_dir / "metrics.md", "plots": plots,
            "json": write_metrics_json(out_dir / "metrics.json", result)}
