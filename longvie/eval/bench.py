"""``python -m longvie.eval.bench``: a LongVGenBench-style benchmark — generate, evaluate, aggregate.

    python -m longvie.eval.bench BENCH_DIR --out OUT [--preset tiny --height 32 --width 48 --steps 2]
    python -m longvie.eval.bench BENCH_DIR --out OUT_UPSTREAM --generated-from upstream_videos/

BENCH_DIR has one sub-folder per video, either

* ``first.png`` + ``cond.json`` + the control videos (``utils/prepare_controls.py`` or
  ``python -m longvie.examples.synthetic``), with an optional ground truth ``reference.mp4``; or
* only a source video (``source.mp4``, see ``python -m longvie.eval.make_bench``): its controls are
  prepared into ``OUT/prepared/<name>`` with ``utils/prepare_controls.py`` (placeholder prompts unless
  the folder has a cond.json) and the source video is the reference.

For each video, in name order: generate ``OUT/runs/<name>`` with the long-video sampler (the same code
path as ``python -m longvie.sample``; a run directory resumes after its last finished clip), evaluate
into ``OUT/eval/<name>`` (skipped when its metrics.json exists: written last, atomically), then write
``OUT/summary.md`` (one row per video, their mean, the paper's LongVie 2 row), ``OUT/summary.json`` and
the per-clip plots of every video together. Killed at any moment, the same command continues.

``--generated-from DIR`` scores videos made by another system instead of generating: ``DIR/<name>.mp4``,
``DIR/<name>/video.mp4`` or a run directory ``DIR/<name>/``. Videos are processed sequentially; to use
several GPUs start one process per GPU with ``--shard K/N`` (``CUDA_VISIBLE_DEVICES=K``), then run the
command once more without ``--shard`` to write the summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..media.atomic import atomic_write_text
from .cli import add_backend_arguments, backend_options, eval_settings, setup_logging
from .report import EXTRA_COLUMNS, PAPER_COLUMNS, json_safe, markdown_table, write_metrics_json, write_plots

__all__ = ["BenchEntry", "find_entries", "aggregate", "main"]

logger = logging.getLogger("longvie.eval")
REPO_ROOT = Path(__file__).resolve().parents[2]
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
REFERENCE_NAMES = ("reference.mp4", "source.mp4", "gt.mp4")
FRAME_WEIGHTED = ("subject_consistency", "background_consistency")
BENCH_KIND = "eval-bench"  # the output-folder marker's kind (longvie.media.output_dir)


class BenchEntry:
    """One benchmark video: its folder, condition list (once prepared) and reference."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        self.cond = folder / "cond.json" if (folder / "cond.json").is_file() else None
        self.reference = next((folder / n for n in REFERENCE_NAMES if (folder / n).is_file()), None)
        if self.reference is None:
            videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES
                            and not p.name.startswith(("depth_", "track_")))
            self.reference = videos[0] if len(videos) == 1 else None

    @property
    def needs_controls(self) -> bool:
        return self.cond is None or not (self.folder / "first.png").is_file()


def find_entries(bench_dir: Path) -> list[BenchEntry]:
    """The sub-folders of ``bench_dir`` that hold a condition list or a source video, in name order."""
    if not bench_dir.is_dir():
        raise ValueError(f"benchmark folder {bench_dir} not found — make one with python -m longvie.eval.make_bench")
    entries = []
    for folder in sorted(p for p in bench_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = BenchEntry(folder)
        if entry.cond is None and entry.reference is None:
            logger.warning("skipping %s: no cond.json and no source video", folder)
            continue
        entries.append(entry)
    if not entries:
        raise ValueError(f"{bench_dir} has no video sub-folder (each needs first.png + cond.json, or a source video)")
    return entries


def _prepare_controls(entry: BenchEntry, out: Path, args) -> Path:
    """cond.json of ``entry``'s source video, made once by utils/prepare_controls.py."""
    target = out / "prepared" / entry.name
    if (target / "cond.json").is_file():  # written last by prepare_controls
        return target / "cond.json"
    script = REPO_ROOT / "utils" / "prepare_controls.py"
    command = [sys.executable, str(script), str(entry.reference), str(target)]
    if args.local_files:
        command.append("--local-files")
    if args.vda_checkpoint:
        command += ["--vda-checkpoint", args.vda_checkpoint]
    logger.info("%s: preparing controls: %s", entry.name, " ".join(command))
    done = subprocess.run(command, check=False)
    if done.returncode != 0 or not (target / "cond.json").is_file():
        raise RuntimeError(f"{entry.name}: utils/prepare_controls.py failed (exit {done.returncode}); run it by "
                           f"hand to see why, or put first.png + cond.json into {entry.folder}")
    logger.warning("%s: prompts are placeholders (no captioning model); O.C. is meaningless for it", entry.name)
    return target / "cond.json"


def _sample_argv(entry: BenchEntry, cond: Path, run_dir: Path, args) -> list[str]:
    argv = ["--config", args.config, "--cond", str(cond), "--out", str(run_dir), "--no-progress"]
    for flag, value in (("--height", args.height), ("--width", args.width), ("--steps", args.steps),
                        ("--num-frames", args.num_frames), ("--clips", args.clips), ("--seed", args.seed),
                        ("--device", args.device), ("--offload", args.offload)):
        if value is not None:
            argv += [flag, str(value)]
    image = cond.parent / "first.png"
    if not image.is_file() and (entry.folder / "first.png").is_file():
        image = entry.folder / "first.png"
    return argv + ["--image", str(image)]


def _generated_from(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.mp4", directory / name / "video.mp4", directory / name):
        if candidate.is_file() or (candidate.is_dir() and (candidate / "manifest.json").is_file()):
            return candidate
    raise ValueError(f"--generated-from {directory}: no video for {name} (expected {name}.mp4, {name}/video.mp4 "
                     f"or a run directory {name}/)")


def aggregate(results: list[tuple[str, dict]]) -> dict:
    """Each metric over the videos that have it, as VBench combines videos: the mean of the per-video
    values, except S.C. and B.C., which VBench divides the sum over all frame pairs by their count
    (``subject_consistency.py``: ``sim / cnt``), i.e. weights each video by its frames - 1. Strings
    ("not computed") are skipped."""
    keys = [k for k, _, _ in PAPER_COLUMNS + EXTRA_COLUMNS]
    results = [(name, _numeric_result(r)) for name, r in results]  # "inf" (JSON) back to float
    mean = {}
    for key in keys:
        rows = [r for _, r in results if isinstance(r["video"].get(key), (int, float))]
        if not rows:
            mean[key] = next((r["video"][key] for _, r in results if isinstance(r["video"].get(key), str)), None)
            continue
        weights = [max(r["frames"] - 1, 1) if key in FRAME_WEIGHTED else 1 for r in rows]
        mean[key] = float(np.average([r["video"][key] for r in rows], weights=weights))
    drifts = [r["colour"]["drift"] for _, r in results if r["colour"].get("drift") is not None]
    mean["colour_drift"] = float(np.mean(drifts)) if drifts else None
    mean["boundaries_flagged"] = int(sum(r["boundaries_flagged"] for _, r in results))
    mean["boundaries"] = int(sum(len(r["boundaries"]) for _, r in results))
    return mean


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.eval.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_dir", type=Path, help="benchmark folder: one sub-folder per video")
    parser.add_argument("--out", required=True, type=Path, help="output folder (runs/, eval/, summary.md)")
    parser.add_argument("--generated-from", type=Path, help="score these videos instead of generating")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="process only videos K, K+N, ... (0-based), e.g. one process per GPU; the summary is "
                             "written once every video is evaluated (re-run without --shard to aggregate)")
    gen = parser.add_argument_group("generation (as python -m longvie.sample)")
    gen.add_argument("--config", "--preset", dest="config", default="longvie2_i2v_14b", help="config or preset name")
    for flag, kind in (("--height", int), ("--width", int), ("--steps", int), ("--num-frames", int),
                       ("--clips", int), ("--seed", int)):
        gen.add_argument(flag, type=kind)
    gen.add_argument("--offload", choices=("none", "model", "group"))
    add_backend_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from ..media.output_dir import OutputDirError, claim_output_dir, mark_output_dir
    from .backends import load_backends
    from .evaluate import evaluate_files

    try:
        claim_output_dir(args.out, "benchmark output", kind=BENCH_KIND)
        entries = find_entries(args.bench_dir)
        options = backend_options(args)
        settings = eval_settings(args)
    except (ValueError, OutputDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out
    shard = _parse_shard(args.shard)
    if shard is None:
        print(f"error: --shard {args.shard}: expected K/N with 0 <= K < N, e.g. 0/4", file=sys.stderr)
        return 2
    mark_output_dir(out, BENCH_KIND)
    backends = None
    results = []
    for number, entry in enumerate(entries, start=1):
        eval_dir = out / "eval" / entry.name
        if (number - 1) % shard[1] != shard[0]:
            if (eval_dir / "metrics.json").is_file():
                results.append((entry.name, json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))))
            continue
        if (eval_dir / "metrics.json").is_file():
            logger.info("[%d/%d] %s: already evaluated (%s)", number, len(entries), entry.name, eval_dir)
            results.append((entry.name, json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))))
            continue
        try:
            if args.generated_from is not None:
                generated, prompts = _generated_from(args.generated_from, entry.name), entry.cond
            else:
                from ..longvideo import cli as sample_cli

                cond = _prepare_controls(entry, out, args) if entry.needs_controls else entry.cond
                generated, prompts = out / "runs" / entry.name, None
                logger.info("[%d/%d] %s: generating into %s", number, len(entries), entry.name, generated)
                code = sample_cli.main(_sample_argv(entry, cond, generated, args))
                if code != 0:
                    raise RuntimeError(f"{entry.name}: generation failed (exit {code}); see the message above")
        except (RuntimeError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if backends is None:
            backends = load_backends(options)
        logger.info("[%d/%d] %s: evaluating into %s", number, len(entries), entry.name, eval_dir)
        result = evaluate_files(generated, eval_dir, entry.reference, prompts, backends, settings, entry.name)
        results.append((entry.name, json_safe(result)))

    from .report import summary_line

    if len(results) < len(entries):
        print(f"shard {args.shard} done; {len(entries) - len(results)} video(s) of other shards not evaluated yet: "
              f"re-run without --shard once they are, to write the summary")
        return 0
    mean = aggregate(results)
    from .evaluate import AGGREGATION

    title = f"# Benchmark {args.bench_dir.name}: {len(results)} video(s)\n\n"
    table = markdown_table([(name, r["video"]) for name, r in results] + [("all videos (VBench's mean)", mean)])
    table += f"\n**Aggregation.** {AGGREGATION['video']} {AGGREGATION['paper_row']}\n"
    plots = write_plots(out, [(name, _numeric_result(r)) for name, r in results])
    atomic_write_text(out / "summary.md", title + table + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots)
                      + "\n")
    write_metrics_json(out / "summary.json", {"videos": {name: r["video"] for name, r in results}, "mean": mean})
    for name, r in results:
        print(summary_line(name, _numeric_result(r)))
    print(f"summary: {out / 'summary.md'} ({len(results)} videos)  plots: {out}/*.png")
    return 0


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return 0, 1
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        return None
    return (k, n) if 0 <= k < n else None


def _numeric_result(result: dict) -> dict:
    """A metrics.json dict with "inf" strings turned back into floats (for plots and summaries)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return float(value) if value in ("inf", "-inf") else value

    return convert(result)


if __name__ == "__main__":
    raise SystemExit(main())
