"""One place that decides how the speed and memory modes compose.

    request = ModeRequest(offload="group", fp8=True, compile=True, step_cache="firstblock")
    plan = plan_modes(request, DeviceInfo.probe("cuda", torch.bfloat16))   # before any weights load
    ...load the pipeline (or the denoiser) on the host...
    record = apply_modes(pipe, plan)                                       # in the one order below

:func:`plan_modes` validates a :class:`ModeRequest` against the device (:class:`DeviceInfo`: FP8 GEMM
and compiler support are probed in milliseconds) and returns a :class:`ModePlan`, or raises
:class:`ModeError` with one sentence for a combination that cannot run. :func:`apply_modes` then
applies the plan to a ``LongViePipeline`` or a bare ``LongVieDenoiser`` in this order, and returns a
:class:`ModeRecord` of what actually ran (it goes into the run manifest):

1. LoRAs, fused into the weights (``longvie.weights.lora.load_loras``): before quantising;
2. FP8 (:mod:`.fp8`): each block Linear quantised one at a time (on the GPU when there is one) and
   stored where it will live, so the bf16 weights never all sit on the GPU;
3. placement / offload (:mod:`.offload`): "none" moves everything to the device, "model" puts
   diffusers' model offload on the pipeline (accelerate's hook on a bare denoiser), "group" streams the
   blocks (FP8 blocks stream at one byte per weight);
4. regional compile of the repeated blocks (:mod:`.compile`): no offload hook sits on a block (group
   offload wraps ``run_blocks``, model offload hooks the whole denoiser), so every block compiles
   with ``fullgraph=True``;
5. step cache (:mod:`.step_cache`): the pipeline's default for its calls;
6. attention backend (:mod:`.attention`).

Every caller goes through here: the sample CLI (``longvie.longvideo.cli.pipeline_loader``), the
Python API (``LongViePipeline.from_pretrained(..., modes=ModeRequest(...))``), the app (through the
CLI's loader) and the benchmark (``python -m longvie.benchmark --mode-matrix``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import LongVieError
from .attention import AttentionChoice, apply_attention, select_attention_backend
from .compile import CompileConfig, apply_regional_compile, compile_targets, inductor_available
from .fp8 import KINDS as FP8_KINDS
from .fp8 import FP8Linear, apply_fp8, fp8_target_names, scaled_mm_support, summarize_names
from .offload import MODES as OFFLOAD_MODES
from .offload import apply_group_offload

FP8_CHOICES = ("off", "auto", *FP8_KINDS)  # "auto": "gemm" where the device runs it, else "weight-only"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs


class ModeError(LongVieError, ValueError):
    """A requested combination of modes cannot run (on this device, or anywhere); one sentence why."""


def _fp8_choice(value) -> str:
    if value is True:
        return "auto"
    if value is False or value is None:
        return "off"
    if value == "on":
        return "auto"
    if value not in FP8_CHOICES:
        raise ModeError(f"fp8 must be one of {', '.join(FP8_CHOICES)} (or true/false), got {value!r}")
    return value


@dataclass(frozen=True)
class ModeRequest:
    """What the user asked for (CLI flags, Python API, app, benchmark).

    offload: "none" | "model" | "group" (see :mod:`.offload`).
    fp8: "off" | "auto" (True, "on") | "gemm" | "weight-only" (see :mod:`.fp8`).
    compile: regional ``torch.compile`` of the repeated blocks; ``compile_config`` its arguments.
    step_cache, step_cache_threshold: step-cache kind (None: off) and threshold (None: the kind's default);
        step_cache_ratios: MagCache's calibrated ratios file (None: the published ones).
    attention: "auto" or a diffusers attention backend name.
    loras: ``longvie.weights.lora.LoraSpec`` s, fused before FP8 (``fuse_loras=False`` keeps them as
        separate adapters; not possible with FP8).
    sequence_parallel: ranks sharing each denoiser call (attention backends must support it).
    offload_stream: a stand-in copy stream for group offload on a CPU device (tests, CPU benchmark);
        None on CUDA (a side stream is made).
    """

    offload: str = "none"
    fp8: Any = "off"
    compile: bool = False
    compile_config: CompileConfig | None = None
    step_cache: str | None = None
    step_cache_threshold: float | None = None
    step_cache_ratios: str | None = None
    attention: str = "auto"
    loras: tuple = ()
    fuse_loras: bool = True
    sequence_parallel: int = 1
    offload_stream: Any = None


@dataclass(frozen=True)
class DeviceInfo:
    """What the device can do, probed once before loading (:meth:`probe`)."""

    device: torch.device
    dtype: torch.dtype                     # the denoiser's compute dtype
    name: str
    capability: tuple[int, int] | None
    fp8_gemm: bool                         # torch._scaled_mm with per-row scales runs here in ``dtype`` (CPU too)
    fp8_gemm_reason: str
    inductor: str | None                   # None: inductor can generate code for the device; else why not

    @classmethod
    def probe(cls, device: torch.device | str | None, dtype: torch.dtype) -> "DeviceInfo":
        from .devices import resolve_device

        device = resolve_device(device)
        capability, name = None, "CPU"
        if device.type == "cuda" and torch.cuda.is_available():
            capability = torch.cuda.get_device_capability(device)
            name = torch.cuda.get_device_name(device)
        gemm, reason = scaled_mm_support(device, dtype)
        return cls(device, dtype, name, capability, gemm, reason, inductor_available(device))


@dataclass(frozen=True)
class ModePlan:
    """The validated plan :func:`apply_modes` carries out (see the module docstring for the order)."""

    device: torch.device
    dtype: torch.dtype
    offload: str                            # effective: "none" on a CPU device without a stand-in stream
    fp8: str | None                         # None | "gemm" | "weight-only"
    fp8_reason: str
    compile: CompileConfig | None
    step_cache: Any                         # StepCacheConfig | None
    attention: AttentionChoice
    loras: tuple = ()
    fuse_loras: bool = True
    offload_stream: Any = None
    notes: tuple[str, ...] = ()

    def settings(self) -> dict:
        """The parts that change pixels (recorded as run settings; a resume must match them)."""
        cache = self.step_cache
        return {"fp8": self.fp8 is not None, "fp8_kind": self.fp8,
                "step_cache": None if cache is None else cache.kind,
                "step_cache_threshold": None if cache is None else cache.threshold}

    def describe(self) -> str:
        parts = [f"offload {self.offload}", f"fp8 {self.fp8 or 'off'}",
                 f"compile {'on' if self.compile else 'off'}",
                 f"step cache {self.step_cache.kind if self.step_cache else 'off'}",
                 f"attention {self.attention.backend}"]
        if self.loras:
            parts.append(f"{len(self.loras)} LoRA(s)")
        return "modes: " + ", ".join(parts) + "".join(f"; {note}" for note in self.notes)


@dataclass
class ModeRecord:
    """What actually ran (the run manifest's ``modes``): read from the model after :func:`apply_modes`."""

    offload: str
    offload_detail: dict = field(default_factory=dict)
    fp8: str = "off"
    fp8_layers: int = 0
    fp8_modules: dict = field(default_factory=dict)
    compiled: dict = field(default_factory=dict)        # {"transformer.blocks": n, ...}
    compile_skipped: list = field(default_factory=list)
    attention: str = "native"
    attention_reason: str = ""
    step_cache: dict | None = None
    loras: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def plan_modes(request: ModeRequest, device_info: DeviceInfo) -> ModePlan:
    """Validate ``request`` for ``device_info`` before anything loads; raises :class:`ModeError` (one sentence)."""
    device, dtype = device_info.device, device_info.dtype
    notes = []
    if request.offload not in OFFLOAD_MODES:
        raise ModeError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {request.offload!r}")
    offload = request.offload
    if device.type != "cuda" and offload != "none" and request.offload_stream is None:
        notes.append(f"offload {offload} on {device.type}: nothing to offload to, everything stays in place")
        offload = "none"

    fp8_choice = _fp8_choice(request.fp8)
    fp8, fp8_reason = None, ""
    if fp8_choice == "auto":  # FP8 GEMMs where a GPU runs them; the CPU's are no faster than dequantising
        if device_info.fp8_gemm and device.type == "cuda":
            fp8, fp8_reason = "gemm", "FP8 GEMMs (torch._scaled_mm, per-row scales)"
        else:
            why = device_info.fp8_gemm_reason or f"FP8 GEMMs bring no speed on {device.type}"
            fp8, fp8_reason = "weight-only", f"FP8 weight-only storage: {why}"
    elif fp8_choice == "gemm":
        if not device_info.fp8_gemm:
            raise ModeError(f"fp8 'gemm' cannot run on {device_info.name} ({device}): {device_info.fp8_gemm_reason}; "
                            "use fp8 'auto' or 'weight-only'")
        fp8, fp8_reason = "gemm", "FP8 GEMMs, as requested"
    elif fp8_choice == "weight-only":
        fp8, fp8_reason = "weight-only", "FP8 weight-only storage, as requested"

    compile_config = None
    if request.compile:
        compile_config = request.compile_config or CompileConfig()
        if compile_config.backend == "inductor" and device_info.inductor is not None:
            raise ModeError(f"compile: torch.compile's inductor cannot generate code for {device} here "
                            f"({device_info.inductor}); run without --compile")
        if compile_config.mode in CUDA_GRAPH_MODES and offload != "none":
            raise ModeError(f"compile mode {compile_config.mode!r} records CUDA graphs, which keep the weights' "
                            f"addresses, but offload {offload!r} moves the weights between calls; use compile mode "
                            "'default' or 'max-autotune-no-cudagraphs', or offload 'none'")

    step_cache = None
    if request.step_cache is not None:
        from .step_cache import StepCacheConfig

        try:
            options = {"magcache_ratios": request.step_cache_ratios} if request.step_cache_ratios else {}
            step_cache = StepCacheConfig(kind=request.step_cache, threshold=request.step_cache_threshold, **options)
        except ValueError as error:
            raise ModeError(str(error)) from None

    try:
        attention = select_attention_backend(request.attention, device, dtype,
                                             sequence_parallel=request.sequence_parallel > 1)
    except ValueError as error:
        raise ModeError(str(error)) from None

    loras = tuple(request.loras)
    if loras:
        if not request.fuse_loras and fp8 is not None:
            raise ModeError("unfused LoRAs cannot run on FP8 layers (the adapters need the bf16 weight they add to); "
                            "fuse them (the default) or turn FP8 off")
        missing = [str(spec.path) for spec in loras if not Path(spec.path).is_file()]
        if missing:
            raise ModeError(f"LoRA file(s) not found: {', '.join(missing)}")
    return ModePlan(device=device, dtype=dtype, offload=offload, fp8=fp8, fp8_reason=fp8_reason,
                    compile=compile_config, step_cache=step_cache, attention=attention, loras=loras,
                    fuse_loras=request.fuse_loras, offload_stream=request.offload_stream, notes=tuple(notes))


class HostToDeviceCounter:
    """Counts the weight bytes a whole-model offload moves onto the device: a forward pre-hook on the
    denoiser (it runs before accelerate's onload hook) adds the bytes of every tensor not yet there."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.module, self.device = module, torch.device(device)
        self.calls, self.bytes = 0, 0
        module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1
        tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()
        self.bytes += sum(t.numel() * t.element_size() for t in tensors if t.device != self.device)

    def reset_stats(self) -> None:
        self.calls, self.bytes = 0, 0

    def stats(self) -> dict:
        return {"calls": self.calls, "bytes": self.bytes, "bytes_per_call": self.bytes / self.calls if self.calls else 0.0}


def _model_offload_denoiser(denoiser, device: torch.device) -> None:
    """Whole-model offload of a bare denoiser (accelerate's hook, as diffusers' model offload uses): moved
    to ``device`` for its calls; :func:`offload_now` sends it back."""
    from accelerate import cpu_offload_with_hook

    denoiser.to("cpu")
    _, hook = cpu_offload_with_hook(denoiser, execution_device=device)
    denoiser.model_offload_hook = hook


def offload_now(denoiser) -> None:
    """Send a model-offloaded bare denoiser back to the host (end of a clip)."""
    hook = getattr(denoiser, "model_offload_hook", None)
    if hook is not None:
        hook.offload()


def _compiled_summary(names: list[str]) -> dict:
    summary: dict[str, int] = {}
    for name in names:
        prefix = name.rsplit(".", 1)[0]
        summary[prefix] = summary.get(prefix, 0) + 1
    return summary


def apply_modes(target, plan: ModePlan) -> ModeRecord:
    """Apply ``plan`` to a ``LongViePipeline`` (``target.denoiser``) or a bare ``LongVieDenoiser`` whose weights
    are on the host (or already on ``plan.device`` for offload "none"), in the order of the module docstring.
    Returns the :class:`ModeRecord` (also stored as ``target.mode_record``)."""
    pipe = target if hasattr(target, "denoiser") else None
    denoiser = pipe.denoiser if pipe is not None else target
    device = plan.device
    record = ModeRecord(offload=plan.offload, notes=list(plan.notes))

    # 1. LoRAs, fused before quantising
    if plan.loras:
        from ..weights.lora import load_loras

        record.loras = [dict(r) for r in load_loras(denoiser, list(plan.loras), fuse=plan.fuse_loras)]

    # 2. FP8: quantised on the GPU one layer at a time, stored where the layer will live
    if plan.fp8 is not None:
        work = device if device.type != "cpu" else None  # quantise on the accelerator, one layer at a time
        keep = device if plan.offload == "none" else torch.device("cpu")
        apply_fp8(denoiser, plan.fp8, work_device=work, keep_device=keep)
        record.notes.append(plan.fp8_reason)
    layers = dict(denoiser.named_modules())  # what the model holds now (FP8 applied earlier counts too)
    names = [n for n in fp8_target_names(denoiser) if isinstance(layers[n], FP8Linear)]
    if names:
        kinds = sorted({layers[n].kind for n in names})
        record.fp8, record.fp8_layers, record.fp8_modules = "+".join(kinds), len(names), summarize_names(names)

    # 3. placement / offload
    if pipe is not None:
        pipe.enable_offload(plan.offload, device, stream=plan.offload_stream)
    elif plan.offload == "none":
        denoiser.to(device)
    elif plan.offload == "model":
        _model_offload_denoiser(denoiser, device)
    else:
        apply_group_offload(denoiser, device, stream=plan.offload_stream)
    streamer = getattr(denoiser, "block_streamer", None)
    if streamer is not None:
        record.offload_detail = streamer.describe()
    elif plan.offload == "model" and device.type == "cuda":
        denoiser.h2d_counter = HostToDeviceCounter(denoiser, device)

    # 4. regional compile of the blocks (no hook sits on them: offload stays outside the graphs)
    if plan.compile is not None:
        compiled, skipped = compile_targets(denoiser)
        apply_regional_compile(denoiser, plan.compile)
        record.compiled, record.compile_skipped = _compiled_summary(compiled), skipped

    # 5. step cache: the pipeline's default for its calls
    if plan.step_cache is not None:
        record.step_cache = {"kind": plan.step_cache.kind, "threshold": plan.step_cache.threshold}
    if pipe is not None:
        pipe.default_step_cache = plan.step_cache

    # 6. attention
    if pipe is not None:
        pipe.set_attention(plan.attention)
    else:
        apply_attention(denoiser, plan.attention)
    record.attention, record.attention_reason = plan.attention.backend, plan.attention.reason

    target.mode_record = record
    if pipe is not None:
        denoiser.mode_record = record
    return record


def host_to_device_stats(denoiser) -> dict | None:
    """Host->device weight traffic of the offload mode since its last reset (None: nothing is offloaded)."""
    for name in ("block_streamer", "h2d_counter"):
        counter = getattr(denoiser, name, None)
        if counter is not None:
            return counter.stats()
    return None


def reset_host_to_device_stats(denoiser) -> None:
    for name in ("block_streamer", "h2d_counter"):
        counter = getattr(denoiser, name, None)
        if counter is not None:
            counter.reset_stats()
