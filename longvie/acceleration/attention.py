"""Attention backend for the denoiser: which kernel runs, why, and a guard against SDPA's math kernel.

``select_attention_backend(requested, device, dtype)`` resolves "auto" to a kernel that can run:

* on Hopper (sm90: H100, H200) with half-precision weights, FlashAttention-3 (diffusers' "_flash_3",
  when diffusers reports it usable: the ``flash_attn_interface`` package is installed), else cuDNN
  attention ("_native_cudnn": SDPA's cuDNN kernel, when a tiny cuDNN attention call succeeds on the
  device). Both are faster than flash-attn 2 on sm90 (FA3 uses the Hopper tensor-core pipeline;
  FlashAttention-3 paper, arXiv 2407.08608);
* else flash-attn 2 ("flash") only when diffusers' dispatcher reports it usable (installed, at least
  the version diffusers requires, importable against this torch: ``_CAN_USE_FLASH_ATTN``), the GPU is
  Ampere or newer (compute capability >= 8.0; flash-attn 2 does not run on Turing/Volta) and the
  weights are half precision (flash-attn only takes fp16/bf16);
* otherwise PyTorch SDPA ("native").

Under sequence parallelism "auto" only considers backends that run there
(:func:`supports_sequence_parallel`), and an explicit backend that does not is refused. The returned ``AttentionChoice`` says which backend and why.

``apply_attention(denoiser, choice)`` sets the backend on the DiT and the control branch. For SDPA
on CUDA it also restricts ``torch.nn.functional.scaled_dot_product_attention`` to its fused kernels
(flash, memory-efficient, cuDNN) for every denoiser forward: if none of them accepts the inputs,
SDPA would silently fall back to the math kernel, which materialises the full attention matrix
(40 heads x 20,240^2 tokens in bf16 is > 30 GB per batch item, > 100 GB with its softmax and
float32 copies) and runs out of memory after minutes of loading; restricted, it raises at the
first call instead.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

AUTO = "auto"
NATIVE = "native"
FLASH = "flash"
FLASH_3 = "_flash_3"
CUDNN = "_native_cudnn"
HOPPER = 9  # compute capability major of H100/H200 (sm90)
FLASH_MIN_CAPABILITY = (8, 0)  # flash-attn 2 supports Ampere (sm80) and newer
HALF_DTYPES = (torch.float16, torch.bfloat16)
# Fused SDPA kernels allowed on CUDA (the math kernel is left out on purpose).
FUSED_SDPA_KERNELS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


@dataclass(frozen=True)
class AttentionChoice:
    """``backend``: a diffusers attention backend name; ``reason``: why it was chosen (one sentence);
    ``fused_sdpa_only``: restrict SDPA to its fused kernels around every denoiser forward."""

    backend: str
    reason: str
    fused_sdpa_only: bool = False

    def describe(self) -> str:
        guard = " (SDPA restricted to fused kernels)" if self.fused_sdpa_only else ""
        return f"attention backend: {self.backend}{guard} - {self.reason}"


def diffusers_backend_usable(backend: str) -> tuple[bool, str]:
    """Whether diffusers' dispatcher can run ``backend`` in this environment, and the reason if not.

    Reads diffusers' own availability check (``_check_attention_backend_requirements``), which
    covers missing packages, too-old versions and builds that fail to import against this torch.
    """
    from diffusers.models import attention_dispatch as dispatch

    try:
        name = dispatch.AttentionBackendName(backend)
    except ValueError:
        known = sorted(b.value for b in dispatch.AttentionBackendName)
        return False, f"diffusers has no attention backend {backend!r} (known: {', '.join(known)})"
    try:
        dispatch._check_attention_backend_requirements(name)
    except (RuntimeError, ImportError) as error:
        return False, str(error)
    return True, ""


def _capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def supports_sequence_parallel(backend: str) -> tuple[bool, str]:
    """Whether ``backend`` can run under LongVie's sequence parallelism, and the reason if not ("" when it
    can). The answer comes from :func:`longvie.acceleration.parallel.sequence_parallel_backend_support`,
    which knows how each backend runs there (diffusers' context-parallel attention where diffusers has
    it, LongVie's all-to-all around the single-device kernel otherwise)."""
    from .parallel import sequence_parallel_backend_support

    ok, how = sequence_parallel_backend_support(backend)
    return ok, "" if ok else how


def _cudnn_attention_runs(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    """A (1, 2 heads, 64 tokens, head dim 128) cuDNN attention call on ``device`` (milliseconds)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        q = torch.randn(1, 2, 64, 128, device=device, dtype=dtype)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        if not bool(torch.isfinite(out).all()):
            return False, "cuDNN attention returned non-finite values in the probe"
    except Exception as error:  # noqa: BLE001 - any failure means "cannot use it here"
        return False, f"cuDNN attention does not run here ({str(error).splitlines()[0] if str(error) else error})"
    return True, ""


def _hopper_choice(device, dtype, capability, sequence_parallel: bool) -> AttentionChoice | None:
    """FA3, else cuDNN attention, on an sm90 GPU with half-precision weights (None: neither can run)."""
    skipped = []
    for backend in (FLASH_3, CUDNN):
        usable, why = diffusers_backend_usable(backend)
        if usable and sequence_parallel:
            usable, why = supports_sequence_parallel(backend)
        if usable and backend == CUDNN:
            usable, why = _cudnn_attention_runs(device, dtype)
        if usable:
            name = "FlashAttention-3" if backend == FLASH_3 else "cuDNN attention"
            note = f" ({'; '.join(skipped)})" if skipped else ""
            return AttentionChoice(backend, f"{name} on a sm{capability[0]}{capability[1]} GPU in {dtype}{note}")
        skipped.append(f"{backend} not usable: {why}")
    return None


def select_attention_backend(requested: str, device: torch.device | str, dtype: torch.dtype,
                             sequence_parallel: bool = False) -> AttentionChoice:
    """Resolve ``requested`` ("auto" or a diffusers backend name) for a model in ``dtype`` on ``device``.

    "auto" picks FA3 / cuDNN attention on sm90, flash-attn 2 elsewhere, each only where it can run
    (see the module docstring), and SDPA otherwise. An explicit name is checked the same way and
    raises ``ValueError`` with the reason when it cannot run, before any weights are loaded.
    ``sequence_parallel``: the denoiser will run under sequence parallelism (backends without
    context-parallel support are skipped by "auto" and refused when named).
    """
    device = torch.device(device)
    fused_guard = device.type == "cuda"
    if requested == NATIVE:
        return AttentionChoice(NATIVE, "PyTorch SDPA, as requested", fused_guard)
    if requested == AUTO:
        if device.type != "cuda":
            return AttentionChoice(NATIVE, f"PyTorch SDPA: flash-attn needs a CUDA device, running on {device.type}")
        if dtype not in HALF_DTYPES:
            return AttentionChoice(NATIVE, f"PyTorch SDPA: flash-attn needs float16/bfloat16 weights, got {dtype}",
                                   fused_guard)
        capability = _capability(device)
        if capability is None or capability < FLASH_MIN_CAPABILITY:
            return AttentionChoice(NATIVE, f"PyTorch SDPA: flash-attn 2 needs compute capability >= "
                                           f"{FLASH_MIN_CAPABILITY[0]}.{FLASH_MIN_CAPABILITY[1]}, this GPU has "
                                           f"{capability}", fused_guard)
        if capability[0] == HOPPER:
            choice = _hopper_choice(device, dtype, capability, sequence_parallel)
            if choice is not None:
                return choice
        usable, why = diffusers_backend_usable(FLASH)
        if not usable:
            return AttentionChoice(NATIVE, f"PyTorch SDPA: diffusers reports flash-attn unusable ({why})", fused_guard)
        return AttentionChoice(FLASH, f"flash-attn 2 on a sm{capability[0]}{capability[1]} GPU in {dtype}")
    usable, why = diffusers_backend_usable(requested)
    if not usable:
        raise ValueError(f"attention backend {requested!r} cannot run here: {why}")
    if sequence_parallel:
        usable, why = supports_sequence_parallel(requested)
        if not usable:
            raise ValueError(why)
    if requested == FLASH:
        if dtype not in HALF_DTYPES:
            raise ValueError(f"attention backend 'flash' needs float16/bfloat16 weights, got {dtype}")
        capability = _capability(device)
        if capability is None or capability < FLASH_MIN_CAPABILITY:
            raise ValueError(f"attention backend 'flash' needs a CUDA GPU with compute capability >= 8.0, "
                             f"{device} has {capability}")
    return AttentionChoice(requested, "as requested")


# Backends the benchmark gives a row each (hub kernels are left out: they download at first use;
# "_native_math" materialises the whole attention matrix: > 30 GB per call at the real clip size).
BENCHMARK_BACKENDS = ("native", "_native_cudnn", "_native_efficient", "_native_flash", "flash", "_flash_3", "sage",
                      "xformers", "flex")


def benchmark_backends(device: torch.device | str, dtype: torch.dtype) -> list[tuple[str, str]]:
    """``(backend, reason)`` for each of :data:`BENCHMARK_BACKENDS`: reason "" when it can run here."""
    device = torch.device(device)
    rows = []
    for backend in BENCHMARK_BACKENDS:
        usable, why = diffusers_backend_usable(backend)
        if usable and backend.startswith("_native_") and device.type != "cuda":
            usable, why = False, "needs a CUDA device (a CUDA-only SDPA kernel)"
        if usable and backend == CUDNN:
            usable, why = _cudnn_attention_runs(device, dtype)
        if usable and backend in (FLASH, FLASH_3, "sage", "xformers") and device.type != "cuda":
            usable, why = False, "needs a CUDA device"
        rows.append((backend, "" if usable else why))
    return rows


@contextmanager
def fused_sdpa_only(kernels: tuple[str, ...] = FUSED_SDPA_KERNELS):
    """Inside this context ``scaled_dot_product_attention`` may only use ``kernels`` (names of
    ``torch.nn.attention.SDPBackend``); with no kernel able to run, it raises instead of falling
    back to the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, name) for name in kernels]):
        yield


class _FusedSdpaHook:
    """A forward wrapper installed on the denoiser (``module.forward`` replaced by a bound call that
    enters :func:`fused_sdpa_only`); removed by :func:`remove_fused_sdpa_guard`."""

    def __init__(self, module: torch.nn.Module, kernels: tuple[str, ...]):
        self.kernels = kernels
        self.original_forward = module.forward

    def __call__(self, *args, **kwargs):
        with fused_sdpa_only(self.kernels):
            return self.original_forward(*args, **kwargs)


def install_fused_sdpa_guard(module: torch.nn.Module, kernels: tuple[str, ...] = FUSED_SDPA_KERNELS) -> None:
    """Make every ``module(...)`` call run with SDPA restricted to ``kernels`` (idempotent)."""
    if isinstance(module.forward, _FusedSdpaHook):
        module.forward.kernels = kernels
        return
    module.forward = _FusedSdpaHook(module, kernels)


def remove_fused_sdpa_guard(module: torch.nn.Module) -> None:
    if isinstance(module.forward, _FusedSdpaHook):
        del module.forward  # back to the class's forward


def apply_attention(denoiser, choice: AttentionChoice) -> None:
    """Set ``choice.backend`` on the denoiser's DiT and control branch; install the fused-SDPA guard
    when ``choice.fused_sdpa_only``."""
    if choice.backend != NATIVE:
        denoiser.set_attention_backend(choice.backend)
    if choice.fused_sdpa_only:
        install_fused_sdpa_guard(denoiser)
    else:
        remove_fused_sdpa_guard(denoiser)
