"""Measure what the latent cache saves: training steps from pixels vs. from cached latents.

    python scripts/bench_latent_cache.py [--steps 12] [--stage 1] [--threads 1] [--out /tmp/bench_cache]

Runs the tiny preset (CPU, tiny random Wan2.1-I2V, synthetic clips at 32 x 48 x 9 frames) twice
with the same seed: once reading and encoding the videos at every step (VAE, umT5, CLIP), once
from a latent cache built first (``--build-cache``). Prints the median seconds per optimizer step
of both (the first step is left out as warm-up), the speed-up, and the cache build time.

On the tiny preset the frozen encoders dominate a step, so the speed-up is large; on the real 14B
model the DiT forward/backward dominates and the cache saves the VAE/umT5/CLIP time of each step
(measure it there with the same two commands on your data).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(stage: int, output: Path, steps: int, cache_dir: Path | None = None, build_cache: bool = False) -> list[float]:
    from accelerate.state import AcceleratorState, GradientState

    from longvie.train.config import load_train_config
    from longvie.train.metrics import read_metrics
    from longvie.train.trainer import train

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    overrides = {"train.output_dir": str(output), "train.max_steps": steps, "train.save_every": steps,
                 "data.cache_dir": str(cache_dir) if cache_dir else None}
    train(load_train_config(stage=stage, preset="tiny", overrides=overrides), build_cache=build_cache)
    return [row["step_seconds"] for row in read_metrics(output / "logs" / "metrics.csv")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import torch

    if args.out:  # a folder named by the user: new, empty or a work folder of this script, never other files
        from longvie.media.output_dir import OutputDirError, claim_output_dir, mark_output_dir

        try:
            claim_output_dir(args.out, "benchmark work folder", kind="bench-latent-cache")
        except OutputDirError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        mark_output_dir(args.out, "bench-latent-cache")
    torch.set_num_threads(args.threads)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_latent_cache_"))
    os.environ.setdefault("LONGVIE_TINY_DIR", str(work / "tiny"))
    from longvie.train.presets import prepare_tiny_assets

    prepare_tiny_assets()

    pixels = run(args.stage, work / "pixels", args.steps)
    started = time.perf_counter()
    cached_with_build = run(args.stage, work / "cached", args.steps, cache_dir=work / "cache", build_cache=True)
    build_and_train = time.perf_counter() - started
    cached = run(args.stage, work / "cached_again", args.steps, cache_dir=work / "cache")

    pixel_step, cached_step = statistics.median(pixels[1:]), statistics.median(cached[1:])
    build_seconds = build_and_train - sum(cached_with_build)  # includes model loading, like any run's setup
    print(f"tiny preset, stage {args.stage}, {args.steps} steps, {args.threads} thread(s), "
          f"{os.cpu_count()} CPU core(s)")
    print(f"  from pixels : {pixel_step * 1000:8.1f} ms/step (median of steps 2..{args.steps})")
    print(f"  from cache  : {cached_step * 1000:8.1f} ms/step")
    print(f"  speed-up    : {pixel_step / cached_step:8.2f} x")
    clips = json.loads((work / "cache" / "manifest.json").read_text())["clips"]
    print(f"  cache build : {build_seconds:8.1f} s for {clips} clips (model loading included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
