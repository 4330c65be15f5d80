"""Time one LongVie 2 clip: conditioning, seconds per denoising step, decoding (prints numbers).

    python scripts/bench_pipeline.py                                   # tiny random model, CPU
    python scripts/bench_pipeline.py --base-dir models/Wan2.1-I2V-14B-480P-Diffusers \
        --longvie-dir models/LongVie2 --dtype bfloat16 --offload model --steps 10 \
        --frames 81 --height 352 --width 640

With --base-dir unset, tiny checkpoints are written to a temporary folder (no download).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from longvie.presets.config import torch_dtype
from longvie.presets.tiny import write_tiny_checkpoints
from longvie.sampling.pipeline import LongViePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-dir")
    parser.add_argument("--longvie-dir")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--offload", default="none", choices=["none", "model", "group"])
    parser.add_argument("--attention", default="auto", help="attention backend (auto, native, flash, ...)")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--history", action="store_true", help="also pass 8 history frames (clips after the first)")
    args = parser.parse_args()

    if args.base_dir is None:
        args.base_dir, args.longvie_dir = write_tiny_checkpoints(tempfile.mkdtemp(prefix="longvie_bench_"))
    started = time.perf_counter()  # loading: CPU-side work, synchronised below before it is printed
    pipe = LongViePipeline.from_pretrained(args.base_dir, args.longvie_dir, torch_dtype=torch_dtype(args.dtype),
                                           device=args.device, offload=args.offload,
                                           attention_backend=args.attention)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    print(f"load: {time.perf_counter() - started:.1f} s")
    print(pipe.attention_choice.describe())

    rng = np.random.default_rng(0)
    video = lambda: rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)  # noqa: E731
    step_times = []

    cuda = torch.cuda.is_available() and pipe._execution_device.type == "cuda"

    def now() -> float:
        """Wall time after the GPU finished the queued work (CUDA runs asynchronously)."""
        if cuda:
            torch.cuda.synchronize(pipe._execution_device)
        return time.perf_counter()

    def on_step(_pipe, _step, _t, _state):
        step_times.append(now())

    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe._execution_device)
    started = now()
    frames, _ = pipe(video()[0], "a benchmark clip", video(), video(), history=video()[-8:] if args.history else None,
                     num_frames=args.frames, height=args.height, width=args.width,
                     num_inference_steps=args.steps, guidance_scale=args.cfg, progress=False,
                     callback_on_step_end=on_step)
    total = now() - started
    per_step = np.diff(step_times)
    print(f"clip {frames.shape}: {total:.2f} s in total")
    if len(per_step):
        print(f"denoising step (CFG {'on' if args.cfg != 1 else 'off'}): median {np.median(per_step):.3f} s "
              f"over {len(per_step)} steps (first step excluded)")
    print(f"conditioning + first step + decoding: {total - per_step.sum():.2f} s")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(pipe._execution_device) / 2**30:.1f} GiB "
              "(compare: python -m longvie.benchmark --estimate-memory)")


if __name__ == "__main__":
    main()
