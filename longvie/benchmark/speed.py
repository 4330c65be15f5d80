"""Speed benchmark: one clip per mode, against the exact path, in one process (prints a table, writes JSON).

    python -m longvie.benchmark                                   # tiny preset on the CPU: exact path
    python -m longvie.benchmark --cfg-batch --compile --cache firstblock --json bench.json
    python -m longvie.benchmark --preset release --random-weights --device cuda --dtype bfloat16 \\
        --steps 10 --cfg-batch --compile --fp8                    # the real 14B shapes, no download
    python -m longvie.benchmark --base-dir models/Wan2.1-I2V-14B-480P-Diffusers --longvie-dir models/LongVie2

Per mode: seconds per stage (text encoder, image encoder, VAE encode of image/controls/history, the
denoising steps, VAE decode), seconds per step and per clip, peak GPU memory
(``torch.cuda.max_memory_allocated``) and peak host RSS (sampled every 5 ms), achieved TFLOP/s of the
denoising from the analytic count of :mod:`longvie.benchmark.flops`, MFU against the GPU's dense
bf16 peak (``--peak-tflops`` to give it), and the decoded frames' max/mean difference and PSNR against
the exact path (same seed). CUDA timings are synchronised at stage boundaries only: the step loop
itself never waits for the GPU. Each mode runs once untimed with one step first (warm-up,
compilation) unless ``--no-warmup``.

Modes (each a flag; "exact" always runs first): ``--cfg-batch`` (guidance as one batch of 2),
``--compile`` (regional compilation of the repeated blocks), ``--cache KIND`` (step caching: one row per
published threshold, see :mod:`longvie.benchmark.step_modes`), ``--fast`` (4-step distilled mode with its
LoRA, against the exact clip), ``--attention-rows [BACKEND ...]`` (one row per attention backend; none
named: every backend usable here), ``--fp8`` (FP8 block weights with per-row scales: FP8 GEMMs where the
GPU runs them, else weight-only), ``--offload model|group`` (last; with ``--fp8``, FP8 + offload).
Compilation and the fast mode's LoRA are undone after their run; FP8 cannot be undone and runs after the
reversible modes. FP8 and offload go through :func:`longvie.acceleration.modes.apply_modes`. ``H2D
GiB/call``: weight bytes the offload copied to the GPU per denoiser call. ``--mode-matrix`` runs every
combination instead (:mod:`.matrix`). ``--calibrate-magcache FILE`` records MagCache's magnitude ratios
from one exact clip instead.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .flops import clip_flops, peak_tflops, shape_of, token_counts

STAGES = ("text_encoder", "image_encoder", "vae_encode", "denoise", "vae_decode")
HISTORY_FRAMES = 8


# --------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """``with timer("denoise"): ...`` adds the stage's wall time (synchronised on CUDA) to ``timer.seconds``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - started


class PeakRSS:
    """Peak resident set size of this process while active, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def frame_difference(frames: np.ndarray, reference: np.ndarray) -> dict:
    """Max and mean absolute difference (0..255), PSNR (dB, peak 255) and mean per-frame SSIM
    (:func:`longvie.eval.quality.ssim`; None for frames under 11 px) of (T, H, W, 3) uint8 videos."""
    from ..eval.quality import ssim

    diff = frames.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return {"max_diff": float(np.abs(diff).max()), "mean_diff": float(np.abs(diff).mean()),
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse),
            "ssim": float(ssim(frames, reference)) if min(frames.shape[1:3]) >= 11 else None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}, {torch.get_num_threads()} torch threads"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


# --------------------------------------------------------------------------- modes
@dataclass
class Mode:
    """A benchmark mode: extra pipeline-call arguments and/or an in-place change of the pipeline."""

    name: str
    call_kwargs: dict = field(default_factory=dict)
    apply: Callable | None = None     # apply(pipe) -> None, in place
    undo: Callable | None = None      # undo(pipe) -> None after the mode's run; None = stays applied


def _compile(pipe):
    from ..acceleration.compile import apply_regional_compile

    apply_regional_compile(pipe.denoiser)


def _uncompile(pipe):
    from ..acceleration.compile import remove_regional_compile

    remove_regional_compile(pipe.denoiser)


def _apply_modes(pipe, **request):
    """Apply a :class:`~longvie.acceleration.modes.ModeRequest` to the loaded pipeline (the code every caller
    uses), keeping its attention backend."""
    from ..acceleration.modes import DeviceInfo, ModeRequest, apply_modes, plan_modes

    request.setdefault("attention", pipe.attention_choice.backend if pipe.attention_choice else "auto")
    plan = plan_modes(ModeRequest(**request), DeviceInfo.probe(pipe._execution_device, pipe.denoiser.dtype))
    return apply_modes(pipe, plan)


def _fp8(pipe):
    _apply_modes(pipe, fp8=True)


def _attention(backend: str):
    def apply(pipe):
        from ..acceleration.attention import select_attention_backend

        pipe._benchmark_attention = pipe.attention_choice
        pipe.set_attention(select_attention_backend(backend, pipe._execution_device, pipe.denoiser.dtype))

    def undo(pipe):
        pipe.set_attention(pipe._benchmark_attention)

    return apply, undo


def _vae_tiling(enabled: bool):
    return lambda pipe: pipe.set_vae_tiling(enabled)


def _offload(mode: str):
    def apply(pipe):
        _apply_modes(pipe, offload=mode)

    return apply


def selected_modes(args) -> list[Mode]:
    modes = [Mode("exact")]
    if args.cfg_batch:
        modes.append(Mode("cfg-batch", {"cfg_batch": True}))
    from .step_modes import cache_modes, fast_mode

    modes += cache_modes(args, Mode)
    if args.compile:
        modes.append(Mode("compile", apply=_compile, undo=_uncompile))
    if args.repeat_exact:
        modes.append(Mode("exact-again"))
    for backend in args.attention_rows or []:
        apply, undo = _attention(backend)
        modes.append(Mode(f"attention-{backend}", apply=apply, undo=undo))
    if args.vae_tiling:
        modes.append(Mode("vae-tiling", apply=_vae_tiling(True), undo=_vae_tiling(False)))
    if getattr(args, "fast", False):
        modes.append(fast_mode(args, Mode))
    if args.fp8:
        modes.append(Mode("fp8", apply=_fp8))
    if args.offload:  # last: offload hooks stay; after --fp8 this measures FP8 storage + offload
        modes.append(Mode(f"{'fp8+' if args.fp8 else 'offload-'}{args.offload}", apply=_offload(args.offload)))
    return modes


# --------------------------------------------------------------------------- pipelines
def _built_on(device, dtype, build):
    """Construct a module directly on ``device`` in ``dtype`` (no float32 copy on the host)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return build()
    finally:
        torch.set_default_dtype(previous)


def _keep_fp32(module, names) -> None:
    for name, sub in module.named_modules():
        if any(part in names for part in name.split(".")):
            sub.float()


def random_release_pipeline(device: torch.device, dtype: torch.dtype):
    """LongVie 2 on Wan2.1-I2V-14B-480P at the real shapes with random weights (speed only: outputs are noise).

    DiT (40 x 5120), control branch (2 x 12 x 2560), umT5-XXL encoder, CLIP ViT-H/14 vision tower and the
    Wan VAE, built straight on ``device``; the byte-level tokenizer of the tiny preset stands in for umT5's.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from ..models import LongVieControlBranch, LongVieDenoiser
    from ..presets.tiny import make_byte_tokenizer
    from ..sampling.pipeline import LongViePipeline

    transformer = _built_on(device, dtype, lambda: WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024))
    _keep_fp32(transformer, set(WanTransformer3DModel._keep_in_fp32_modules))
    control = _built_on(device, dtype, lambda: LongVieControlBranch(
        **LongVieControlBranch.config_for(transformer.config, 12)))
    _keep_fp32(control, set(LongVieControlBranch._keep_in_fp32_modules))
    text_encoder = _built_on(device, dtype, lambda: UMT5EncoderModel(UMT5Config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))).eval()
    vision = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
    image_encoder = _built_on(device, dtype, lambda: CLIPVisionModel(vision)).eval()
    vae = _built_on(device, torch.float32, lambda: AutoencoderKLWan()).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                   image_mean=[0.48145466, 0.4578275, 0.40821073],
                                   image_std=[0.26862954, 0.26130258, 0.27577711])
    pipe = LongViePipeline(tokenizer=make_byte_tokenizer(), text_encoder=text_encoder, image_encoder=image_encoder,
                           vae=vae, denoiser=LongVieDenoiser(transformer, control).eval(), image_processor=processor)
    pipe.enable_offload("none", device)
    return pipe


def load_pipeline(args, device: torch.device, dtype: torch.dtype):
    from ..sampling.pipeline import LongViePipeline

    if args.random_weights:
        if args.preset != "release":
            raise SystemExit("--random-weights builds the release shapes: use it with --preset release")
        return random_release_pipeline(device, dtype)
    base_dir, longvie_dir = args.base_dir, args.longvie_dir
    if base_dir is None:
        if args.preset != "tiny":
            raise SystemExit("--preset release needs --base-dir/--longvie-dir (real weights) or --random-weights")
        from ..presets.tiny import write_tiny_checkpoints

        base_dir, longvie_dir = write_tiny_checkpoints(Path(tempfile.mkdtemp(prefix="longvie_bench_")))
    return LongViePipeline.from_pretrained(base_dir, longvie_dir, torch_dtype=dtype, device=str(device),
                                           attention_backend=args.attention)


# --------------------------------------------------------------------------- running
def clip_inputs(args) -> dict:
    rng = np.random.default_rng(0)

    def video(frames):
        return rng.integers(0, 256, (frames, args.height, args.width, 3), dtype=np.uint8)

    inputs = dict(image=video(1)[0], prompt="a rider crosses a snowy field at dusk", dense_video=video(args.frames),
                  sparse_video=video(args.frames), num_frames=args.frames, height=args.height, width=args.width,
                  guidance_scale=args.cfg, seed=0, progress=False)
    if args.history:
        inputs["history"] = video(HISTORY_FRAMES)
    return inputs


def run_mode(pipe, mode: Mode, inputs: dict, args, device: torch.device) -> dict:
    if mode.apply is not None:
        mode.apply(pipe)
    from .step_modes import mode_steps

    call = {**inputs, "num_inference_steps": args.steps, **mode.call_kwargs}  # a mode may set steps/guidance
    if not args.no_warmup:
        pipe(**{**call, "num_inference_steps": 1, "timesteps": None})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    from ..acceleration.modes import host_to_device_stats, reset_host_to_device_stats

    reset_host_to_device_stats(pipe.denoiser)
    timer = StageTimer(device)
    pipe.stage_timer = timer
    try:
        with PeakRSS() as rss:
            synchronize(device)
            started = time.perf_counter()
            frames, _ = pipe(**call)
            synchronize(device)
            total = time.perf_counter() - started
    finally:
        pipe.stage_timer = None
        if mode.undo is not None:
            mode.undo(pipe)
    result = {"mode": mode.name, "seconds_per_clip": total,
              "seconds_per_step": timer.seconds["denoise"] / mode_steps(mode, args),
              "stages": {name: timer.seconds.get(name, 0.0) for name in STAGES},
              "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
              "peak_rss_bytes": rss.peak}
    h2d = host_to_device_stats(pipe.denoiser)
    result["h2d_bytes_per_call"] = None if h2d is None else h2d["bytes_per_call"]
    record = getattr(pipe, "mode_record", None)
    result["fp8_kind"] = record.fp8 if record is not None else "off"
    result["attention"] = pipe.attention_choice.backend if pipe.attention_choice else None
    return result, frames


def add_row_metrics(result: dict, frames, reference, baseline: dict | None, mode: Mode, args, shape, clip_tokens: int,
                    history_tokens: int, peak: float | None) -> dict:
    """Add to a :func:`run_mode` result: the difference to the exact clip, the step cache's skips, achieved
    TFLOP/s (analytic count over the denoising time), MFU against ``peak`` and the speed-ups against
    ``baseline`` (the exact path's result; None: this is it)."""
    from .step_modes import cache_summary, mode_guidance, mode_steps

    result.update(frame_difference(frames, reference))
    result.update(cache_summary(mode))
    mode_flops = clip_flops(shape, clip_tokens, history_tokens, mode_steps(mode, args), guidance=mode_guidance(mode, args))
    result["tflops"] = mode_flops / result["stages"]["denoise"] / 1e12
    result["mfu"] = None if peak is None else result["tflops"] / peak
    # speed-up of the denoising (the modes change only the denoiser; the other stages are the same work)
    result["speed_up"] = baseline["seconds_per_step"] / result["seconds_per_step"] if baseline else 1.0
    result["clip_speed_up"] = baseline["seconds_per_clip"] / result["seconds_per_clip"] if baseline else 1.0
    return result


def _gib(value):
    return "-" if value is None else f"{value / 2 ** 30:.2f}"


def estimated_gpu_peaks(args, results: list[dict]) -> None:
    """Add ``estimated_gpu_bytes`` to each result: the memory estimator's GPU peak (margin included) for
    this clip shape with everything on the GPU (the benchmark's placement; "fp8" is the estimator's
    "fp8+none"), one or two guidance branches per call, with umT5 kept on the GPU as the benchmark's
    pipeline keeps it (the sample CLI releases it: the estimator's main rows)."""
    from ..acceleration.memory import architecture, estimate_memory

    arch = architecture("tiny" if args.preset == "tiny" else "longvie2_i2v_14b", num_frames=args.frames,
                        height=args.height, width=args.width)
    rows_by_batch = {}
    for result in results:
        mode = result["mode"]
        placement = mode.removeprefix("offload-") if mode.startswith(("offload-", "fp8+")) else "none"
        if mode == "fp8":
            placement = "fp8+none"
        batch = 2 if mode == "cfg-batch" else 1
        if batch not in rows_by_batch:
            rows_by_batch[batch] = {row.mode: row.parts.get("gpu_keep_umt5", row.gpu_bytes)
                                    for row in estimate_memory(arch, training=False, cfg_batch=batch).inference}
        result["estimated_gpu_bytes"] = rows_by_batch[batch].get(placement)


def format_table(results: list[dict]) -> str:
    header = ["mode", "s/step", "s/clip", "peak GPU GiB", "peak RSS GiB", "H2D GiB/call", "TFLOP/s", "MFU",
              "step speed-up", "max diff", "mean diff", "PSNR dB", "SSIM"]
    estimates = any("estimated_gpu_bytes" in r for r in results)
    if estimates:
        header.insert(4, "est. GPU GiB")
    rows = [header]
    for r in results:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        psnr = "exact" if math.isinf(r["psnr_db"]) else f"{r['psnr_db']:.1f}"
        rows.append([r["mode"], f"{r['seconds_per_step']:.4f}", f"{r['seconds_per_clip']:.3f}",
                     _gib(r["peak_gpu_bytes"]), _gib(r["peak_rss_bytes"]), _gib(r.get("h2d_bytes_per_call")),
                     f"{r['tflops']:.4g}", mfu,
                     f"{r['speed_up']:.2f}x", f"{r['max_diff']:.0f}", f"{r['mean_diff']:.3f}", psnr,
                     "-" if r.get("ssim") is None else f"{r['ssim']:.4f}"])
        if estimates:
            rows[-1].insert(4, _gib(r.get("estimated_gpu_bytes")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, device and clip-shape options every benchmark shares (speed, --amdahl)."""
    parser.add_argument("--preset", choices=["tiny", "release"], default="tiny")
    parser.add_argument("--random-weights", action="store_true", help="release shapes with random weights")
    parser.add_argument("--base-dir", help="Wan2.1-I2V folder (real weights)")
    parser.add_argument("--longvie-dir", help="LongVie 2 folder (control.safetensors)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--attention", default="auto", help="attention backend (auto, native, flash, ...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--frames", type=int, default=None, help="pixel frames per clip (tiny 9, release 81)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (tiny 4, release 50)")
    parser.add_argument("--cfg", type=float, default=5.0, help="guidance scale (1 = no guidance)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--history", action="store_true", help="pass 8 history frames (clips after the first)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: from the GPU name)")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--cfg-batch", action="store_true", help="mode: guidance as one batch of 2")
    parser.add_argument("--compile", action="store_true", help="mode: regional torch.compile of the blocks")
    parser.add_argument("--cache", action="append", choices=["firstblock", "teacache", "magcache"],
                        help="mode: step caching of this kind (repeatable); one row per published threshold")
    parser.add_argument("--cache-threshold", type=float, default=None,
                        help="step-cache threshold (default: the published ones, one row each)")
    parser.add_argument("--cache-ratios", default=None, help="magcache: ratios file from --calibrate-magcache")
    parser.add_argument("--fast", action="store_true",
                        help="mode: 4-step distilled schedule, no guidance, distill LoRA fused; vs the exact clip")
    parser.add_argument("--fast-lora", default=None, help="the distill LoRA for --fast [the fast config's file]")
    parser.add_argument("--calibrate-magcache", type=Path, default=None, metavar="FILE",
                        help="run one exact clip and write MagCache's magnitude ratios to FILE (then exit)")
    parser.add_argument("--fp8", action="store_true",
                        help="mode: FP8 block weights (per-row scales): FP8 GEMMs where the GPU runs them, else "
                             "weight-only storage")
    parser.add_argument("--attention-rows", nargs="*", default=None, metavar="BACKEND",
                        help="modes: one row per attention backend (no names: every backend usable here, see "
                             "acceleration.attention.BENCHMARK_BACKENDS)")
    parser.add_argument("--vae-tiling", action="store_true", help="mode: tiled VAE encode/decode")
    parser.add_argument("--offload", choices=["model", "group"],
                        help="mode, run last (CUDA only): model CPU offload or block-level group offload; "
                             "with --fp8 it measures FP8 storage + that offload")
    parser.add_argument("--repeat-exact", action="store_true",
                        help="run the exact path again after the reversible modes (shows the timing noise)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--with-estimate", dest="estimate_memory", action="store_true",
                        help="also print the memory estimator's GPU peak per mode (always on CUDA)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..presets.config import torch_dtype

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.offload and device.type != "cuda":
        print(f"error: --offload {args.offload} moves models between host and GPU: it needs --device cuda",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    unusable_backends = []
    if args.attention_rows is not None and not args.attention_rows:
        from ..acceleration.attention import benchmark_backends

        rows = benchmark_backends(device, dtype)
        args.attention_rows = [backend for backend, why in rows if not why]
        unusable_backends = [(backend, why) for backend, why in rows if why]
    release = args.preset == "release"
    args.frames = args.frames or (81 if release else 9)
    args.height = args.height or (352 if release else 64)
    args.width = args.width or (640 if release else 112)
    args.steps = args.steps or (50 if release else 4)

    from .step_modes import precheck

    problem = precheck(args)  # --fast's LoRA, --calibrate-magcache's file: before any model loads
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    pipe = load_pipeline(args, device, dtype)
    load_seconds = time.perf_counter() - started
    inputs = clip_inputs(args)
    image_tokens = getattr(pipe.image_encoder.config, "image_size", 224) // pipe.image_encoder.config.patch_size
    shape = shape_of(pipe.denoiser, image_tokens=image_tokens ** 2 + 1)
    clip_tokens, history_tokens = token_counts(shape, args.frames, args.height, args.width,
                                               HISTORY_FRAMES if args.history else 0)
    flops = clip_flops(shape, clip_tokens, history_tokens, args.steps, guidance=args.cfg != 1.0)
    name = device_name(device)
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)

    if args.calibrate_magcache is not None:
        from .step_modes import calibrate_magcache

        return calibrate_magcache(pipe, inputs, args, name)

    from .step_modes import fast_note, mode_steps

    results, reference = [], None
    for mode in selected_modes(args):
        result, frames = run_mode(pipe, mode, inputs, args, device)
        if reference is None:
            reference = frames
        add_row_metrics(result, frames, reference, results[0] if results else None, mode, args, shape,
                        clip_tokens, history_tokens, peak)
        results.append(result)
        skipped = result.get("skipped_steps")
        print(f"{mode.name}: {result['seconds_per_clip']:.3f} s/clip"
              + (f", skipped steps {skipped} of {mode_steps(mode, args)}" if skipped is not None else ""), flush=True)
        if mode.name == "fast":
            exact_denoise, fast_denoise = results[0]["stages"]["denoise"], result["stages"]["denoise"]
            print(f"{fast_note(args)}: denoising {fast_denoise:.3f} s vs {exact_denoise:.3f} s "
                  f"({exact_denoise / fast_denoise:.2f}x), "
                  f"clip {result['clip_speed_up']:.2f}x, PSNR {result['psnr_db']:.2f} dB, SSIM "
                  f"{'-' if result.get('ssim') is None else format(result['ssim'], '.4f')}", flush=True)

    print(f"\ndevice: {name}; torch {torch.__version__}; dtype {str(dtype).split('.')[-1]}; preset {args.preset}"
          f"{' (random weights)' if args.random_weights else ''}; {args.frames} frames {args.height}x{args.width}, "
          f"{args.steps} steps, cfg {args.cfg}{', history' if args.history else ''}; load {load_seconds:.1f} s")
    print(f"denoising FLOPs per clip (analytic): {flops:.4g}; clip tokens {clip_tokens}, history tokens "
          f"{history_tokens}; MFU against {'-' if peak is None else f'{peak} TFLOP/s'}")
    if args.estimate_memory or device.type == "cuda":  # measured peaks beside the estimator's
        estimated_gpu_peaks(args, results)
    print(format_table(results))
    for backend, why in unusable_backends:
        print(f"attention {backend}: not run ({why})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": name, "torch": torch.__version__, "dtype": str(dtype), "preset": args.preset,
                   "random_weights": args.random_weights, "frames": args.frames, "height": args.height,
                   "width": args.width, "steps": args.steps, "cfg": args.cfg, "history": args.history,
                   "flops_per_clip": flops, "peak_tflops": peak, "load_seconds": load_seconds,
                   "results": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()}
                               for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
