"""The mode matrix: every combination of offload x FP8 x compile x step cache, each checked against the exact path.

    python -m longvie.benchmark --mode-matrix                       # tiny preset on the CPU (stand-ins)
    python -m longvie.benchmark --mode-matrix --preset release --random-weights --device cuda

Rows: offload {none, model, group} x FP8 {off, on} x compile {off, on} x step cache {off, firstblock}
(24). Each row builds a fresh denoiser from one set of random weights (shared host tensors, never
changed in place), plans its modes with :func:`~longvie.acceleration.modes.plan_modes` and applies
them with :func:`~longvie.acceleration.modes.apply_modes` (the code the CLI, the Python API and the app
use), then samples one clip's latents (Euler, ``--steps`` denoiser calls, guidance off, with history
latents) and compares the final latents with the exact path (no modes).

Columns: ``result`` (ok / refused: the planner's sentence / crashed: the error), ``max abs diff vs
exact`` (final latents), ``weight dtype seen at forward``, ``peak memory`` (CUDA: max allocated; CPU:
the process's peak RSS), ``host->device bytes per call`` (the weight bytes the offload code copied,
averaged over the calls; inputs not counted).

"Weight dtype seen at forward": before each block index runs, a wrapper placed innermost around
``LongVieDenoiser.run_blocks`` (inside group offload's streamer, after model offload's hook) reads
the ``weight`` of every Linear / FP8Linear layer of that main block and its control blocks, i.e.
the tensors the layers compute with: after the offload put them on the device, before the block's
own computation, outside any compiled graph (a compiled block receives these very tensors as its
inputs). An FP8 layer shows float8_e4m3fn there (the weight-only kind up-casts a temporary copy
inside its forward); a row with FP8 "on" whose layers show bfloat16/float32 is a failure.

On the CPU every row runs with its stand-in: group offload on a ``torch.cpu.Stream`` (the streaming
code runs; the copies are host->host), model offload with accelerate's hook on the CPU, compile with
inductor (C++ code), FP8 as per-row weight-only storage with float32 compute. No combination is
refused on any device: the planner refuses only what cannot work (none of these 24 rows).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path

import torch
from torch import nn

OFFLOADS = ("none", "model", "group")
FP8S = ("off", "on")
COMPILES = ("off", "on")
CACHES = ("off", "firstblock")
COLUMNS = ("offload", "fp8", "compile", "cache", "result", "max abs diff vs exact", "weight dtype seen at forward",
           "peak memory", "host->device bytes per call")


@dataclass
class MatrixRow:
    offload: str
    fp8: str
    compile: str
    cache: str
    result: str = ""
    max_abs_diff: float | None = None
    weight_dtypes: dict = field(default_factory=dict)   # dtype name -> layer reads
    weight_devices: list = field(default_factory=list)
    peak_bytes: int | None = None
    h2d_bytes_per_call: float | None = None
    seconds: float | None = None
    call_seconds: list = field(default_factory=list)     # wall time of each denoiser call (synchronised)
    modes: dict = field(default_factory=dict)            # the ModeRecord
    cached_calls: int | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


class WeightDtypeProbe:
    """Reads the Linear / FP8Linear weights of each block index right before it runs (see the module docstring).
    Install it before :func:`apply_modes` so that it sits innermost."""

    def __init__(self, denoiser):
        from ..acceleration.fp8 import FP8Linear
        from ..acceleration.offload import stream_units

        self.units = stream_units(denoiser)
        self.kinds = (nn.Linear, FP8Linear)
        self.dtypes: Counter = Counter()
        self.devices: set = set()
        self.inner = denoiser.run_blocks
        denoiser.run_blocks = self

    def __call__(self, state, start, stop, *args, **kwargs):
        for index in range(start, stop):
            for block in self.units[index]:
                for module in block.modules():
                    if isinstance(module, self.kinds):
                        self.dtypes[str(module.weight.dtype).removeprefix("torch.")] += 1
                        self.devices.add(str(module.weight.device))
            state = self.inner(state, index, index + 1, *args, **kwargs)
        return state


# --------------------------------------------------------------------------- model and inputs
def _skeleton(transformer_config: dict, control_layers: int):
    """A LongVie denoiser of this config on the meta device (filled by ``load_state_dict(assign=True)``)."""
    from diffusers import WanTransformer3DModel

    from ..models import LongVieControlBranch, LongVieDenoiser

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**transformer_config)
        control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, control_layers))
    return LongVieDenoiser(transformer, control).eval()


RELEASE_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                           out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                           cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                           added_kv_proj_dim=5120, rope_max_seq_len=1024)


def build_master(preset: str, dtype: torch.dtype, device: torch.device):
    """(make_denoiser, transformer config): random weights once on the host; ``make_denoiser()`` returns a
    fresh denoiser whose tensors are these host tensors (modes never change them in place)."""
    if preset == "tiny":
        from ..presets.tiny import build_tiny_control, build_tiny_transformer, tiny_model_config

        transformer = build_tiny_transformer(0)
        denoiser = _assemble(transformer, build_tiny_control(transformer))
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in tiny_model_config()["transformer"].items()}
        layers = tiny_model_config()["control_layers"]
    else:  # random weights at the real shapes, drawn on the device (fast), kept on the host
        from diffusers import WanTransformer3DModel

        from ..models import LongVieControlBranch
        from ..presets.tiny import randomize_
        from .speed import _built_on

        config, layers = dict(RELEASE_TRANSFORMER), 12
        torch.manual_seed(0)
        transformer = _built_on(device, dtype, lambda: WanTransformer3DModel(**config))  # in dtype: no fp32 copy
        control_config = LongVieControlBranch.config_for(transformer.config, layers)
        control = _built_on(device, dtype, lambda: LongVieControlBranch(**control_config))
        denoiser = _assemble(transformer, control)
        randomize_(denoiser, scale=0.02)
    master = host_master(denoiser, dtype)
    del denoiser, transformer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return denoiser_factory(master, config, layers), config


def host_master(denoiser, dtype: torch.dtype | None = None, pin: bool = False, pack: bool | None = None) -> dict:
    """(kind, name) -> a host copy of every parameter and buffer of ``denoiser`` (non-persistent buffers such as
    the RoPE tables included), never sharing memory with it. ``dtype``: cast floating tensors to it, keeping the
    modulation tables and norms in float32 (None: keep each tensor's dtype). ``pin``: page-locked copies (faster
    host->device copies for every row; CUDA only), packed into slabs of 1 GiB: pinned one by one, the
    tensors would each be rounded up to a power of two, up to twice the bytes). ``pack``: slabs without pinning
    (default: as ``pin``)."""
    from ..acceleration.offload import ALIGN, SLAB_BYTES

    named = [(kind, name, tensor) for kind, items in (("param", denoiser.named_parameters()),
                                                      ("buffer", denoiser.named_buffers())) for name, tensor in items]

    def target(name, tensor):
        keep_fp32 = any(part in ("scale_shift_table", "norm1", "norm2", "norm3") for part in name.split("."))
        return tensor.dtype if dtype is None else torch.float32 if keep_fp32 or not tensor.is_floating_point() \
            else dtype

    master, slab, used = {}, None, 0
    with torch.no_grad():
        for kind, name, tensor in named:
            dtype_ = target(name, tensor)
            if not (pin if pack is None else pack):
                master[kind, name] = torch.empty(tensor.shape, dtype=dtype_).copy_(tensor.detach())
                continue
            nbytes = tensor.numel() * dtype_.itemsize
            if slab is None or used + nbytes > slab.numel():
                slab, used = torch.empty(max(SLAB_BYTES, nbytes), dtype=torch.uint8, pin_memory=pin), 0
            view = slab[used:used + nbytes].view(dtype_).view(tensor.shape)
            master[kind, name] = view.copy_(tensor.detach())
            used += (nbytes + ALIGN - 1) // ALIGN * ALIGN
    return master


def denoiser_factory(master: dict, transformer_config: dict, control_layers: int):
    """``make_denoiser()``: a fresh denoiser of this config whose tensors are ``master``'s host tensors."""

    def make_denoiser():
        skeleton = _skeleton(transformer_config, control_layers)
        for (kind, name), tensor in master.items():
            owner_name, _, attr = name.rpartition(".")
            owner = skeleton.get_submodule(owner_name)
            if kind == "param":
                owner._parameters[attr] = nn.Parameter(tensor)
            else:
                owner._buffers[attr] = tensor
        return skeleton

    return make_denoiser


def denoiser_config(denoiser) -> tuple[dict, int]:
    """(the DiT's init arguments, control depth) of a built denoiser, for :func:`denoiser_factory`."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in denoiser.transformer.config.items()
              if not k.startswith("_")}
    return config, denoiser.control.config.num_layers


def _assemble(transformer, control):
    from ..models import LongVieDenoiser

    return LongVieDenoiser(transformer, control).eval()


def make_inputs(config: dict, frames: int, height: int, width: int, dtype: torch.dtype, device: torch.device,
                history: bool = True, seed: int = 0, image_tokens: int = 257) -> dict:
    """Random denoiser conditions for a clip of ``frames`` x ``height`` x ``width`` pixels (latent grid x8,
    time x4; ``image_tokens`` CLIP tokens: 257 for ViT-H/14, 5 for the tiny tower), plus the initial noise
    ``noise``."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = 1 + (frames - 1) // 4, height // 8, width // 8

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    inputs = dict(text_embeds=randn(1, 512, config["text_dim"]), image_embeds=randn(1, image_tokens, config["image_dim"]),
                  image_latents=randn(1, 20, f, h, w), dense_latents=randn(1, 36, f, h, w),
                  sparse_latents=randn(1, 36, f, h, w))
    inputs["history_latents"] = randn(1, 16, 2, h, w) if history else None
    inputs["noise"] = torch.randn(1, 16, f, h, w, generator=g).to(device)
    return inputs


# --------------------------------------------------------------------------- one row
def sample_latents(denoiser, inputs: dict, steps: int, dtype: torch.dtype, step_cache=None,
                   call_seconds: list | None = None):
    """``steps`` Euler steps of the flow-matching schedule (shift 5), guidance off; returns (latents, cache).
    ``call_seconds``: when a list, each step's wall time is appended (the device is synchronised after each)."""
    from ..acceleration.step_cache import make_step_cache
    from ..models.denoiser import ClipCache
    from ..sampling.scheduling import make_sampling_scheduler

    device = inputs["noise"].device
    conditions = {k: v for k, v in inputs.items() if k != "noise"}
    scheduler = make_sampling_scheduler(steps, 5.0, device=device)
    scheduler.set_begin_index(0)
    cache = make_step_cache(step_cache, steps) if step_cache is not None else None
    clip_cache = ClipCache()
    latents = inputs["noise"].clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            started = time.perf_counter()
            velocity = denoiser(latents.to(dtype), t.expand(1).to(dtype), **conditions, clip_cache=clip_cache,
                                block_stack=cache)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
            if call_seconds is not None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                call_seconds.append(time.perf_counter() - started)
    return latents.float(), cache


def _request(offload, fp8, compile_, cache, stand_in, compile_config, cache_threshold):
    from ..acceleration.modes import ModeRequest

    return ModeRequest(offload=offload, fp8=fp8 == "on", compile=compile_ == "on", compile_config=compile_config,
                       step_cache=None if cache == "off" else cache, step_cache_threshold=cache_threshold,
                       offload_stream=torch.cpu.Stream() if stand_in and offload != "none" else None)


def run_row(row: MatrixRow, make_denoiser, inputs: dict, reference: torch.Tensor, info, steps: int,
            compile_config=None, cache_threshold=None) -> MatrixRow:
    """Plan, apply and sample one combination; never raises (a crash becomes the row's result)."""
    from ..acceleration.compile import remove_regional_compile
    from ..acceleration.modes import ModeError, apply_modes, host_to_device_stats, offload_now, plan_modes
    from .speed import PeakRSS

    device, dtype = info.device, info.dtype
    stand_in = device.type == "cpu"
    denoiser = None
    started = time.perf_counter()
    try:
        plan = plan_modes(_request(row.offload, row.fp8, row.compile, row.cache, stand_in, compile_config,
                                   cache_threshold), info)
    except ModeError as error:
        row.result = f"refused: {error}"
        return row
    try:
        denoiser = make_denoiser()
        probe = WeightDtypeProbe(denoiser)
        row.modes = apply_modes(denoiser, plan).as_dict()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            latents, cache = sample_latents(denoiser, inputs, steps, dtype, plan.step_cache, row.call_seconds)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        offload_now(denoiser)
        row.peak_bytes = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
        stats = host_to_device_stats(denoiser)
        row.h2d_bytes_per_call = 0.0 if stats is None else stats["bytes_per_call"]
        row.cached_calls = None if cache is None else cache.skipped
        row.max_abs_diff = float((latents - reference).abs().max())
        row.weight_dtypes, row.weight_devices = dict(probe.dtypes), sorted(probe.devices)
        row.result = "ok" if math.isfinite(row.max_abs_diff) else "crashed: non-finite latents"
    except Exception as error:  # noqa: BLE001 - a crash is a row's result, reported (and failed by the test)
        first = str(error).splitlines()[0] if str(error) else ""
        row.result = f"crashed: {type(error).__name__}: {first}"
        row.modes["traceback"] = traceback.format_exc()
    finally:
        if denoiser is not None:
            remove_regional_compile(denoiser)
        del denoiser
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row.seconds = time.perf_counter() - started
    return row


@dataclass
class MatrixSetup:
    """One matrix run's shared pieces: the weights (``make_denoiser``), the inputs and the exact path's latents."""

    preset: str
    info: object                 # the DeviceInfo
    make_denoiser: object
    config: dict
    inputs: dict
    reference: torch.Tensor
    frames: int
    height: int
    width: int
    steps: int
    history: bool
    compile_config: object = None
    cache_threshold: float | None = None
    reference_seconds: list = field(default_factory=list)

    def run(self, row: MatrixRow) -> MatrixRow:
        return run_row(row, self.make_denoiser, self.inputs, self.reference, self.info, self.steps,
                       self.compile_config, self.cache_threshold)

    def exact_again(self) -> torch.Tensor:
        """The exact path's latents once more, from the shared host tensors."""
        again = self.make_denoiser().to(self.info.device)
        from ..acceleration.attention import apply_attention

        apply_attention(again, _attention_of(self.info))
        latents = sample_latents(again, self.inputs, self.steps, self.info.dtype)[0]
        del again
        gc.collect()
        return latents

    def weights_unchanged(self) -> bool:
        """The rows shared one set of host tensors: the exact path again must give the same latents."""
        return bool(torch.equal(self.exact_again(), self.reference))

    def facts(self, rows: list[MatrixRow]) -> dict:
        info = self.info
        return {"device": _device_name(info.device), "torch": torch.__version__,
                "dtype": str(info.dtype).removeprefix("torch."), "preset": self.preset, "frames": self.frames,
                "height": self.height, "width": self.width, "steps": self.steps,
                "history_latent_frames": 2 if self.history else 0, "fp8_gemm": info.fp8_gemm,
                "fp8_gemm_reason": info.fp8_gemm_reason,
                "fp8_on": next((r.modes["fp8"] for r in rows if r.fp8 == "on" and r.modes.get("fp8")), "-")}


def prepare_matrix(preset: str = "tiny", device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                   frames: int | None = None, height: int | None = None, width: int | None = None,
                   steps: int = 4, compile_config=None, cache_threshold: float | None = None, history: bool = True,
                   master=None) -> MatrixSetup:
    """Weights, inputs and the exact path's latents for the matrix. ``master``: (make_denoiser, transformer
    config) of weights already made (e.g. :func:`denoiser_factory` over a loaded pipeline's denoiser); by
    default random weights of ``preset`` (:func:`build_master`)."""
    from ..acceleration.attention import apply_attention
    from ..acceleration.devices import resolve_device
    from ..acceleration.modes import DeviceInfo

    device = resolve_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    release = preset == "release"
    frames, height, width = frames or (81 if release else 9), height or (352 if release else 64), \
        width or (640 if release else 112)
    info = DeviceInfo.probe(device, dtype)
    make_denoiser, config = master if master is not None else build_master(preset, dtype, device)
    inputs = make_inputs(config, frames, height, width, dtype, device, history, image_tokens=257 if release else 5)
    exact = make_denoiser().to(device)
    apply_attention(exact, _attention_of(info))
    seconds: list = []
    reference, _ = sample_latents(exact, inputs, steps, dtype, call_seconds=seconds)
    del exact
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return MatrixSetup(preset, info, make_denoiser, config, inputs, reference, frames, height, width, steps, history,
                       compile_config, cache_threshold, seconds)


def run_matrix(preset: str = "tiny", device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               frames: int | None = None, height: int | None = None, width: int | None = None,
               steps: int = 4, compile_config=None, cache_threshold: float | None = None,
               rows: list[tuple] | None = None, history: bool = True) -> tuple[list[MatrixRow], dict]:
    """Run the matrix (all 24 rows, or ``rows`` = [(offload, fp8, compile, cache), ...]). Returns (rows, facts)."""
    setup = prepare_matrix(preset, device, dtype, frames, height, width, steps, compile_config, cache_threshold,
                           history)
    results = [setup.run(MatrixRow(*combination)) for combination in rows or all_combinations()]
    facts = setup.facts(results)
    facts["shared_weights_unchanged"] = setup.weights_unchanged()
    return results, facts


def all_combinations() -> list[tuple[str, str, str, str]]:
    """The 24 rows, (offload, fp8, compile, cache), in the table's order."""
    return list(product(OFFLOADS, FP8S, COMPILES, CACHES))


def _attention_of(info):
    from ..acceleration.attention import select_attention_backend

    return select_attention_backend("auto", info.device, info.dtype)


def _device_name(device: torch.device) -> str:
    from .speed import device_name

    return device_name(device)


# --------------------------------------------------------------------------- printing
def _bytes(value) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def format_rows(rows: list[MatrixRow], cpu: bool) -> str:
    header = list(COLUMNS)
    if cpu:
        header[7] = "peak memory (RSS)"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        fp8 = r.fp8 if r.fp8 == "off" or not r.modes.get("fp8") else f"on ({r.modes['fp8']})"
        dtypes = ", ".join(f"{name} x{count}" for name, count in sorted(r.weight_dtypes.items())) or "-"
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
        cache = r.cache if r.cached_calls is None else f"{r.cache} ({r.cached_calls} cached)"
        cells = [r.offload, fp8, r.compile, cache, r.result.replace("|", "/"), diff, dtypes, _bytes(r.peak_bytes),
                 _bytes(r.h2d_bytes_per_call)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.benchmark --mode-matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "release"], default="tiny")
    parser.add_argument("--random-weights", action="store_true", help="release shapes with random weights (the "
                                                                       "matrix always uses random weights)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--frames", type=int, default=None, help="pixel frames per clip (tiny 9, release 81)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=4, help="denoiser calls per row [4]")
    parser.add_argument("--cache-threshold", type=float, default=None, help="step-cache threshold [the kind's default]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..presets.config import torch_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.dtype) if args.dtype else None
    rows, facts = run_matrix(args.preset, args.device, dtype, args.frames, args.height, args.width, args.steps,
                             cache_threshold=args.cache_threshold)
    print(f"device: {facts['device']}; torch {facts['torch']}; dtype {facts['dtype']}; preset {facts['preset']} "
          f"(random weights); {facts['frames']} frames {facts['height']}x{facts['width']}, {facts['steps']} denoiser "
          f"calls per row, guidance off, 2 history latent frames; FP8 'on' = {facts['fp8_on']}")
    print(format_rows(rows, cpu=facts["device"].startswith("CPU")))
    if not facts["shared_weights_unchanged"]:
        print("error: a row changed the shared weights in place (the exact path gives other latents now)",
              file=sys.stderr)
    crashed = [r for r in rows if r.result.startswith("crashed")]
    for r in crashed:
        print(f"\n{r.offload}/{r.fp8}/{r.compile}/{r.cache}:\n{r.modes.get('traceback', '')}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**facts, "rows": [asdict(r) for r in rows]}, indent=2, default=str))
        print(f"wrote {args.json}")
    return 1 if crashed or not facts["shared_weights_unchanged"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
