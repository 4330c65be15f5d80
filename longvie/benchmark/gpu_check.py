"""The GPU check (``bash scripts/gpu_check.sh``, or ``python -m longvie.benchmark.gpu_check --out DIR``): every
speed and memory mode of LongVie 2 measured on this machine in one process, inside a time budget.

On a CUDA device: the release shapes with random weights (Wan2.1-I2V-14B's DiT, 40 blocks of width 5120, the
control branch, 2 x 12 blocks of width 2560, umT5-XXL, CLIP ViT-H/14 and the Wan VAE), built directly on the
GPU in bfloat16; nothing is downloaded. Without CUDA: the tiny CPU twin, the same rows on the tiny preset.

Parts, run in this order, each row appended to ``DIR/results.jsonl`` as soon as it is measured (a run that is
stopped keeps what it measured):

1. ``speed``: whole clips through the pipeline (the speed benchmark's :func:`~longvie.benchmark.speed.run_mode`,
   history frames on, guidance 5, ``--steps`` steps): ``exact`` (after a one-step warm-up clip), ``fast`` (4
   steps on the distilled schedule, no guidance), one row per step cache (firstblock, teacache, magcache at
   their default thresholds; ``--all-thresholds``: each published one), and ``fp8`` last (it cannot be undone).
2. ``attention``: one row per attention backend usable here (:func:`~longvie.acceleration.attention.
   benchmark_backends`): one denoiser call on the speed clip's tokens (a warm-up call, then
   ``--attention-calls`` timed calls), its difference to the first backend's output.
   (Run between ``exact`` and ``fast``: they are cheap.)
3. ``matrix``: the 24 rows of the mode matrix (:mod:`.matrix`) on the same weights (a host copy), at
   ``--matrix-frames`` frames, ``--matrix-steps`` denoiser calls per row, guidance off.
4. ``estimate``: the memory estimator (:mod:`longvie.acceleration.memory`, in a second process alongside): the
   GPU peak of each speed row's placement, the denoise stage of each attention row, the denoiser alone for
   each matrix row; printed beside the measured peaks.

Budget (``--budget-s``, counted from the start of this process): a row starts only when its predicted time
(from the rows measured so far) fits in what is left; the speed part may use ``--speed-share`` of the budget
and keeps room for ``fp8``; rows that do not fit are written "not measured" with the reason. Then
``DIR/table.md`` is written and printed; ``--write-docs`` replaces this device's section of
docs/performance.md (between ``<!-- gpu_check: DEVICE begin -->`` and ``<!-- gpu_check: DEVICE end -->``).
``--render-only`` makes the table (and the docs section) from an existing ``results.jsonl`` without measuring.

Numbers are never filled in: a row that did not run says "not measured" and why.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

RESULTS = "results.jsonl"
ESTIMATES = "estimates.json"
PLAN = "plan.json"
TABLE = "table.md"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
PARTS = ("speed", "attention", "matrix", "estimate")
CACHE_KINDS = ("firstblock", "teacache", "magcache")
# Matrix rows in the order they are run (the table prints them in the matrix's own order). A budget that runs
# out leaves out the end of this list, so what matters most comes first: no offload with and without FP8, then
# every group-offload row (the 24 GB recipes, "FP8 + compile" among them), then model offload, compile and the
# step cache elsewhere. The group rows stay together: their page-locked slabs (the size of the weights) are kept
# by torch's pinned-memory cache after each row and reused by the next; the cache is emptied once after them,
# before model offload moves a whole pageable copy of the weights back to the host at the end of each row.
MATRIX_ORDER = (
    [("none", "off", "off", "off"), ("none", "on", "off", "off")]
    + [("group", "off", "off", "off"), ("group", "on", "off", "off"), ("group", "on", "on", "off"),
       ("group", "off", "off", "firstblock"), ("group", "on", "off", "firstblock"), ("group", "off", "on", "off"),
       ("group", "off", "on", "firstblock"), ("group", "on", "on", "firstblock")]
    + [("model", "off", "off", "off"), ("model", "on", "off", "off"), ("none", "off", "on", "off"),
       ("none", "on", "on", "off")]
    + [(o, f, "off", "firstblock") for o in ("none", "model") for f in ("off", "on")]
    + [("model", "off", "on", "off"), ("model", "on", "on", "off")]
    + [(o, f, "on", "firstblock") for o in ("none", "model") for f in ("off", "on")]
)
COMPILE_PRIOR_S = {"cuda": 90.0, "cpu": 60.0}  # first regional compile of a row, before any was measured


# --------------------------------------------------------------------------- recording
class Recorder:
    """Appends one JSON object per line to ``results.jsonl`` (flushed: a killed run keeps its rows)."""

    def __init__(self, path: Path | None, started: float):
        self.path, self.started = path, started
        self.records: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write(self, record: dict) -> dict:
        record = {**record, "t": round(self.elapsed(), 2)}
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(_jsonable(record)) + "\n")
        return record


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def read_results(out: Path) -> list[dict]:
    """The records of ``out/results.jsonl``; a last line cut by a kill is skipped."""
    records = []
    for line in (out / RESULTS).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --------------------------------------------------------------------------- budget
class Budget:
    """Seconds left before ``deadline`` (process clock); a row runs when its prediction fits."""

    def __init__(self, recorder: Recorder, seconds: float):
        self.recorder, self.seconds = recorder, seconds

    def left(self, share: float = 1.0) -> float:
        return self.seconds * share - self.recorder.elapsed()

    def refusal(self, predicted: float, reserve: float = 0.0, share: float = 1.0) -> str | None:
        """None when ``predicted`` seconds (plus ``reserve`` kept for later rows) fit; else the reason."""
        left = self.left(share)
        if predicted + reserve <= left:
            return None
        part = f" (the {share:.0%} of it this part may use)" if share < 1 else ""
        kept = f" and {reserve:.0f} s kept for later rows" if reserve else ""
        return (f"not measured: time budget --budget-s {self.seconds:g}{part} spent: predicted {predicted:.0f} s"
                f"{kept}, {max(left, 0):.0f} s left")


def predict_matrix_row(combo: tuple, done: list[dict], fallback: float, compile_prior: float) -> float:
    """Seconds a matrix row is expected to take: the slowest measured row of the same offload and compile
    setting; else the slowest measured row (plus a first compile when this row compiles and none did yet);
    else ``fallback`` (plus the compile prior)."""
    offload, _, compile_, _ = combo
    measured = [r for r in done if r.get("seconds") is not None]
    same = [r["seconds"] for r in measured if r["offload"] == offload and r["compile"] == compile_]
    if same:
        return max(same)
    compiled_before = any(r["compile"] == "on" for r in measured)
    extra = compile_prior if compile_ == "on" and not compiled_before else 0.0
    like = [r["seconds"] for r in measured if r["compile"] == compile_] or [r["seconds"] for r in measured]
    return (max(like) if like else fallback) + extra


# --------------------------------------------------------------------------- facts
def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_facts(device: torch.device) -> dict:
    """Device name, versions and the things that change a measurement."""
    from .speed import device_name

    facts = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "diffusers": _version("diffusers"), "transformers": _version("transformers"),
             "flash_attn": _version("flash-attn"), "flash_attn_3": _version("flash_attn_3"),
             "device_detail": device_name(device), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        facts["device"] = torch.cuda.get_device_name(device)
        facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        facts["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2 ** 30, 1)
        facts["nvidia_smi"] = _nvidia_smi()
    else:
        facts["device"] = "CPU"
    with contextlib.suppress(OSError):
        facts["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return facts


def prerequisites() -> int:
    """``--prerequisites``: print what the check needs and has; 0 when it can run (on CUDA or the CPU twin)."""
    print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__} "
          f"(CUDA {torch.version.cuda or 'none'})")
    release = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if release < (2, 13):
        print(f"note: torch {torch.__version__} is older than the lower bound setup.py was tested with (2.13); "
              "a row that crashes here may crash because of that")
    missing = []
    for package, module in (("diffusers", "diffusers"), ("transformers", "transformers"),
                            ("accelerate", "accelerate"), ("safetensors", "safetensors"), ("psutil", "psutil"),
                            ("pyyaml", "yaml"), ("ftfy", "ftfy"), ("peft", "peft")):
        try:
            __import__(module)
        except ImportError as error:
            missing.append(f"{package} ({error})")
    print(f"diffusers {_version('diffusers')}; transformers {_version('transformers')}; accelerate "
          f"{_version('accelerate')}; flash-attn {_version('flash-attn')}; flash-attn 3 {_version('flash_attn_3')}")
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        print(f"CUDA device: {torch.cuda.get_device_name(device)} (compute capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}, "
              f"{torch.cuda.get_device_properties(device).total_memory / 2 ** 30:.1f} GiB); nvidia-smi: "
              f"{_nvidia_smi() or 'not available'}")
    else:
        print("no CUDA device: the tiny CPU twin runs (docs/performance.md is left alone unless --write-docs)")
    if missing:
        print("missing: " + "; ".join(missing) + ". On a machine without a package index, carry them as wheels "
              "in .whl/ (bash scripts/gpu_check.sh --prepare-wheels, here)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- the run
def _speed_args(args, device: torch.device, dtype_name: str):
    from .speed import build_parser

    release = args.preset == "release"
    argv = ["--preset", args.preset, "--device", str(device), "--dtype", dtype_name, "--steps", str(args.steps),
            "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width), "--history",
            "--cfg", "5.0"] + (["--random-weights"] if release else [])
    speed_args = build_parser().parse_args(argv)
    speed_args.attention_rows = None
    return speed_args


def _short_error(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "crashed: out of GPU memory"
    return f"crashed: {type(error).__name__}: {first}"[:300]


def _host_available() -> int | None:
    try:
        import psutil

        return psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2 ** 30:.2f}"


class Check:
    """One run of the check (see the module docstring)."""

    def __init__(self, args, out: Path):
        self.args, self.out = args, out
        self.started = time.perf_counter()
        self.rec = Recorder(out / RESULTS, self.started)
        self.budget = Budget(self.rec, args.budget_s)
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"

    def say(self, text: str) -> None:
        print(f"[{self.rec.elapsed():5.0f} s] {text}", flush=True)

    def skip(self, part: str, name: str, reason: str, **fields) -> None:
        self.rec.write({"part": part, "name": name, "status": reason, **fields})
        self.say(f"{part} {name}: {reason}")

    def crash_log(self, part: str, name: str) -> None:
        with open(self.out / "crashes.txt", "a", encoding="utf-8") as stream:
            stream.write(f"--- {part} {name}\n{traceback.format_exc()}\n")

    # ------------------------------------------------------------------ speed and attention
    def run_speed_and_attention(self):
        """The speed rows and the attention rows; returns (make_denoiser, transformer config) of a host copy of
        the denoiser's weights for the matrix (None when the matrix is not run)."""
        from ..presets.tiny import randomize_
        from .flops import call_flops, peak_tflops, shape_of, token_counts
        from .matrix import denoiser_config, denoiser_factory, host_master, make_inputs
        from .speed import HISTORY_FRAMES, Mode, _fp8, add_row_metrics, clip_inputs, load_pipeline, run_mode
        from .step_modes import cache_modes, fast_mode, mode_steps

        args, device = self.args, self.device
        speed_args = _speed_args(args, device, self.dtype_name)
        parts = set(args.parts)
        started = time.perf_counter()
        pipe = load_pipeline(speed_args, device, self.dtype)
        if args.preset == "release":  # the matrix's random weights: N(0, 0.02), finite through 40 blocks
            with torch.no_grad():
                torch.manual_seed(0)
                randomize_(pipe.denoiser, scale=0.02)
        if pipe.attention_choice is None:  # what a user gets: "auto" (FA3 / cuDNN attention on sm90, ...)
            from ..acceleration.attention import select_attention_backend

            pipe.set_attention(select_attention_backend("auto", device, self.dtype))
        if self.cuda:
            torch.cuda.synchronize(device)
        load_seconds = time.perf_counter() - started
        image_tokens = getattr(pipe.image_encoder.config, "image_size", 224) // pipe.image_encoder.config.patch_size
        shape = shape_of(pipe.denoiser, image_tokens=image_tokens ** 2 + 1)
        clip_tokens, history_tokens = token_counts(shape, args.frames, args.height, args.width, HISTORY_FRAMES)
        peak = peak_tflops(self.facts["device"]) if self.cuda else None
        config, layers = denoiser_config(pipe.denoiser)
        self.rec.write({"part": "event", "name": "loaded", "seconds": load_seconds, "clip_tokens": clip_tokens,
                        "history_tokens": history_tokens, "peak_tflops": peak,
                        "attention": pipe.attention_choice.backend if pipe.attention_choice else None})
        self.say(f"loaded the {args.preset} pipeline in {load_seconds:.1f} s ({clip_tokens} clip + {history_tokens} "
                 f"history tokens per call; attention {pipe.attention_choice.backend if pipe.attention_choice else '-'})")
        inputs = clip_inputs(speed_args)
        call_inputs = make_inputs(config, args.frames, args.height, args.width, self.dtype, device, True,
                                  image_tokens=image_tokens ** 2 + 1)
        call_flop = call_flops(shape, clip_tokens, history_tokens)

        def one_call(clip_cache=None):
            from ..models.denoiser import ClipCache

            conditions = {k: v for k, v in call_inputs.items() if k != "noise"}
            t = torch.full((1,), 500.0, device=device, dtype=self.dtype)
            with torch.no_grad():
                return pipe.denoiser(call_inputs["noise"].to(self.dtype), t, **conditions,
                                     clip_cache=clip_cache if clip_cache is not None else ClipCache(),
                                     block_stack=None)

        baseline, reference = None, None

        def speed_row(mode, warmup: str, predicted: float | None, reserve: float = 0.0):
            nonlocal baseline, reference
            if "speed" not in parts:
                return None
            if predicted is not None:
                refusal = self.budget.refusal(predicted, reserve, args.speed_share)
                if refusal:
                    self.skip("speed", mode.name, refusal)
                    return None
            row_args = argparse.Namespace(**vars(speed_args))
            row_args.no_warmup = warmup != "clip"
            row_started = time.perf_counter()
            try:
                if warmup == "call":  # apply, then one denoiser call (first FP8 GEMMs, kernels), then the clip
                    apply = mode.apply
                    mode.apply = None
                    if apply is not None:
                        apply(pipe)
                    one_call()
                result, frames = run_mode(pipe, mode, inputs, row_args, device)
                if reference is None:
                    reference = frames
                add_row_metrics(result, frames, reference, baseline, mode, row_args, shape, clip_tokens,
                                history_tokens, peak)
                result["steps"] = mode_steps(mode, row_args)
                result["row_seconds"] = time.perf_counter() - row_started
                result["status"] = "ok"
            except Exception as error:  # noqa: BLE001 - a crash is the row's result; the next rows still run
                self.crash_log("speed", mode.name)
                result = {"mode": mode.name, "status": _short_error(error),
                          "row_seconds": time.perf_counter() - row_started}
                if self.cuda:
                    torch.cuda.empty_cache()
            record = self.rec.write({"part": "speed", "name": mode.name, **result})
            if result["status"] == "ok":
                baseline = baseline or record
                skipped = result.get("skipped_steps")
                memory = f"peak GPU {_gib(result['peak_gpu_bytes'])}" if self.cuda else \
                    f"peak RSS {_gib(result['peak_rss_bytes'])}"
                self.say(f"speed {mode.name}: {result['seconds_per_step']:.3f} s/step, "
                         f"{result['seconds_per_clip']:.2f} s/clip, {memory} GiB"
                         + (f", skipped steps {skipped}" if skipped else ""))
            else:
                self.say(f"speed {mode.name}: {result['status']}")
            return record

        # exact: the reference of every speed row (always runs when speed rows are asked for)
        exact = speed_row(Mode("exact"), "clip", None)
        exact_ok = exact is not None and exact["status"] == "ok"
        clip_seconds = exact["seconds_per_clip"] if exact_ok else None
        call_seconds = exact["seconds_per_step"] / 2 if exact_ok else None  # guidance: two calls per step

        # attention: one denoiser call per backend
        if "attention" in parts:
            reserve = clip_seconds + (call_seconds or 0) if clip_seconds and "speed" in parts else 0.0  # fp8's
            call_seconds = self.run_attention(pipe, one_call, call_flop, peak, call_seconds, reserve,
                                              clip_tokens + history_tokens) or call_seconds
        fp8_predicted = clip_seconds + (call_seconds or 0) if clip_seconds else None
        if exact_ok:
            for mode in [fast_mode(speed_args, Mode)] + self._cache_modes(speed_args, Mode, cache_modes):
                speed_row(mode, "none", clip_seconds, reserve=fp8_predicted or 0.0)
        master = None
        if "matrix" in parts:  # a host copy before FP8 changes the layers
            copy_started = time.perf_counter()
            pinned = self.cuda and args.pin_master
            try:
                weights = host_master(pipe.denoiser, pin=pinned)
            except RuntimeError as error:  # page-locked memory refused: the same copy, pageable
                self.say(f"page-locked host copy refused ({str(error).splitlines()[0][:120]}); pageable instead")
                pinned, weights = False, None
                gc.collect()
                weights = host_master(pipe.denoiser)
            master = (denoiser_factory(weights, config, layers), config)
            copy_seconds = time.perf_counter() - copy_started
            self.copy_seconds = copy_seconds
            nbytes = sum(t.numel() * t.element_size() for t in weights.values())
            self.rec.write({"part": "event", "name": "host copy of the denoiser", "seconds": copy_seconds,
                            "pinned": pinned, "bytes": nbytes})
            self.say(f"host copy of the denoiser for the matrix ({nbytes / 2 ** 30:.1f} GiB"
                     f"{', page-locked' if pinned else ''}): {copy_seconds:.1f} s")
        if exact_ok:
            speed_row(Mode("fp8", apply=_fp8), "call", fp8_predicted)
        elif "speed" in parts:
            for name in ["fast"] + [f"cache-{k}" for k in CACHE_KINDS] + ["fp8"]:
                self.skip("speed", name, "not measured: the exact row did not run, so nothing to compare with")
        self.call_seconds = call_seconds
        pipe = None  # the closures above hold this name: the pipeline's GPU memory goes with it
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
        return master

    def _cache_modes(self, speed_args, Mode, cache_modes) -> list:
        modes = []
        for kind in CACHE_KINDS:
            row_args = argparse.Namespace(**vars(speed_args))
            row_args.cache = [kind]
            if not self.args.all_thresholds:
                from ..acceleration.step_cache import DEFAULT_THRESHOLDS

                row_args.cache_threshold = DEFAULT_THRESHOLDS[kind]
            modes += cache_modes(row_args, Mode)
        return modes

    def run_attention(self, pipe, one_call, call_flop: int, peak, call_seconds, reserve: float, tokens: int):
        """One row per attention backend; returns the s/call of the first backend measured."""
        from ..acceleration.attention import benchmark_backends, select_attention_backend
        from ..models.denoiser import ClipCache

        original = pipe.attention_choice
        first_output, first_seconds = None, None
        rows = benchmark_backends(self.device, self.dtype)
        order = [b for b, why in rows if not why and b == (original.backend if original else "native")]
        order += [b for b, why in rows if not why and b not in order and b != "flex"]
        order += [b for b, why in rows if not why and b == "flex" and b not in order]  # flex compiles: last
        for backend, why in rows:
            if why:
                self.skip("attention", backend, f"not measured: {why}")
        calls = self.args.attention_calls
        if "flex" in order and self.cuda:  # diffusers calls flex_attention eagerly: the unfused kernel
            heads = pipe.denoiser.transformer.config.num_attention_heads
            scores = 2 * heads * tokens ** 2 * self.dtype.itemsize  # the score matrix and its softmax
            free = torch.cuda.mem_get_info(self.device)[0]
            if scores > 0.9 * free:
                order.remove("flex")
                self.skip("attention", "flex", f"not measured: diffusers calls flex_attention without torch.compile, "
                          f"which materialises the scores ({heads} heads x {tokens}^2 tokens: {scores / 2 ** 30:.0f} "
                          f"GiB with their softmax, {free / 2 ** 30:.0f} GiB free)")
        for backend in order:
            estimate = (call_seconds or first_seconds or 0.0) * (calls + 1)
            if backend == "flex":  # compiled on its first call
                estimate += COMPILE_PRIOR_S["cuda" if self.cuda else "cpu"] / 3
            refusal = self.budget.refusal(estimate, reserve, self.args.speed_share) if first_seconds or call_seconds \
                else None
            if refusal:
                self.skip("attention", backend, refusal)
                continue
            record = {"backend": backend}
            try:
                choice = select_attention_backend(backend, self.device, self.dtype)
                pipe.set_attention(choice)
                cache = ClipCache()
                one_call(cache)  # warm-up: prepares the clip, picks kernels (flex: compiles)
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                    torch.cuda.reset_peak_memory_stats(self.device)
                times = []
                for _ in range(calls):
                    started = time.perf_counter()
                    output = one_call(cache)
                    if self.cuda:
                        torch.cuda.synchronize(self.device)
                    times.append(time.perf_counter() - started)
                seconds = sorted(times)[len(times) // 2]
                output = output.float()
                if first_output is None:
                    first_output, first_seconds, first_backend = output, seconds, backend
                record.update(status="ok", seconds_per_call=seconds, call_seconds=times,
                              tflops=call_flop / seconds / 1e12, mfu=None if peak is None else call_flop / seconds / 1e12 / peak,
                              peak_gpu_bytes=torch.cuda.max_memory_allocated(self.device) if self.cuda else None,
                              max_abs_diff=float((output - first_output).abs().max()),
                              compared_with=first_backend, speed_up=first_seconds / seconds,
                              reason=choice.reason, fused_sdpa_only=choice.fused_sdpa_only)
                del output
            except Exception as error:  # noqa: BLE001 - a crash is the row's result
                self.crash_log("attention", backend)
                record.update(status=_short_error(error))
                if self.cuda:
                    torch.cuda.empty_cache()
            self.rec.write({"part": "attention", "name": backend, **record})
            if record["status"] == "ok":
                self.say(f"attention {backend}: {record['seconds_per_call']:.3f} s/call "
                         f"({record['tflops']:.3g} TFLOP/s), max diff {record['max_abs_diff']:.3g} vs {first_backend}")
            else:
                self.say(f"attention {backend}: {record['status']}")
        if original is not None:
            pipe.set_attention(original)
        return first_seconds

    # ------------------------------------------------------------------ matrix
    def run_matrix(self, master) -> None:
        from .matrix import MatrixRow, prepare_matrix

        args = self.args
        with contextlib.suppress(Exception):
            graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        # before anything ran here: the matrix's calls are this share of the speed clip's denoiser call
        fallback = 30.0
        if getattr(self, "call_seconds", None):  # two weight copies and the calls, scaled from the speed rows
            fallback = getattr(self, "copy_seconds", 0.0) * 2 + \
                args.matrix_steps * self.call_seconds * self._matrix_call_ratio()
        refusal = self.budget.refusal(fallback)
        if refusal:
            for combo in MATRIX_ORDER:
                self.skip("matrix", "/".join(combo), refusal, offload=combo[0], fp8=combo[1], compile=combo[2],
                          cache=combo[3])
            return
        started = time.perf_counter()
        try:
            setup = prepare_matrix(args.preset, self.device, self.dtype, args.matrix_frames, args.height, args.width,
                                   args.matrix_steps, master=master)
        except Exception as error:  # noqa: BLE001
            self.crash_log("matrix", "exact path")
            for combo in MATRIX_ORDER:
                self.skip("matrix", "/".join(combo), f"not measured: the exact path {_short_error(error)}",
                          offload=combo[0], fp8=combo[1], compile=combo[2], cache=combo[3])
            return
        reference_seconds = time.perf_counter() - started
        self.rec.write({"part": "event", "name": "matrix exact path", "seconds": reference_seconds,
                        "call_seconds": setup.reference_seconds,
                        "gpu_bytes_in_use": torch.cuda.memory_allocated(self.device) if self.cuda else None})
        self.say(f"matrix: exact path {reference_seconds:.1f} s ({args.matrix_frames} frames, "
                 f"{args.matrix_steps} calls)")
        done: list[dict] = []
        prior = COMPILE_PRIOR_S["cuda" if self.cuda else "cpu"]
        rows = []
        previous = None
        for combo in MATRIX_ORDER:
            name = "/".join(combo)
            fields = dict(zip(("offload", "fp8", "compile", "cache"), combo))
            predicted = predict_matrix_row(combo, done, reference_seconds, prior)
            refusal = self.budget.refusal(predicted)
            if refusal:
                self.skip("matrix", name, refusal, **fields)
                continue
            if self.cuda and previous == "group" and combo[0] != "group":
                self.release_pinned_cache()
            previous = combo[0]
            row = setup.run(MatrixRow(*combo))
            rows.append(row)
            if row.result.startswith("crashed"):
                with open(self.out / "crashes.txt", "a", encoding="utf-8") as stream:
                    stream.write(f"--- matrix {name}\n{row.modes.get('traceback', '')}\n")
            from dataclasses import asdict

            record = asdict(row)
            record["modes"] = {k: v for k, v in record["modes"].items() if k != "traceback"}
            record = self.rec.write({"part": "matrix", "name": name, "status": row.result, **record,
                                     "host_available_bytes": _host_available()})
            done.append(record)
            calls = row.call_seconds
            self.say(f"matrix {name}: {row.result[:90]}"
                     + (f"; {row.seconds:.1f} s, calls {calls[0]:.2f}/{min(calls[1:] or calls):.2f} s, "
                        f"peak {_gib(row.peak_bytes)} GiB, diff {row.max_abs_diff:.3g}" if row.ok else ""))
        facts = setup.facts(rows)
        refusal = self.budget.refusal(reference_seconds)
        if refusal:
            facts["shared_weights_unchanged"] = None
            facts["shared_weights_check"] = refusal
        else:
            again = setup.exact_again()
            facts["shared_weights_unchanged"] = bool(torch.equal(again, setup.reference))
            facts["exact_again_max_abs_diff"] = float((again - setup.reference).abs().max())
        with contextlib.suppress(Exception):
            facts["new_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
        self.rec.write({"part": "matrix_facts", "name": "matrix", **facts})
        if facts["shared_weights_unchanged"] is False:
            self.say(f"matrix: error: the exact path run again gives other latents (max abs diff "
                     f"{facts['exact_again_max_abs_diff']:.3g}): a row changed the shared weights in place, or a "
                     "kernel is not deterministic")

    def release_pinned_cache(self) -> None:
        """Give torch's cached page-locked blocks (the group rows' slabs) back to the system."""
        release = getattr(torch._C, "_host_emptyCache", None)
        if release is None:
            return
        before = _host_available()
        release()
        self.say(f"matrix: released the cached page-locked host memory ({_gib(before)} -> "
                 f"{_gib(_host_available())} GiB host RAM available)")

    def _matrix_call_ratio(self) -> float:
        """Tokens of a matrix call over a speed call: the time ratio of the two calls is at most this (the
        token-linear work scales with it, the attention with its square, which is smaller)."""
        args = self.args
        per_frame = (args.height // 16) * (args.width // 16)
        history = 2 * per_frame
        return ((1 + (args.matrix_frames - 1) // 4) * per_frame + history) / \
            ((1 + (args.frames - 1) // 4) * per_frame + history)

    # ------------------------------------------------------------------ everything
    def run(self) -> int:
        args = self.args
        if self.cuda:
            self.dtype, self.dtype_name = torch.bfloat16, "bfloat16"
        else:
            self.dtype, self.dtype_name = torch.float32, "float32"
        self.facts = machine_facts(self.device)
        self.facts.update(command=args.command or "python -m longvie.benchmark.gpu_check " + shlex.join(self.argv),
                          preset=args.preset, dtype=self.dtype_name, budget_s=args.budget_s, steps=args.steps,
                          frames=args.frames, height=args.height, width=args.width, history_frames=8,
                          matrix_frames=args.matrix_frames, matrix_steps=args.matrix_steps,
                          attention_calls=args.attention_calls, parts=list(args.parts),
                          torch_threads=torch.get_num_threads(), all_thresholds=args.all_thresholds)
        self.rec.write({"part": "facts", "name": "machine", **self.facts})
        self.say(f"device: {self.facts['device']} ({self.facts['device_detail']}); torch {torch.__version__}, "
                 f"diffusers {self.facts['diffusers']}, flash-attn {self.facts['flash_attn']}")
        self.say(f"plan: speed rows {args.frames} frames {args.height}x{args.width} + 8 history frames, {args.steps} "
                 f"steps, CFG 5; attention rows 1+{args.attention_calls} denoiser calls at that shape; matrix "
                 f"{args.matrix_frames} frames, {args.matrix_steps} calls per row, guidance off; budget "
                 f"{args.budget_s:g} s ({args.speed_share:.0%} for speed and attention)")
        estimator = self.start_estimator() if "estimate" in args.parts else None
        master = None
        if {"speed", "attention", "matrix"} & set(args.parts):
            master = self.run_speed_and_attention()
        if "matrix" in args.parts:
            self.run_matrix(master)
            del master
            gc.collect()
        if estimator is not None:
            self.finish_estimator(estimator)
        self.rec.write({"part": "end", "name": "end", "seconds": self.rec.elapsed(),
                        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None})
        text = render(self.rec.records)
        (self.out / TABLE).write_text(text, encoding="utf-8")
        print("\n" + text, flush=True)
        if args.write_docs:
            write_docs_section(args.docs, self.facts["device"], text)
            print(f"wrote this device's section of {args.docs}")
        print(f"results: {self.out / RESULTS}; table: {self.out / TABLE}; {self.rec.elapsed():.0f} s in all")
        crashed = [r for r in self.rec.records if str(r.get("status", "")).startswith("crashed")]
        unchanged = [r for r in self.rec.records if r.get("part") == "matrix_facts"]
        return 1 if crashed or any(r.get("shared_weights_unchanged") is False for r in unchanged) else 0

    # ------------------------------------------------------------------ estimator (a second process)
    def start_estimator(self):
        args = self.args
        plan = {"preset": args.preset, "frames": args.frames, "height": args.height, "width": args.width,
                "matrix_frames": args.matrix_frames, "cache_kinds": list(CACHE_KINDS),
                "matrix": [list(c) for c in MATRIX_ORDER]}
        (self.out / PLAN).write_text(json.dumps(plan), encoding="utf-8")
        log = open(self.out / "estimator_log.txt", "w", encoding="utf-8")  # noqa: SIM115 - closed in finish
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # fake tensors only: it never needs the GPU
        process = subprocess.Popen([sys.executable, "-m", "longvie.benchmark.gpu_check", "--estimate-plan",
                                    str(self.out / PLAN), "--out", str(self.out)], stdout=log, stderr=subprocess.STDOUT,
                                   env=env)
        return process, log

    def finish_estimator(self, estimator) -> None:
        process, log = estimator
        wait = max(self.budget.left() + 60.0, 60.0)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        (self.out / PLAN).unlink(missing_ok=True)  # its input (the device tool brings back 8 files at most)
        path = self.out / ESTIMATES
        if process.returncode == 0 and path.is_file():
            estimates = json.loads(path.read_text(encoding="utf-8"))
            self.rec.write({"part": "estimate", "name": "estimator", "status": "ok", **estimates})
            self.say(f"estimator: done ({estimates.get('seconds', 0):.0f} s in its own process)")
        else:
            tail = (self.out / "estimator_log.txt").read_text(encoding="utf-8").strip().splitlines()[-1:] or [""]
            self.rec.write({"part": "estimate", "name": "estimator",
                            "status": f"not computed: the estimator process ended with {process.returncode} "
                                      f"({tail[0][:200]})"})
            self.say(f"estimator: not computed ({tail[0][:200]})")


# --------------------------------------------------------------------------- estimates
def compute_estimates(plan: dict) -> dict:
    """The estimator's GPU peaks (bytes, margin included) for every row kind of the plan (see the module docstring)."""
    import dataclasses

    from ..acceleration import memory

    started = time.perf_counter()
    preset = "tiny" if plan["preset"] == "tiny" else "longvie2_i2v_14b"
    speed_arch = memory.architecture(preset, num_frames=plan["frames"], height=plan["height"], width=plan["width"],
                                     history_frames=8)
    matrix_arch = dataclasses.replace(speed_arch, num_frames=plan["matrix_frames"])
    weights = memory.weight_bytes(speed_arch)
    peaks = memory.activation_peaks(speed_arch, stages=("text_encoder", "image_encoder", "vae_encode", "vae_decode"))
    loops: dict = {}

    def estimate(arch, weights, peaks, mode, key):
        for variant in memory.loop_variant(mode):
            if (key, variant) not in loops:
                loops[key, variant] = memory.denoise_loop_peak(arch, *variant)
        loop_peaks = {variant: loops[key, variant] for variant in memory.loop_variant(mode)}
        return memory.estimate_mode(weights, peaks, loop_peaks, mode)

    speed = {}
    # The estimator models the step cache as firstblock's (the residual of the skipped blocks per guidance branch);
    # TeaCache and MagCache keep that same residual (plus a few scalars), so their rows take that estimate.
    for name, mode in [("exact", memory.InferenceMode()), ("fp8", memory.InferenceMode(fp8=True)),
                       ("fast", memory.InferenceMode(cfg="none"))] + \
            [(f"cache-{kind}", memory.InferenceMode(step_cache="firstblock")) for kind in plan["cache_kinds"]]:
        try:  # the check's pipeline keeps umT5 on the GPU (the sample CLI releases it after caching the prompts)
            row = estimate(speed_arch, weights, peaks, mode, "speed")
            speed[name] = {"gpu_bytes": row.parts.get("gpu_keep_umt5", row.gpu_bytes),
                           "stage": row.parts.get("stage_keep_umt5", row.parts["stage"]), "note": row.note}
        except Exception as error:  # noqa: BLE001 - one row the estimator cannot do leaves the others
            speed[name] = {"gpu_bytes": None, "error": f"{type(error).__name__}: {error}"[:300]}
    # attention rows: the denoise stage of one guidance branch, every model on the GPU (umT5 kept)
    row = estimate(speed_arch, weights, peaks, memory.InferenceMode(cfg="none"), "speed")
    resident = memory.stage_residency(weights, "none", False, "kept")["denoise"]
    attention = {"gpu_bytes": memory.with_margin(resident + row.parts["activations"]["denoise"]),
                 "note": "denoise stage: all models on the GPU + one call's activations"}
    # matrix rows: the denoiser alone on the GPU (no encoders, no VAE), guidance off
    alone = dataclasses.replace(weights, components={**weights.components, "text_encoder": 0, "image_encoder": 0,
                                                     "vae": 0})
    no_stages = {stage: 0 for stage in ("text_encoder", "image_encoder", "vae_encode", "vae_decode")}
    matrix, errors = {}, []
    for offload, fp8, compile_, cache in plan["matrix"]:
        mode = memory.InferenceMode(offload, fp8 == "on", compile_ == "on", None if cache == "off" else cache,
                                    cfg="none")
        try:
            matrix["/".join((offload, fp8, compile_, cache))] = estimate(matrix_arch, alone, no_stages, mode,
                                                                         "matrix").gpu_bytes
        except Exception as error:  # noqa: BLE001
            matrix["/".join((offload, fp8, compile_, cache))] = None
            errors.append(f"matrix {offload}/{fp8}/{compile_}/{cache}: {type(error).__name__}: {error}"[:300])
    return {"speed": speed, "attention": attention, "matrix": matrix, "errors": errors, "margin": {
        "fragmentation": memory.FRAGMENTATION, "cuda_context_bytes": memory.CUDA_CONTEXT_BYTES},
        "seconds": time.perf_counter() - started}


def estimate_main(plan_path: Path, out: Path) -> int:
    torch.set_num_threads(1)
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    estimates = compute_estimates(plan)
    from ..media.atomic import atomic_write_json

    atomic_write_json(out / ESTIMATES, estimates)
    print(f"estimates written in {estimates['seconds']:.1f} s")
    return 0


# --------------------------------------------------------------------------- rendering
def _fmt(value, spec: str = ".3g", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, str):
        return value
    return format(value, spec)


def _ratio(measured, estimated) -> str:
    if not measured or not estimated:
        return "-"
    return f"{estimated / measured:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(records: list[dict]) -> str:
    """The markdown section of a run: facts, speed, attention, matrix, not measured."""
    from .matrix import all_combinations

    facts = next((r for r in records if r.get("part") == "facts"), {})
    by_part: dict[str, list[dict]] = {}
    for r in records:
        by_part.setdefault(r.get("part"), []).append(r)
    estimates = next((r for r in by_part.get("estimate", []) if r.get("status") == "ok"), None)
    estimate_status = next((r["status"] for r in by_part.get("estimate", [])), "not computed: not run")
    loaded = next((r for r in by_part.get("event", []) if r.get("name") == "loaded"), {})
    end = next((r for r in by_part.get("end", [])), None)
    cuda = facts.get("device", "CPU") != "CPU"
    device = facts.get("device", "?")
    lines = [f"### GPU check on {device} ({facts.get('date', '?')})", ""]
    if cuda:
        where = (f"{device} (compute capability {facts.get('capability')}, {facts.get('gpu_memory_gib')} GiB"
                 f"{'; nvidia-smi: ' + facts['nvidia_smi'] if facts.get('nvidia_smi') else ''})")
    else:
        where = (f"CPU ({facts.get('device_detail', '').removeprefix('CPU: ')}, {facts.get('cpu_count')} cores, load "
                 f"average {', '.join(map(str, facts.get('load_average', []))) or '?'} at the start) — the tiny CPU "
                 "twin of the GPU check, not a GPU measurement")
    lines.append(f"Machine-written by `scripts/gpu_check.sh`. Device: {where}. torch {facts.get('torch')} (CUDA "
                 f"{facts.get('cuda') or 'none'}), diffusers {facts.get('diffusers')}, transformers "
                 f"{facts.get('transformers')}, flash-attn {facts.get('flash_attn')}, flash-attn 3 "
                 f"{facts.get('flash_attn_3')}, Python {facts.get('python')}; {facts.get('dtype')}, "
                 f"{'random weights at the release shapes' if facts.get('preset') == 'release' else 'tiny preset'}. "
                 f"Every number below was measured in this run on this device, unless marked as the estimator's.")
    lines += ["", f"Command: `{facts.get('command', '?')}`", ""]
    if end is not None:
        lines.append(f"Wall time {end['seconds']:.0f} s (budget {facts.get('budget_s'):g} s; load average at the end "
                     f"{', '.join(map(str, end.get('load_average') or [])) or '?'}); pipeline loaded in "
                     f"{loaded.get('seconds', 0):.1f} s.")
    else:
        last = max((r.get("t", 0) for r in records), default=0)
        lines.append(f"The run was stopped after {last:.0f} s (budget {facts.get('budget_s')} s): the rows below are "
                     "what it had measured; the others are not measured.")
    lines.append("")

    # speed
    speed = by_part.get("speed", [])
    if speed:
        lines += [f"Speed: whole clips, {facts.get('frames')} frames at {facts.get('height')}x{facts.get('width')} + 8 "
                  f"history frames ({loaded.get('clip_tokens', '?')} + {loaded.get('history_tokens', '?')} tokens), "
                  f"{facts.get('steps')} steps, CFG 5 (fast: 4 steps, no guidance); "
                  f"speed-up = exact s/step / the row's s/step; diff and PSNR against the exact clip (random weights: "
                  f"only the speed means something); est. = the memory estimator's GPU peak for the row's placement "
                  f"with umT5 kept on the GPU as here (cache rows: its step-cache model, firstblock's residual, "
                  f"which TeaCache and MagCache keep too){', est./meas. its ratio to the measured peak' if cuda else ''}.",
                  ""]
        header = ["row", "result", "s/step", "s/clip", "speed-up", "TFLOP/s", "MFU", "peak GPU GiB", "est. GPU GiB"]
        header += ["est./meas."] if cuda else ["peak RSS GiB"]
        header += ["max diff", "PSNR dB", "notes"]
        rows = []
        for r in speed:
            est = None
            if estimates:
                key = "cache-" + r["name"].split("-")[1] if r["name"].startswith("cache-") else r["name"]
                est = (estimates["speed"].get(key) or {}).get("gpu_bytes")
            if r.get("status") != "ok":
                rows.append([r["name"], r.get("status", "?")] + ["-"] * (len(header) - 2))
                continue
            notes = []
            if r.get("skipped_steps") is not None:
                notes.append(f"skipped steps {r['skipped_steps']} of {r.get('steps')}")
            if r.get("fp8_kind") not in (None, "off"):
                notes.append(f"FP8 {r['fp8_kind']}")
            if r.get("attention"):
                notes.append(f"attention {r['attention']}")
            psnr = r.get("psnr_db")
            psnr = "exact" if psnr is None or psnr == "inf" or (isinstance(psnr, float) and math.isinf(psnr)) else \
                _fmt(psnr, ".1f")
            rows.append([r["name"], "ok", _fmt(r["seconds_per_step"], ".3f"), _fmt(r["seconds_per_clip"], ".2f"),
                         f"{r['speed_up']:.2f}x", _fmt(r.get("tflops")),
                         "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%", _gib(r.get("peak_gpu_bytes")),
                         _gib(est)]
                        + ([_ratio(r.get("peak_gpu_bytes"), est)] if cuda else [_gib(r.get("peak_rss_bytes"))])
                        + [_fmt(r.get("max_diff"), ".0f"), psnr, "; ".join(notes) or "-"])
        lines += [_table(header, rows), ""]

    # attention
    attention = by_part.get("attention", [])
    if attention:
        lines += [f"Attention backends: one denoiser call at the speed clip's shape after a warm-up call (median of "
                  f"{facts.get('attention_calls')} calls); diff = max abs difference of the velocity to the first "
                  f"backend's; est. = the estimator's denoise-stage peak (all models on the GPU).", ""]
        header = ["backend", "result", "s/call", "speed-up", "TFLOP/s", "MFU", "peak GPU GiB", "est. GPU GiB"]
        header += ["est./meas."] if cuda else []
        header += ["max abs diff", "why chosen / not run"]
        rows = []
        est = estimates["attention"]["gpu_bytes"] if estimates else None
        for r in sorted(attention, key=lambda r: r.get("status") != "ok"):
            if r.get("status") != "ok":
                status = r.get("status", "?")
                rows.append([r["name"], status if len(status) <= 140 else status[:137] + "..."]
                            + ["-"] * (len(header) - 3) + ["-"])
                continue
            rows.append([r["name"], "ok", _fmt(r["seconds_per_call"], ".3f"), f"{r['speed_up']:.2f}x",
                         _fmt(r["tflops"]), "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
                         _gib(r.get("peak_gpu_bytes")), _gib(est)]
                        + ([_ratio(r.get("peak_gpu_bytes"), est)] if cuda else [])
                        + [f"{r['max_abs_diff']:.3g} vs {r['compared_with']}", r.get("reason", "-")])
        lines += [_table(header, rows), ""]

    # matrix
    matrix = {r["name"]: r for r in by_part.get("matrix", [])}
    matrix_facts = next((r for r in by_part.get("matrix_facts", [])), {})
    if matrix:
        unchanged = matrix_facts.get("shared_weights_unchanged")
        lines += [f"Mode matrix (`python -m longvie.benchmark --mode-matrix`'s rows): {facts.get('matrix_frames')} "
                  f"frames at {facts.get('height')}x{facts.get('width')} + 2 history latent frames, "
                  f"{facts.get('matrix_steps')} denoiser calls per row, guidance off, the speed rows' weights; FP8 "
                  f"'on' = {matrix_facts.get('fp8_on', '-')}; s/call: first call (compiles, first kernels) / the "
                  f"fastest later one; est. = the estimator's peak for the denoiser alone in the row's mode; shared "
                  f"weights unchanged after all rows: "
                  f"{'yes' if unchanged else 'NO' if unchanged is False else matrix_facts.get('shared_weights_check', 'not checked')}.",
                  ""]
        header = ["offload", "fp8", "compile", "cache", "result", "max abs diff vs exact",
                  "weight dtype seen at forward", "peak memory" if cuda else "peak memory (RSS)",
                  "host->device bytes per call", "s/call", "est. GPU GiB"] + (["est./meas."] if cuda else [])
        rows = []
        from .matrix import _bytes

        for combo in all_combinations():
            name = "/".join(combo)
            r = matrix.get(name)
            est = estimates["matrix"].get(name) if estimates else None
            if r is None:
                rows.append(list(combo) + ["not measured: the run stopped before this row"] + ["-"] * 5 + [_gib(est)]
                            + (["-"] if cuda else []))
                continue
            if "weight_dtypes" not in r:  # not measured
                rows.append(list(combo) + [r.get("status", "?")] + ["-"] * 5 + [_gib(est)] + (["-"] if cuda else []))
                continue
            modes = r.get("modes") or {}
            fp8 = combo[1] if combo[1] == "off" or not modes.get("fp8") else f"on ({modes['fp8']})"
            cache = combo[3] if r.get("cached_calls") is None else f"{combo[3]} ({r['cached_calls']} cached)"
            dtypes = ", ".join(f"{k} x{v}" for k, v in sorted((r.get("weight_dtypes") or {}).items())) or "-"
            calls = r.get("call_seconds") or []
            per_call = f"{calls[0]:.3g} / {min(calls[1:]):.3g}" if len(calls) > 1 else "-"
            rows.append([combo[0], fp8, combo[2], cache, r["status"], _fmt(r.get("max_abs_diff")), dtypes,
                         _bytes(r.get("peak_bytes")), _bytes(r.get("h2d_bytes_per_call")), per_call, _gib(est)]
                        + ([_ratio(r.get("peak_bytes"), est)] if cuda else []))
        lines += [_table(header, rows), ""]

    # what was not measured (each row says why in its table)
    counts = {part: sum(1 for r in by_part.get(part, []) if str(r.get("status", "")).startswith("not "))
              for part in ("speed", "attention", "matrix")}
    counts["matrix"] += sum(1 for combo in all_combinations() if "/".join(combo) not in matrix) if matrix else 0
    summary = ", ".join(f"{part} {count}" for part, count in counts.items())
    lines.append(f"Rows not measured (the reason is in each row): {summary}."
                 + ("" if estimates else f" Memory estimator: {estimate_status}."))
    if estimates and estimates.get("errors"):
        lines.append("Estimator rows not computed: " + "; ".join(estimates["errors"]) + ".")
    return "\n".join(lines).rstrip() + "\n"


def write_docs_section(path: Path, device: str, text: str) -> None:
    """Replace (or append) the section of ``device`` in ``path`` between its markers; the rest is untouched."""
    from ..media.atomic import atomic_write_text

    begin, end = f"<!-- gpu_check: {device} begin -->", f"<!-- gpu_check: {device} end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, new)


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.benchmark.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl, table.md and logs")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available, else the CPU twin)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop adding rows when this many seconds have passed [CUDA 420, CPU 600]")
    parser.add_argument("--speed-share", type=float, default=0.55,
                        help="fraction of the budget the speed and attention rows may use [0.55]")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of the speed rows [4]")
    parser.add_argument("--frames", type=int, default=None, help="frames of the speed rows [CUDA 81, CPU 5]")
    parser.add_argument("--height", type=int, default=None, help="[CUDA 352, CPU 32]")
    parser.add_argument("--width", type=int, default=None, help="[CUDA 640, CPU 48]")
    parser.add_argument("--matrix-frames", type=int, default=None, help="frames of the matrix rows [CUDA 21, CPU 9]")
    parser.add_argument("--matrix-steps", type=int, default=4, help="denoiser calls per matrix row [4]")
    parser.add_argument("--attention-calls", type=int, default=2, help="timed denoiser calls per attention row [2]")
    parser.add_argument("--all-thresholds", action="store_true",
                        help="a speed row per published step-cache threshold (default: each kind's default one)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run [all]")
    parser.add_argument("--pin-master", action=argparse.BooleanOptionalAction, default=True,
                        help="CUDA: keep the matrix's host copy of the weights page-locked (faster copies) [on]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [CPU twin: 1]")
    parser.add_argument("--write-docs", action=argparse.BooleanOptionalAction, default=None,
                        help="replace this device's section of docs/performance.md [on for a GPU's results, off for "
                             "the CPU twin's]")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page --write-docs writes [docs/performance.md]")
    parser.add_argument("--render-only", action="store_true",
                        help="make the table (and with --write-docs the docs section) from --out's results.jsonl")
    parser.add_argument("--prerequisites", action="store_true", help="print versions and the device; exit")
    parser.add_argument("--command", default=None, help="the command line to record (the shell script's)")
    parser.add_argument("--estimate-plan", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--prerequisites" in argv:
        return prerequisites()
    args = build_parser().parse_args(argv)
    if args.estimate_plan is not None:
        return estimate_main(args.estimate_plan, args.out)
    if args.render_only:
        if not (args.out / RESULTS).is_file():
            print(f"error: --render-only: {args.out / RESULTS} does not exist", file=sys.stderr)
            return 2
        records = read_results(args.out)
        text = render(records)
        print(text)
        device = next((r.get("device") for r in records if r.get("part") == "facts"), None) or "unknown device"
        if args.write_docs or (args.write_docs is None and device not in ("CPU", "unknown device")):
            write_docs_section(args.docs, device, text)
            print(f"wrote the {device} section of {args.docs}")
        return 0
    from ..media.output_dir import OutputDirError, claim_output_dir, mark_output_dir

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device here (leave --device out to run the CPU twin)",
              file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
        args.device = str(device)
    args.preset = "release" if cuda else "tiny"
    args.budget_s = args.budget_s if args.budget_s is not None else (420.0 if cuda else 600.0)
    args.steps = args.steps or 4
    args.frames = args.frames or (81 if cuda else 5)
    args.height = args.height or (352 if cuda else 32)
    args.width = args.width or (640 if cuda else 48)
    args.matrix_frames = args.matrix_frames or (21 if cuda else 9)
    args.write_docs = cuda if args.write_docs is None else args.write_docs
    for name in ("frames", "matrix_frames"):
        if (getattr(args, name) - 1) % 4:
            print(f"error: --{name.replace('_', '-')} {getattr(args, name)}: frames must be 4k+1 (e.g. 81, 21, 9, 5)",
                  file=sys.stderr)
            return 2
    if args.height % 16 or args.width % 16:
        print(f"error: --height/--width {args.height}x{args.width}: each must be a multiple of 16", file=sys.stderr)
        return 2
    try:
        claim_output_dir(args.out, "GPU check folder", kind="gpu_check")
    except OutputDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    mark_output_dir(args.out, "gpu_check")
    (args.out / RESULTS).unlink(missing_ok=True)
    (args.out / "crashes.txt").unlink(missing_ok=True)
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    import warnings

    warnings.simplefilter("ignore")  # library warnings (flex attention, experimental backends): not results
    check = Check(args, args.out)
    check.argv = argv
    if cuda:
        return check.run()
    # the CPU twin: inductor with one compile worker and scalar C++ (faster to build on a small machine; the same
    # graphs and checks)
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"compile_threads": 1, "cpp.vec_isa_ok": False}):
        return check.run()


if __name__ == "__main__":
    raise SystemExit(main())
