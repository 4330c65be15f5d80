"""FP8 weights for the denoiser's repeated blocks, with one float32 scale per output row.

**Which layers.** Every ``nn.Linear`` inside the 40 main and 2 x 12 control ``WanTransformerBlock``s
(self- and cross-attention projections, ``add_k_proj``/``add_v_proj`` of the image branch, the two
FFN layers): 16 of the 19.0 B denoiser parameters at real size. Kept in the compute dtype, because they
are small and sensitive: every norm, the block modulation tables (``scale_shift_table``), the patch
embedding, the condition embedders (text, image, timestep), the output head, LongVie's adapters
(``control_initial_combine_linear_*``, ``control_combine_linears``), ``control_t_mod``,
``control_text_linear`` and every bias. :data:`FP8_LAYOUT` and :func:`fp8_target_names` are the
public description: the memory estimator (``longvie.acceleration.memory``) counts from them, and sizes
group offload on a denoiser converted by :func:`apply_fp8` (tests/acceleration/test_fp8.py compares
its count with a converted model).

**Storage** (:class:`FP8Linear`): ``weight`` float8_e4m3fn (out, in) and ``weight_scale`` float32
(out, 1) with ``W ~= weight * weight_scale``; the scale is amax(|row|) / 448, so every row uses the
full e4m3 range. Unscaled e4m3 rounds N(0, 0.01) weights badly: its smallest normal number is 2^-6,
and 88% of such weights lie below it (subnormal, fewer mantissa bits); per-row scaling brings the
relative error down to that of 3 mantissa bits (tests/acceleration/test_fp8.py measures both).

**Two ways to compute** (``kind``):

* ``"gemm"``: real FP8 matmuls. Each call quantises its input per token (one float32 scale per row
  of the (tokens, in) activation, amax / 448) and runs ``torch._scaled_mm`` with the row scales of
  both operands (cuBLASLt/CUTLASS FP8 GEMM on sm89+/sm90 CUDA), output in the compute dtype, bias
  added after. The recipe of torchao's ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``.
  Chosen where :func:`scaled_mm_support` says the device runs it (a probe GEMM, before loading).
* ``"weight-only"``: FP8 storage only; each call dequantises the weight (``weight * weight_scale``,
  in float32, then the compute dtype) and runs an ordinary matmul. Same memory, no speed-up; works
  on every device (the CPU twin of the GEMM path, and the path for GPUs without row-scaled FP8 GEMMs).

Why not torchao's tensor subclasses (torchao 0.18 is installed where this was written): its
dynamic-activation config asserts CUDA sm89+/MI300/XPU when it quantises, so that path could never
run in the CPU test suite, while ``torch._scaled_mm`` also runs on the CPU (same call, same scales),
so the CPU tests run the GEMM path itself; plain float8 tensors move with the offload code, compile
inside the blocks and show their real dtype at forward. torchao is therefore not a dependency.

**Loading straight into FP8.** :func:`apply_fp8` converts one Linear at a time: its bf16 weight is
moved to ``work_device`` (the GPU: fast quantisation), quantised, and the FP8 result is kept on
``keep_device`` (the GPU without offload, the host with offload); the bf16 weight is released. The
GPU never holds more than the FP8 weights plus one bf16 layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FP8_STORAGE_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_STORAGE_DTYPE).max)  # 448
SCALE_DTYPE = torch.float32
KINDS = ("gemm", "weight-only")
# The ModuleLists whose blocks hold the FP8 layers (attribute paths from the denoiser).
BLOCK_LISTS = ("transformer.blocks", "control.control_blocks_dense", "control.control_blocks_sparse")
# Kept in the compute dtype (for the record and the docs; the rule above decides): outside the blocks,
# and inside them everything that is not an nn.Linear weight.
KEPT_IN_COMPUTE_DTYPE = ("norms", "scale_shift_table", "patch_embedding", "condition_embedder", "proj_out",
                         "control_initial_combine_linear_*", "control_combine_linears", "control_t_mod",
                         "control_text_linear", "biases")


@dataclass(frozen=True)
class FP8Layout:
    """How one FP8 layer of ``out_features x in_features`` is stored (public: the memory estimator reads it).

    weight: ``weight_dtype`` (out, in), 1 byte per element; scale: ``scale_dtype`` (out, 1), one per
    output row (``scales_per_row``); bias: unchanged, in the compute dtype. ``gemm`` additionally
    makes one float32 scale per activation row (token) and an FP8 copy of the activation per call."""

    weight_dtype: torch.dtype = FP8_STORAGE_DTYPE
    scale_dtype: torch.dtype = SCALE_DTYPE
    scales_per_row: int = 1

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        """Bytes of the stored weight and its scales (bias not included)."""
        return (out_features * in_features * self.weight_dtype.itemsize
                + out_features * self.scales_per_row * self.scale_dtype.itemsize)


FP8_LAYOUT = FP8Layout()


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) weight -> (float8_e4m3fn (out, in), float32 scale (out, 1)) with weight ~= q * scale.

    scale = amax(|row|) / 448 (an all-zero row gets scale 1 and stays zero)."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_STORAGE_DTYPE), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale).to(dtype)


class FP8Linear(nn.Module):
    """A Linear with an FP8 weight and per-row float32 scales (see the module docstring for ``kind``).

    Shapes as ``nn.Linear``: input (..., in_features) in the compute dtype -> (..., out_features).
    Parameters are frozen (inference only)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, kind: str = "weight-only",
                 bias_dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"FP8 kind must be one of {KINDS}, got {kind!r}")
        self.in_features, self.out_features, self.kind = in_features, out_features, kind
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_STORAGE_DTYPE, device=device),
                                   requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features, 1, dtype=SCALE_DTYPE, device=device))
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False)
                     if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, kind: str = "weight-only", work_device=None,
                    keep_device=None) -> "FP8Linear":
        """Quantise ``linear`` (its weight is read, not changed): on ``work_device`` (default: where the
        weight is), stored on ``keep_device`` (default: ``work_device``)."""
        work_device = torch.device(work_device) if work_device is not None else linear.weight.device
        keep_device = torch.device(keep_device) if keep_device is not None else work_device
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, kind,
                    bias_dtype=linear.weight.dtype if linear.bias is None else linear.bias.dtype, device="meta")
        q, scale = quantize_rows(linear.weight.to(work_device, non_blocking=True))
        layer.weight = nn.Parameter(q.to(keep_device), requires_grad=False)
        layer.weight_scale = scale.to(keep_device)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(keep_device, copy=True), requires_grad=False)
        return layer

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight.to(torch.float32) * self.weight_scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "weight-only":
            return F.linear(x, self.dequantized_weight(x.dtype), self.bias)
        # gemm: per-token FP8 activation (amax / 448), FP8 x FP8 with both row scales, output in x's dtype
        rows = x.reshape(-1, self.in_features)                                      # (M, in)
        x_scale = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX  # (M, 1)
        x_fp8 = (rows.float() / x_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_STORAGE_DTYPE)
        out = torch._scaled_mm(x_fp8, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale.view(1, -1),
                               out_dtype=x.dtype, use_fast_accum=x.is_cuda)         # (M, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"kind={self.kind!r}, weight=float8_e4m3fn, scale=float32 per row")


def _block_lists(denoiser) -> list[tuple[str, nn.ModuleList]]:
    lists = []
    for path in BLOCK_LISTS:
        module = denoiser
        for part in path.split("."):
            module = getattr(module, part)
        lists.append((path, module))
    return lists


def fp8_target_names(denoiser) -> list[str]:
    """Names (from the denoiser) of the layers that FP8 converts (or has converted): every ``nn.Linear``
    / :class:`FP8Linear` inside the blocks of :data:`BLOCK_LISTS`. Works on the meta device."""
    names = []
    for path, blocks in _block_lists(denoiser):
        for index, block in enumerate(blocks):
            names += [f"{path}.{index}.{name}" for name, m in block.named_modules() if isinstance(m, (nn.Linear, FP8Linear))]
    return names


def summarize_names(names: list[str]) -> dict[str, dict]:
    """``["transformer.blocks.0.attn1.to_q", ...]`` -> ``{"transformer.blocks.*": {"layers": n, "names":
    ["attn1.to_q", ...]}}`` (compact, for the run manifest)."""
    summary: dict[str, dict] = {}
    for name in names:
        for path in BLOCK_LISTS:
            if name.startswith(path + "."):
                _, _, rest = name[len(path) + 1:].partition(".")
                entry = summary.setdefault(f"{path}.*", {"layers": 0, "names": []})
                entry["layers"] += 1
                if rest not in entry["names"]:
                    entry["names"].append(rest)
    return summary


@torch.no_grad()
def apply_fp8(denoiser, kind: str = "weight-only", work_device=None, keep_device=None) -> list[str]:
    """Replace every target Linear of ``denoiser`` (see :func:`fp8_target_names`) by an :class:`FP8Linear`
    in place, one layer at a time (quantised on ``work_device``, stored on ``keep_device``; see the module
    docstring). Returns the converted layers' names. Apply it before offloading and compiling
    (:func:`longvie.acceleration.modes.apply_modes` keeps that order)."""
    if kind not in KINDS:
        raise ValueError(f"FP8 kind must be one of {KINDS}, got {kind!r}")
    converted = []
    for path, blocks in _block_lists(denoiser):
        for index, block in enumerate(blocks):
            for name, module in list(block.named_modules()):
                if type(module) is not nn.Linear:
                    continue
                parent_name, _, child = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                parent._modules[child] = FP8Linear.from_linear(module, kind, work_device, keep_device)
                converted.append(f"{path}.{index}.{name}")
    return converted


def apply_fp8_storage(denoiser, compute_dtype: torch.dtype | None = None, storage_dtype: torch.dtype = FP8_STORAGE_DTYPE,
                      kind: str = "weight-only") -> list[str]:
    """FP8 storage of the block Linears (kept for callers of the earlier API; ``compute_dtype`` is the
    input's dtype at forward and need not be given). See :func:`apply_fp8`."""
    if storage_dtype != FP8_STORAGE_DTYPE:
        raise ValueError(f"only {FP8_STORAGE_DTYPE} storage is supported, got {storage_dtype}")
    return apply_fp8(denoiser, kind)


def scaled_mm_support(device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Whether ``torch._scaled_mm`` with per-row scales runs on ``device`` with output ``dtype``: a 32x32 FP8
    GEMM is tried there (milliseconds, before any model loads). Returns (ok, reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return False, f"FP8 GEMMs need compute capability >= 8.9 (Ada/Hopper), this GPU is sm{major}{minor}"
        if dtype != torch.bfloat16:
            return False, f"row-scaled FP8 GEMMs on CUDA give bfloat16 output, the model computes in {dtype}"
    try:
        a = torch.ones(32, 32, device=device).to(FP8_STORAGE_DTYPE)
        scale = torch.ones(32, 1, device=device)
        out = torch._scaled_mm(a, a.t(), scale_a=scale, scale_b=scale.view(1, -1), out_dtype=dtype)
        if not bool(torch.isfinite(out).all()) or float(out[0, 0]) != 32.0:
            return False, "torch._scaled_mm gave a wrong result in the probe"
    except (RuntimeError, NotImplementedError, TypeError) as error:
        return False, f"torch._scaled_mm with per-row scales fails here ({str(error).splitlines()[0]})"
    return True, ""


def stored_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers as stored (FP8 tensors count one byte per element)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
