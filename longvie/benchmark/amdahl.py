"""Serial fraction of a long-video clip on several GPUs, and the speed-up Amdahl's law expects from it.

    python -m longvie.benchmark --amdahl                                  # tiny preset on the CPU
    python -m longvie.benchmark --amdahl --preset release --random-weights --device cuda --ranks 8

Measures, in one process on one device, every part of a later clip (history on, guidance on) the way
the multi-GPU path (``torchrun ... python -m longvie.sample --sp N [--cfg-parallel]``) splits it:

=========  =====================================================================  ==================
part       what                                                                   on N ranks
=========  =====================================================================  ==================
host       rank 0 reads the two control videos, hands the call to the other       serial
           ranks (pickling its arguments), writes the clip (lossless state + mp4)
encoders   each encoder call: CLIP, the five VAE encodes (image condition, each   one task per rank,
           control video and its first-frame condition), the history encode      biggest first
denoise    every step, both guidance branches                                     / N
decode     untiled: every rank decodes the whole clip; tiled (--vae-tiling):      serial; tiles split
           diffusers' tiles, one task each, plus the blending                     over the ranks
text       umT5, per prompt: once per run (prompts are cached), not per clip      (reported only)
=========  =====================================================================  ==================

Expected time on N ranks: T(N) = host + makespan(encoders, N) + denoise / N + decode(N), where the
makespan is the most loaded rank's time under the pipeline's own task assignment
(:func:`longvie.acceleration.parallel.makespan`). Speed-up S(N) = T(1) / T(N). The serial fraction is
Amdahl's law S(N) = 1 / (s + (1 - s) / N) solved for s at the largest N (Karp and Flatt, "Measuring
parallel processor performance", CACM 33(5), 1990): s = (N / S(N) - 1) / (N - 1). Communication
(the attention all-to-alls, the broadcasts) is not in the model: measuring it needs several GPUs.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import torch

GOAL_SPEED_UP = 6.0  # on 8 GPUs (issue 21)
DEFAULT_RANKS = (1, 2, 4, 8)


def _timed(device: torch.device, fn):
    from .speed import synchronize

    synchronize(device)
    started = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - started, result


def measure_parts(pipe, args, device: torch.device) -> dict:
    """Seconds of every part of one clip (see the module docstring), measured in this process."""
    from ..acceleration.parallel import assemble_tiles, decode_tile, decode_tiles
    from ..longvideo.run_state import RunDir
    from ..media.video_io import fit_frames, read_video, write_video
    from ..sampling.conditioning import encode_prompt, frames_to_tensor, vae_decode
    from ..sampling.distributed import encoder_tasks
    from .speed import StageTimer, clip_inputs

    inputs = clip_inputs(args)  # args.history is set: a later clip
    dtype = pipe.denoiser.dtype
    parts: dict = {}

    def pixels(video):
        return frames_to_tensor(fit_frames(video, args.height, args.width)).to(device)

    with torch.no_grad():
        pipe(**inputs, num_inference_steps=1)  # warm-up of every model (first calls allocate, pick kernels)
    # text: one prompt through umT5 (cached once per run)
    parts["text_per_prompt"], _ = _timed(device, lambda: encode_prompt(pipe.tokenizer, pipe.text_encoder,
                                                                       [inputs["prompt"]], device, dtype))
    # encoders: every task of the split, one at a time
    first = pixels(inputs["image"][None])[:, :, 0]
    tasks = encoder_tasks(pipe, first, args.frames, lambda: pixels(inputs["dense_video"]),
                          lambda: pixels(inputs["sparse_video"]), lambda: pixels(inputs["history"]))
    with torch.no_grad():
        parts["encoders"] = {name: _timed(device, fn)[0] for name, (_, fn, _allowed) in tasks.items()}

    # denoise: the pipeline's own stage timer over the whole clip
    timer = StageTimer(device)
    pipe.stage_timer = timer
    try:
        with torch.no_grad():
            frames, noise = pipe(**inputs, num_inference_steps=args.steps)
    finally:
        pipe.stage_timer = None
    parts["denoise"] = timer.seconds["denoise"]
    parts["pipeline_stages"] = dict(timer.seconds)

    # decode: untiled (whole clip) and tiled (per tile + the blending)
    latents = torch.randn(1, 16, 1 + (args.frames - 1) // 4, args.height // 8, args.width // 8, device=device)
    tiling = pipe.vae_tiling
    with torch.no_grad():
        pipe.set_vae_tiling(False)
        parts["decode_untiled"], _ = _timed(device, lambda: vae_decode(pipe.vae, latents))
        pipe.set_vae_tiling(True)
        mean = torch.tensor(pipe.vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(pipe.vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
        z = (latents * std + mean).to(next(pipe.vae.parameters()).dtype)
        tiles = decode_tiles(pipe.vae, z)
        if tiles is None:  # the clip fits in one tile: the tiled decode is the untiled one
            parts["decode_tiles"], parts["decode_assembly"] = [parts["decode_untiled"]], 0.0
        else:
            decoded, seconds = [], []
            for tile in tiles:
                took, out = _timed(device, lambda tile=tile: decode_tile(pipe.vae, z, tile))
                decoded.append(out)
                seconds.append(took)
            parts["decode_tiles"] = seconds
            parts["decode_assembly"], _ = _timed(device, lambda: assemble_tiles(pipe.vae, z, tiles, decoded))
        pipe.set_vae_tiling(tiling)

    # host: rank 0 alone (controls read, call handed to the other ranks, clip written)
    with tempfile.TemporaryDirectory(prefix="longvie_amdahl_") as tmp:
        control = Path(tmp) / "control.mp4"
        write_video(control, inputs["dense_video"], fps=16)
        read = _timed(torch.device("cpu"), lambda: [fit_frames(read_video(control, max_frames=args.frames),
                                                               args.height, args.width) for _ in range(2)])[0]
        call = (inputs["image"], inputs["prompt"], inputs["dense_video"], inputs["sparse_video"],
                dict(history=inputs["history"], noise=noise))
        handoff = _timed(torch.device("cpu"), lambda: pickle.loads(pickle.dumps(call)))[0]
        run = RunDir(Path(tmp) / "run")
        run.root.mkdir(parents=True, exist_ok=True)
        write = _timed(torch.device("cpu"), lambda: (run.save_clip_state(0, frames, noise, {"clip": 0}),
                                                     run.write_clip_video(0, frames, 16)))[0]
    parts["host"] = {"read_controls": read, "handoff": handoff, "write_clip": write}
    return parts


def expected_times(parts: dict, ranks: list[int]) -> list[dict]:
    """T(N), S(N) for each N in ``ranks``, for the untiled and the tiled decode (see the module docstring)."""
    from ..acceleration.parallel import makespan

    host = sum(parts["host"].values())
    encoder_costs = list(parts["encoders"].values())
    tiles = parts["decode_tiles"]
    def seconds(n):
        common = host + makespan(encoder_costs, n) + parts["denoise"] / n
        return common + parts["decode_untiled"], common + makespan(tiles, n) + parts["decode_assembly"]

    one_untiled, one_tiled = seconds(1)
    rows = []
    for n in ranks:
        untiled, tiled = seconds(n)
        rows.append({"ranks": n, "seconds_untiled": untiled, "seconds_tiled": tiled,
                     "speed_up_untiled": one_untiled / untiled, "speed_up_tiled": one_tiled / tiled})
    return rows


def serial_fraction(speed_up: float, ranks: int) -> float:
    """Amdahl's serial fraction that gives ``speed_up`` on ``ranks`` ranks (Karp-Flatt)."""
    return (ranks / speed_up - 1) / (ranks - 1) if ranks > 1 else 0.0


def report(parts: dict, rows: list[dict]) -> str:
    host = parts["host"]
    lines = ["| part | seconds | on N ranks |", "|---|---|---|"]
    lines += [f"| host: read controls | {host['read_controls']:.4f} | rank 0 (serial) |",
              f"| host: hand the call to the other ranks (pickle) | {host['handoff']:.4f} | rank 0 (serial) |",
              f"| host: write the clip (state + mp4) | {host['write_clip']:.4f} | rank 0 (serial) |"]
    lines += [f"| encoder: {name} | {seconds:.4f} | one rank |" for name, seconds in parts["encoders"].items()]
    lines += [f"| denoise (all steps, both branches) | {parts['denoise']:.4f} | / N |",
              f"| decode, untiled | {parts['decode_untiled']:.4f} | every rank (serial) |",
              f"| decode, tiled: {len(parts['decode_tiles'])} tile(s) | {sum(parts['decode_tiles']):.4f} | "
              f"tiles over the ranks |",
              f"| decode, tiled: blending | {parts['decode_assembly']:.4f} | every rank (serial) |",
              f"| text: umT5 per prompt | {parts['text_per_prompt']:.4f} | once per run (cached) |", "",
              "| ranks | s/clip (untiled decode) | speed-up | s/clip (tiled decode) | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {r['ranks']} | {r['seconds_untiled']:.3f} | {r['speed_up_untiled']:.2f}x | {r['seconds_tiled']:.3f} | "
              f"{r['speed_up_tiled']:.2f}x |" for r in rows]
    last = rows[-1]
    if last["ranks"] > 1:
        n = last["ranks"]
        lines += ["", f"serial fraction (Amdahl, from the {n}-rank speed-up): "
                      f"{serial_fraction(last['speed_up_untiled'], n):.4f} untiled decode, "
                      f"{serial_fraction(last['speed_up_tiled'], n):.4f} tiled decode",
                  f"expected {n}-GPU speed-up: {last['speed_up_untiled']:.2f}x (untiled decode), "
                  f"{last['speed_up_tiled']:.2f}x (--vae-tiling); goal >= {GOAL_SPEED_UP:g}x: "
                  f"{'met' if max(last['speed_up_untiled'], last['speed_up_tiled']) >= GOAL_SPEED_UP else 'not met'}"
                  " (communication not included: not measured on one device)"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .speed import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m longvie.benchmark --amdahl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--ranks", type=int, nargs="+", default=list(DEFAULT_RANKS),
                        help="rank counts to predict (the last one gives the serial fraction) [1 2 4 8]")
    parser.add_argument("--json", type=Path, default=None, help="write the parts and predictions here")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..presets.config import torch_dtype
    from .speed import device_name, load_pipeline

    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    release = args.preset == "release"
    args.frames = args.frames or (81 if release else 9)
    args.height = args.height or (352 if release else 64)
    args.width = args.width or (640 if release else 112)
    args.steps = args.steps or (50 if release else 4)
    args.history = True
    ranks = sorted(set(args.ranks) | {1})
    if any(n < 1 for n in ranks):
        print("error: --ranks takes positive rank counts", file=sys.stderr)
        return 2
    pipe = load_pipeline(args, device, dtype)
    parts = measure_parts(pipe, args, device)
    rows = expected_times(parts, ranks)
    print(f"device: {device_name(device)}; torch {torch.__version__}; dtype {str(dtype).split('.')[-1]}; preset "
          f"{args.preset}{' (random weights)' if args.random_weights else ''}; {args.frames} frames "
          f"{args.height}x{args.width}, {args.steps} steps, cfg {args.cfg}, history")
    print(report(parts, rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device_name(device), "preset": args.preset,
                                         "frames": args.frames, "height": args.height, "width": args.width,
                                         "steps": args.steps, "cfg": args.cfg, "parts": parts,
                                         "predictions": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
