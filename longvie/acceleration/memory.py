"""GPU and host memory estimates that need no GPU (``python -m longvie.benchmark --estimate-memory``).

Two measurements, both at the real shapes and neither allocating real memory:

* **weights**: every model is built on the meta device and its parameters and buffers counted in
  the dtype the loaders give them (bf16, with diffusers' float32 exceptions: time embedder,
  modulation tables, norms; the VAE in its own dtype). FP8 follows the rule of the per-row FP8
  GEMMs (:data:`FP8_KEEP`): a stored Linear weight is one byte per element plus one float32 scale
  per output row, its bias stays bf16, and the kept modules stay as loaded.
* **activations**: the code runs for real - same code, same shapes - on fake tensors
  (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and dtypes, no storage) while a
  ``TorchDispatchMode`` (:class:`LiveTensorBytes`) adds up the bytes of every storage an operator
  creates and drops them when the storage dies; its high-water mark is the activation peak.
  Two operators allocate less on a GPU than their CPU composite does, so while measuring they run
  as stand-ins of the CUDA kernel (:func:`cuda_kernels`): ``rms_norm`` (one fused kernel on CUDA:
  output + a float32 row statistic) and FP8's ``_scaled_mm``. Attention dispatches to SDPA's fused
  kernel on fake CPU tensors too (output + log-sum-exp), as on the GPU.

What is measured, per stage of a clip: umT5 (512 tokens), CLIP, a VAE encode of one 81-frame video
(its pixels on the device included), the **denoising loop** (:func:`denoise_loop_peak`: the
latents, the prompt embeddings and condition latents, one prepared clip per guidance branch, the
step cache's residuals per branch, the guidance arithmetic and the Euler step - two steps, so that
everything a step leaves behind for the next is alive) and a VAE decode with the uint8 conversion.
The loop runs on a denoiser of the real width and token count but 4 main / 3 control blocks
(:func:`loop_architecture`): with no gradients nothing accumulates over blocks, so the peak is that
of the full depth (checked in tests/benchmark/test_memory.py, and by ``--full-depth``).

Per inference mode the GPU peak is, over the stages, the weights resident on the GPU during the stage
(:func:`stage_residency`: which models each offload mode keeps there) + the stage's activation peak,
plus a stated margin (:data:`CUDA_CONTEXT_BYTES` for the CUDA context and cuBLAS/cuDNN workspaces, and
:data:`FRAGMENTATION` of the rest for the caching allocator). Host RAM adds :data:`HOST_PROCESS_BYTES`
per process. Training rows (every stage config x every ``configs/accelerate/*.yaml``, with and
without a latent cache) count DeepSpeed's buffers from its source (see :func:`training_estimate`).
These are **estimates**: where a GPU is available, ``python -m longvie.benchmark`` prints measured peaks.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import re
import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .fp8 import CONTROL_KEEP as _FP8PY_CONTROL_KEEP
from .fp8 import FP8_STORAGE_DTYPE
from .fp8 import TRANSFORMER_KEEP as _FP8PY_TRANSFORMER_KEEP

GiB = 1024 ** 3
CUDA_CONTEXT_BYTES = int(1.0 * GiB)  # CUDA context (~0.5 GiB on H100/A100 with CUDA 12) + cuBLAS/cuDNN workspaces
FRAGMENTATION = 0.10  # caching-allocator slack on top of weights + activations
# Host RAM of one process besides its tensors (interpreter, torch/CUDA/NCCL libraries, the CUDA context's host
# side, data-loader bookkeeping): an assumption, stated as the host margin, not a measurement.
HOST_PROCESS_BYTES = int(3.0 * GiB)
TEXT_TOKENS = 512  # umT5 context length (SPEC §1)
STAGES = ("text_encoder", "image_encoder", "vae_encode", "denoise", "vae_decode")

# Wan2.1-I2V-14B-480P and LongVie 2 (SPEC §1-2; Wan2.1 config.json of the release).
RELEASE_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                           out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                           cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                           added_kv_proj_dim=5120, rope_max_seq_len=1024)
RELEASE_CONTROL_LAYERS = 12
RELEASE_TEXT_ENCODER = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                            relative_attention_num_buckets=32, relative_attention_max_distance=128,
                            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
RELEASE_IMAGE_ENCODER = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                             image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
RELEASE_VAE: dict = {}  # diffusers' AutoencoderKLWan defaults are Wan2.1's VAE

# FP8 (issue 21, point 3): real FP8 GEMMs with per-row scales. A stored Linear weight (out, in) is
# float8_e4m3fn plus one float32 scale per output row; its bias stays bf16. Kept as loaded (module-name
# patterns, matched with re.search as diffusers' skip_modules_pattern): fp8.py's lists, plus what the
# issue also keeps in bf16 and fp8.py does not list yet (ESTIMATOR_FP8_EXTRA_KEEP: the estimator's own
# table, to reconcile with fp8.py's when the per-row GEMMs land there).
ESTIMATOR_FP8_EXTRA_KEEP = {"transformer": (), "control": ("control_t_mod", "control_text_linear")}
FP8_KEEP = {"transformer": tuple(dict.fromkeys(_FP8PY_TRANSFORMER_KEEP + ESTIMATOR_FP8_EXTRA_KEEP["transformer"])),
            "control": tuple(dict.fromkeys(_FP8PY_CONTROL_KEEP + ESTIMATOR_FP8_EXTRA_KEEP["control"]))}
FP8_SCALE_DTYPE = torch.float32
FP8_MAX = 448.0  # largest float8_e4m3fn value
# How an FP8 Linear computes (the GPU decides: per-row FP8 GEMMs on sm89+, weight-only FP8 elsewhere; the
# estimate takes the larger). "_fused": under torch.compile the quantisation / upcast is one kernel.
FP8_KINDS = ("rowwise", "weight_only")

# Training: the parameter groups a stage trains (= longvie.train.trainer.TRAINABLE_PATTERNS, checked by
# tests/benchmark/test_memory.py; the trainer's layer may not be imported from here).
TRAINABLE_PATTERNS = {
    "control": re.compile(r"^control\."),
    "dit_self_attention": re.compile(r"^transformer\.blocks\.\d+\.attn1\."),
}
# DeepSpeed ZeRO defaults (deepspeed/runtime/zero/config.py): reduce/allgather buckets of 5e8 elements,
# overlap_comm on only for stage 3 (two reduce buffers then). accelerate's YAML configs set neither.
DEEPSPEED_REDUCE_BUCKET = int(5e8)


@dataclass(frozen=True)
class Architecture:
    """Model configs and the clip shape of one preset."""

    name: str
    transformer: dict
    control_layers: int
    text_encoder: dict
    image_encoder: dict
    vae: dict
    num_frames: int = 81
    height: int = 352
    width: int = 640
    history_frames: int = 8
    weight_dtype: torch.dtype = torch.bfloat16
    vae_dtype: torch.dtype = torch.float32

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        return 1 + (self.num_frames - 1) // 4, self.height // 8, self.width // 8

    @property
    def history_latent_frames(self) -> int:
        return 1 + (self.history_frames - 1) // 4 if self.history_frames else 0


def architecture(preset: str = "longvie2_i2v_14b", **overrides) -> Architecture:
    """The architecture of a preset: "tiny" (configs/tiny.yaml) or the release (any other name:
    the release dims above, the clip shape from the preset's YAML)."""
    from ..presets.config import load_config, torch_dtype

    config = load_config(preset)
    sampling = config.get("sampling") or {}
    shape = dict(num_frames=sampling.get("num_frames", 81), height=sampling.get("height", 352),
                 width=sampling.get("width", 640), history_frames=sampling.get("history_frames", 8),
                 weight_dtype=torch_dtype(config.get("dtype", "bfloat16")))
    if config.get("preset") == "tiny":
        model = config["model"]
        transformer = {k: tuple(v) if isinstance(v, list) else v for k, v in model["transformer"].items()}
        arch = Architecture("tiny", transformer, model["control_layers"], model["text_encoder"],
                            model["image_encoder"], model["vae"], **shape)
    else:
        arch = Architecture(config.get("preset", preset), RELEASE_TRANSFORMER, RELEASE_CONTROL_LAYERS,
                            RELEASE_TEXT_ENCODER, RELEASE_IMAGE_ENCODER, RELEASE_VAE, **shape)
    return dataclasses.replace(arch, **overrides)


def loop_architecture(arch: Architecture) -> Architecture:
    """``arch`` with 4 main and 3 control blocks: block 0 (control, its streams still the prepared ones),
    block 1 (control, streams of its own), block 2 (control, while a step cache still holds block 0's
    streams), block 3 (no control) - every kind of block of the full model, at the real width and token
    count. Without gradients nothing accumulates over blocks, so an inference peak measured on it is
    that of the full depth (tests/benchmark/test_memory.py)."""
    layers = min(4, arch.transformer["num_layers"])
    return dataclasses.replace(arch, transformer={**arch.transformer, "num_layers": layers},
                               control_layers=min(3, arch.control_layers, layers))


# ---------------------------------------------------------------------------------------------- models
def build_models(arch: Architecture, dtype: torch.dtype | None = None, vae: bool = True,
                 parts: tuple[str, ...] | None = None) -> dict:
    """The pipeline's models for ``arch`` with parameters in their loaded dtypes, on the current default
    device (call under ``torch.device("meta")`` or a ``FakeTensorMode``). ``parts``: only these of
    denoiser, text_encoder, image_encoder, vae (default: all, the VAE unless ``vae`` is False)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from ..models.control_branch import LongVieControlBranch
    from ..models.denoiser import LongVieDenoiser

    dtype = dtype or arch.weight_dtype
    parts = parts or ("denoiser", "text_encoder", "image_encoder") + (("vae",) if vae else ())
    models = {}
    if "denoiser" in parts:
        transformer = WanTransformer3DModel(**arch.transformer)
        control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, arch.control_layers))
        models["denoiser"] = LongVieDenoiser(transformer, control)
    if "text_encoder" in parts:
        models["text_encoder"] = UMT5EncoderModel(UMT5Config(**arch.text_encoder))
    if "image_encoder" in parts:
        models["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(**arch.image_encoder))
    if "vae" in parts:
        models["vae"] = AutoencoderKLWan(**arch.vae)
    for name, model in models.items():
        cast_as_loaded(model, arch.vae_dtype if name == "vae" else dtype)
        model.eval().requires_grad_(False)
    return models


def _loaded_dtype(owner: torch.nn.Module, name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the loaders give parameter ``name`` of ``owner`` (diffusers / transformers rules)."""
    from ..weights.original_layout import _hf_dtype

    if dtype == torch.float32:
        return dtype
    if hasattr(owner, "config") and hasattr(owner, "_keep_in_fp32_modules_strict"):  # transformers
        return _hf_dtype(owner, name, dtype)
    keep = getattr(owner, "_keep_in_fp32_modules", None) or []
    return torch.float32 if any(part in keep for part in name.split(".")) else dtype


def cast_as_loaded(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters/buffers in place (``.data``, which fake tensors allow) to the loaded dtypes."""
    owners = [m for m in model.modules() if hasattr(m, "_keep_in_fp32_modules")] or [model]
    for owner in owners:
        for name, tensor in list(owner.named_parameters()) + list(owner.named_buffers()):
            if tensor.is_floating_point():
                target = _loaded_dtype(owner, name, dtype)
                if tensor.dtype != target:
                    tensor.data = tensor.data.to(target)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module`` (each shared tensor once)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def fp8_linear_names(denoiser: torch.nn.Module) -> list[str]:
    """Qualified names of the denoiser's Linears whose weight is stored in FP8 (every Linear of the DiT
    and the control branch that no :data:`FP8_KEEP` pattern matches)."""
    names = []
    for part, keep in FP8_KEEP.items():
        for name, module in getattr(denoiser, part).named_modules():
            if isinstance(module, torch.nn.Linear) and not any(re.search(p, name) for p in keep):
                names.append(f"{part}.{name}")
    return names


def fp8_bytes(module: torch.nn.Module, fp8_modules: set) -> tuple[int, int]:
    """(bytes of ``module`` under the FP8 rule, of which scale bytes): a weight of a module in
    ``fp8_modules`` (a set of module ids) is one byte per element + a float32 scale per output row."""
    total = scales = 0
    seen = set()
    for sub in module.modules():
        for tensor in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if id(sub) in fp8_modules and tensor is sub.weight:
                scale = sub.out_features * torch.tensor([], dtype=FP8_SCALE_DTYPE).element_size()
                total += tensor.numel() * torch.tensor([], dtype=FP8_STORAGE_DTYPE).element_size() + scale
                scales += scale
            else:
                total += tensor.numel() * tensor.element_size()
    return total, scales


def pinned_bytes(module: torch.nn.Module) -> int:
    """Pinned host bytes of ``module``'s tensors pinned one by one: torch's caching host allocator rounds
    each allocation up to a power of two."""
    return sum(1 << (max(t.numel() * t.element_size(), 1) - 1).bit_length()
               for t in list(module.parameters()) + list(module.buffers()))


@dataclass
class WeightBytes:
    """Per-component weight bytes; ``block_*``: the largest single block (the unit group offload streams);
    ``linear_fp8_denoiser``: DiT + control bytes under the FP8 rule (weights 1 byte + row scales)."""

    components: dict[str, int]
    block_main: int
    block_control: int
    denoiser_root: int
    largest_tensor: int
    linear_fp8_denoiser: int
    trainable_control_fp32: int
    fp8_scales: int = 0                 # float32 row-scale bytes included in linear_fp8_denoiser
    fp8_block_main: int = 0             # one main / control block under the FP8 rule
    fp8_block_control: int = 0
    fp8_root: int = 0                   # the denoiser outside the blocks under the FP8 rule
    pinned_block: int = 0               # pinned host bytes of the largest block (tensors pinned one by one)
    fp8_pinned_block: int = 0
    trainable: dict = field(default_factory=dict)  # per training group: (parameters, bytes as loaded, largest)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def denoiser(self) -> int:
        return self.components["dit"] + self.components["control"]


def count_weights(arch: Architecture, models: dict) -> WeightBytes:
    """:class:`WeightBytes` of models built by :func:`build_models` (meta or fake)."""
    denoiser = models["denoiser"]
    components = {"dit": tensor_bytes(denoiser.transformer), "control": tensor_bytes(denoiser.control),
                  "text_encoder": tensor_bytes(models["text_encoder"]),
                  "image_encoder": tensor_bytes(models["image_encoder"]), "vae": tensor_bytes(models["vae"])}
    main_blocks = list(denoiser.transformer.blocks)
    control_blocks = list(denoiser.control.control_blocks_dense) + list(denoiser.control.control_blocks_sparse)
    blocks = sum(tensor_bytes(b) for b in main_blocks + control_blocks)
    modules = dict(denoiser.named_modules())
    fp8_modules = {id(modules[name]) for name in fp8_linear_names(denoiser)}
    fp8_total, fp8_scales = fp8_bytes(denoiser, fp8_modules)
    fp8_blocks = sum(fp8_bytes(b, fp8_modules)[0] for b in main_blocks + control_blocks)
    largest = max(p.numel() * p.element_size() for p in denoiser.parameters())
    control_params = sum(p.numel() for p in denoiser.control.parameters())
    trainable = {}
    for group, pattern in TRAINABLE_PATTERNS.items():
        params = [p for n, p in denoiser.named_parameters() if pattern.match(n)]
        trainable[group] = (sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params),
                            max((p.numel() for p in params), default=0))
    return WeightBytes(components, tensor_bytes(main_blocks[0]), tensor_bytes(control_blocks[0]),
                       tensor_bytes(denoiser) - blocks, largest, fp8_total, control_params * 4,
                       fp8_scales=fp8_scales, fp8_block_main=fp8_bytes(main_blocks[0], fp8_modules)[0],
                       fp8_block_control=fp8_bytes(control_blocks[0], fp8_modules)[0],
                       fp8_root=fp8_total - fp8_blocks,
                       pinned_block=max(pinned_bytes(main_blocks[0]), pinned_bytes(control_blocks[0])),
                       fp8_pinned_block=max(_fp8_pinned(main_blocks[0], fp8_modules),
                                            _fp8_pinned(control_blocks[0], fp8_modules)), trainable=trainable)


def _fp8_pinned(block: torch.nn.Module, fp8_modules: set) -> int:
    total = 0
    for sub in block.modules():
        for tensor in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
            nbytes = tensor.numel() * tensor.element_size()
            if id(sub) in fp8_modules and tensor is sub.weight:
                nbytes = tensor.numel()
                total += 1 << (sub.out_features * 4 - 1).bit_length()  # its scale, pinned on its own
            total += 1 << (max(nbytes, 1) - 1).bit_length()
    return total


def weight_bytes(arch: Architecture) -> WeightBytes:
    """Count every model's weights on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        models = build_models(arch)
    return count_weights(arch, models)


# ------------------------------------------------------------------------------------------ activations
class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the storages created by operators while active (views share their base's
    storage and count once); ``peak`` is the high-water mark, ``live`` the bytes alive now."""

    def __init__(self):
        super().__init__()
        self._storages: dict[int, tuple[StorageWeakRef, int]] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Outputs that alias an input (views, in-place ops) allocate nothing: weights viewed by
        # ``t()`` inside ``linear`` must not be counted as new memory.
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self._storages and ref.cdata not in inputs:
                    self._storages[ref.cdata] = (ref, storage.nbytes())
        self.peak = max(self.peak, self.rescan())
        return out

    def rescan(self) -> int:
        """Drop the storages that died and return (and set) the bytes alive now."""
        live = 0
        for key, (ref, nbytes) in list(self._storages.items()):
            if ref.expired():
                del self._storages[key]
            else:
                live += nbytes
        self.live = live
        return live


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def denoiser_inputs(arch: Architecture, dtype: torch.dtype, batch: int = 1, history: bool = True) -> dict:
    """Real-size inputs of one denoiser call (random on the current mode's tensors)."""
    frames, height, width = arch.latent_grid
    text_dim = arch.transformer["text_dim"]
    image_tokens = (arch.image_encoder["image_size"] // arch.image_encoder["patch_size"]) ** 2 + 1
    image_dim = arch.transformer["image_dim"]

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype)

    inputs = dict(latents=randn(batch, 16, frames, height, width), timestep=torch.full((batch,), 500.0, dtype=dtype),
                  text_embeds=randn(batch, TEXT_TOKENS, text_dim), image_embeds=randn(batch, image_tokens, image_dim),
                  image_latents=randn(batch, 20, frames, height, width),
                  dense_latents=randn(batch, 36, frames, height, width),
                  sparse_latents=randn(batch, 36, frames, height, width))
    if history and arch.history_latent_frames:
        inputs["history_latents"] = randn(batch, 16, arch.history_latent_frames, height, width)
    return inputs


def _measure(run) -> int:
    """Activation peak (bytes) of ``run()`` under the tracker (inputs created inside count too)."""
    gc.collect()
    with LiveTensorBytes() as tracker, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")  # rms_norm, fp32 weight
        run()
    return tracker.peak


# --- CUDA kernel stand-ins ------------------------------------------------------------------------------
# torch.rms_norm is one fused kernel on CUDA (aten::_fused_rms_norm: the output + a float32 statistic per
# row) when input and weight share a dtype; on the CPU it decomposes into float32 temporaries of the whole
# input. Fake CPU tensors would count the CPU's; while measuring, this custom op (whose fake kernel
# allocates what the CUDA kernel does) stands in for it.
@torch.library.custom_op("longvie_memory::fused_rms_norm", mutates_args=())
def _fused_rms_norm_op(x: torch.Tensor, normalized_shape: list[int], weight: torch.Tensor | None,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, rstd = torch.ops.aten._fused_rms_norm(x, normalized_shape, weight, eps)
    return out, rstd


@_fused_rms_norm_op.register_fake
def _(x, normalized_shape, weight, eps):
    stats = x.shape[:x.ndim - len(normalized_shape)] + (1,) * len(normalized_shape)
    return x.new_empty(x.shape), x.new_empty(stats, dtype=torch.float32)


@torch.library.custom_op("longvie_memory::fused_rms_norm_backward", mutates_args=())
def _fused_rms_norm_backward_op(grad: torch.Tensor, x: torch.Tensor, normalized_shape: list[int],
                                rstd: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x, grad_w = torch.ops.aten._fused_rms_norm_backward(grad, x, normalized_shape, rstd, weight,
                                                             [True, weight is not None])
    return grad_x, grad_w if grad_w is not None else x.new_zeros(())


@_fused_rms_norm_backward_op.register_fake
def _(grad, x, normalized_shape, rstd, weight):
    return x.new_empty(x.shape), (weight.new_empty(weight.shape) if weight is not None else x.new_empty(()))


def _rms_setup(ctx, inputs, output):
    x, normalized_shape, weight, _ = inputs
    ctx.normalized_shape = normalized_shape
    ctx.has_weight = weight is not None
    ctx.save_for_backward(x, output[1], weight)


def _rms_backward(ctx, grad, _grad_rstd):
    x, rstd, weight = ctx.saved_tensors
    grad_x, grad_w = _fused_rms_norm_backward_op(grad, x, ctx.normalized_shape, rstd, weight)
    return grad_x, None, grad_w if ctx.has_weight else None, None


_fused_rms_norm_op.register_autograd(_rms_backward, setup_context=_rms_setup)


def _rms_norm_as_on_cuda(input, normalized_shape, weight=None, eps=None):
    if weight is not None and weight.dtype != input.dtype:  # CUDA falls back to the composite too
        return _ORIGINAL_RMS_NORM(input, normalized_shape, weight, eps)
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    return _fused_rms_norm_op(input, list(normalized_shape), weight, float(eps))[0]


_ORIGINAL_RMS_NORM = F.rms_norm


@contextlib.contextmanager
def cuda_kernels(enabled: bool = True):
    """While measuring: ops whose CUDA kernel allocates less than their CPU composite run as stand-ins of it."""
    if not enabled:
        yield
        return
    F.rms_norm = _rms_norm_as_on_cuda
    try:
        yield
    finally:
        F.rms_norm = _ORIGINAL_RMS_NORM


# --- FP8 emulation ---------------------------------------------------------------------------------------
def _fp8_rowwise(self, x, fused=False):
    """Per-row FP8 GEMM (torch._scaled_mm): the activation is quantised per row on the fly. Eager
    (torchao-style): |x| -> row amax -> scale, x in float32 / scale -> clamp -> FP8; compiled: one kernel
    writes the FP8 copy and its scales."""
    rows = x.reshape(-1, x.shape[-1])
    if fused:
        quantised = torch.empty(rows.shape, dtype=FP8_STORAGE_DTYPE, device=rows.device)
        scale = torch.empty(rows.shape[0], 1, dtype=torch.float32, device=rows.device)
    else:
        scale = rows.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX
        quantised = (rows.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_STORAGE_DTYPE)
    out = torch._scaled_mm(quantised, self.weight.t(), scale_a=scale, scale_b=self.weight_scale.view(1, -1),
                           bias=self.bias, out_dtype=self.compute_dtype)
    return out.reshape(*x.shape[:-1], -1)


def _fp8_weight_only(self, x, fused=False):
    """Weight-only FP8 (GPUs without FP8 GEMMs): the weight is cast up and scaled for its own call."""
    if fused:
        weight = torch.empty(self.weight.shape, dtype=self.compute_dtype, device=self.weight.device)
    else:
        weight = self.weight.to(self.compute_dtype) * self.weight_scale.to(self.compute_dtype)
    return F.linear(x.to(self.compute_dtype), weight, self.bias)


def emulate_fp8(denoiser: torch.nn.Module, kind: str = "rowwise", fused: bool = False,
                compute_dtype: torch.dtype = torch.bfloat16) -> None:
    """Store the denoiser's FP8 Linears (:func:`fp8_linear_names`) as the FP8 rule does - weight in
    float8_e4m3fn, one float32 scale per output row, bias in ``compute_dtype`` - and make them compute
    as ``kind`` ("rowwise" or "weight_only"), on fake tensors. For the estimate only (the values are
    not the real quantisation)."""
    forward = {"rowwise": _fp8_rowwise, "weight_only": _fp8_weight_only}[kind]
    modules = dict(denoiser.named_modules())
    for name in fp8_linear_names(denoiser):
        linear = modules[name]
        out_features, in_features = linear.weight.shape
        device = linear.weight.device
        linear.weight = torch.nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_STORAGE_DTYPE,
                                                       device=device), requires_grad=False)
        linear.register_buffer("weight_scale", torch.empty(out_features, 1, dtype=FP8_SCALE_DTYPE, device=device))
        if linear.bias is not None:
            linear.bias.data = linear.bias.data.to(compute_dtype)
        linear.compute_dtype = compute_dtype
        linear.forward = types.MethodType(lambda self, x, _f=forward: _f(self, x, fused), linear)


# --- stages ----------------------------------------------------------------------------------------------
def _text_encoder_stage(arch: Architecture, text_encoder) -> None:
    ids = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    (hidden * mask.unsqueeze(-1).to(hidden.dtype)).to(arch.weight_dtype)


def _image_encoder_stage(arch: Architecture, image_encoder) -> None:
    size = arch.image_encoder["image_size"]
    pixels = torch.randn(1, 3, size, size, dtype=arch.weight_dtype)
    image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].to(arch.weight_dtype)


def _latent_stats():
    return torch.zeros(1, 16, 1, 1, 1), torch.ones(1, 16, 1, 1, 1)  # per-channel mean / std (float32)


def _vae_encode_stage(arch: Architecture, vae, frames: int | None = None) -> None:
    """As sampling.conditioning.vae_encode: float32 pixels on the device -> VAE dtype -> posterior mean."""
    video = torch.randn(1, 3, frames or arch.num_frames, arch.height, arch.width, dtype=torch.float32)
    latents = vae.encode(video.to(arch.vae_dtype)).latent_dist.mode().float()
    mean, std = _latent_stats()
    (latents - mean) / std


def _vae_decode_stage(arch: Architecture, vae) -> None:
    """As sampling.conditioning.vae_decode + tensor_to_frames (the uint8 conversion runs on the device)."""
    frames, height, width = arch.latent_grid
    latents = torch.randn(1, 16, frames, height, width, dtype=torch.float32)
    mean, std = _latent_stats()
    video = vae.decode((latents.float() * std + mean).to(arch.vae_dtype)).sample.float()
    ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def activation_peaks(arch: Architecture, stages: tuple[str, ...] = ("denoiser", "text_encoder", "image_encoder",
                                                                     "vae_encode", "vae_decode"),
                     vae_tiling: bool = False, cuda: bool = True) -> dict[str, int]:
    """Activation peak per inference stage at the real shapes, on fake tensors (no_grad).

    ``denoiser``: one call with history, inputs made outside the count (the loop is
    :func:`denoise_loop_peak`); ``vae_encode``: one 81-frame video, its float32 pixels included;
    ``vae_decode``: one clip's latents, with the uint8 conversion. ``cuda``: CUDA kernel stand-ins."""
    peaks = {}
    parts = {"denoiser": "denoiser", "text_encoder": "text_encoder", "image_encoder": "image_encoder",
             "vae_encode": "vae", "vae_decode": "vae"}
    with _fake_mode(), torch.no_grad(), cuda_kernels(cuda):
        models = build_models(arch, parts=tuple(dict.fromkeys(parts[s] for s in stages)))
        if "denoiser" in stages:
            inputs = denoiser_inputs(arch, arch.weight_dtype)
            peaks["denoiser"] = _measure(lambda: models["denoiser"](**inputs))
        if "text_encoder" in stages:
            peaks["text_encoder"] = _measure(lambda: _text_encoder_stage(arch, models["text_encoder"]))
        if "image_encoder" in stages:
            peaks["image_encoder"] = _measure(lambda: _image_encoder_stage(arch, models["image_encoder"]))
        vae = models.get("vae")
        if vae is not None:
            if vae_tiling:
                vae.enable_tiling()
            if "vae_encode" in stages:
                peaks["vae_encode"] = _measure(lambda: _vae_encode_stage(arch, vae))
            if "vae_decode" in stages:
                peaks["vae_decode"] = _measure(lambda: _vae_decode_stage(arch, vae))
    return peaks


CFG_MODES = ("sequential", "batch", "parallel", "none")


def run_denoise_loop(denoiser, arch: Architecture, cfg: str = "sequential", step_cache: str | None = None,
                     steps: int = 2, guidance: float = 5.0) -> None:
    """What ``LongViePipeline.__call__`` keeps on the device from the end of the encoders to the last step
    (sampling.pipeline + sampling.guidance, which this layer may not import; tests check it against them):
    the prompt embeddings, the condition latents, the float32 latents; per guidance branch a ClipCache
    (and a step cache); per step the branches' velocities, the guidance arithmetic and the Euler step.

    ``cfg``: "sequential" (two calls), "batch" (one call on a batch of 2), "parallel" (this rank's branch
    + the all-gathered velocities), "none" (guidance off). ``step_cache``: a step-cache kind or None;
    its first steps are always computed, so no step here depends on tensor values."""
    from ..models.denoiser import ClipCache
    from .step_cache import StepCacheConfig, make_step_cache

    if cfg not in CFG_MODES:
        raise ValueError(f"cfg must be one of {CFG_MODES}, got {cfg!r}")
    dtype, frames, height, width = arch.weight_dtype, *arch.latent_grid
    image_tokens = (arch.image_encoder["image_size"] // arch.image_encoder["patch_size"]) ** 2 + 1

    def randn(*shape, dtype=dtype):
        return torch.randn(*shape, dtype=dtype)

    positive = randn(1, TEXT_TOKENS, arch.transformer["text_dim"])
    negative = randn(1, TEXT_TOKENS, arch.transformer["text_dim"]) if cfg != "none" else None
    conditions = dict(image_embeds=randn(1, image_tokens, arch.transformer["image_dim"]),
                      image_latents=randn(1, 20, frames, height, width),
                      dense_latents=randn(1, 36, frames, height, width),
                      sparse_latents=randn(1, 36, frames, height, width),
                      history_latents=(randn(1, 16, arch.history_latent_frames, height, width)
                                       if arch.history_latent_frames else None))
    latents = randn(1, 16, frames, height, width, dtype=torch.float32)
    cache_config = StepCacheConfig(step_cache, full_first_steps=steps) if step_cache else None

    def branch(text, repeat=1):
        conds = {k: (v if v is None or repeat == 1 else torch.cat([v] * repeat)) for k, v in conditions.items()}
        stack = make_step_cache(cache_config, steps + 1) if cache_config is not None else None
        return dict(text=text, conds=conds, cache=ClipCache(), stack=stack)

    if cfg == "sequential":
        branches = [branch(positive), branch(negative)]
    elif cfg == "batch":
        branches = [branch(torch.cat([positive, negative]), repeat=2)]
    else:  # "parallel": this rank's branch; "none": the only one
        branches = [branch(positive)]

    def call(b, x, t):
        repeat = b["text"].shape[0]
        if repeat > 1:
            x, t = torch.cat([x] * repeat), torch.cat([t] * repeat)
        return denoiser(x, t, b["text"], **b["conds"], clip_cache=b["cache"], block_stack=b["stack"]).float()

    for _ in range(steps):
        timestep = torch.full((1,), 500.0, dtype=dtype)
        x = latents.to(dtype)
        if cfg == "none":
            velocity = call(branches[0], x, timestep)
        else:
            if cfg == "sequential":
                pos, neg = call(branches[0], x, timestep), call(branches[1], x, timestep)
            elif cfg == "batch":
                pos, neg = call(branches[0], x, timestep).chunk(2)
            else:  # all_gather of both ranks' velocities
                mine = call(branches[0], x, timestep)
                pos, neg = mine.clone(), torch.empty_like(mine)
                del mine
            velocity = neg + guidance * (pos - neg)
            del pos, neg
        del x
        # Euler step (scheduler.step, float32); the pipeline's ``velocity`` stays bound through the next step
        latents = latents.float() + (-0.02) * velocity


def denoise_loop_peak(arch: Architecture, cfg: str = "sequential", step_cache: str | None = None,
                      fp8: str | None = None, fused: bool = False, full_depth: bool = False,
                      cuda: bool = True, steps: int | None = None) -> int:
    """Activation peak of the denoising loop (:func:`run_denoise_loop`) on fake tensors, its inputs
    included. ``fp8``: None, or an FP8 compute kind (:data:`FP8_KINDS`; ``fused``: under torch.compile).
    The denoiser has the depth of :func:`loop_architecture` unless ``full_depth``. ``steps``: by default
    one without a step cache (the second guidance branch is prepared while the first's prepared clip is
    alive: every later step repeats that) and two with one (its residuals then live through a step)."""
    loop_arch = arch if full_depth else loop_architecture(arch)
    steps = steps or (2 if step_cache else 1)
    with _fake_mode(), torch.no_grad(), cuda_kernels(cuda):
        denoiser = build_models(loop_arch, parts=("denoiser",))["denoiser"]
        if fp8 is not None:
            emulate_fp8(denoiser, fp8, fused, compute_dtype=arch.weight_dtype)
        return _measure(lambda: run_denoise_loop(denoiser, loop_arch, cfg, step_cache, steps))


def training_activation_peak(arch: Architecture, gradient_checkpointing: bool = True,
                             trainable: str | tuple[str, ...] = "control", history_frames: int | None = None,
                             trainable_dtype: torch.dtype = torch.float32, keep_grads: bool = True,
                             cuda: bool = True) -> int:
    """Activation peak of one real-size training micro-step (forward + backward, batch 1, bf16 autocast,
    the DiT frozen as loaded), on fake tensors.

    ``trainable``: training groups (:data:`TRAINABLE_PATTERNS`), in ``trainable_dtype`` (float32 as the
    plain trainer keeps them; bf16 as DeepSpeed's bf16 engine does). ``history_frames``: history pixel
    frames of the clip (None: the architecture's; 0: none, as in stages 1-2). ``keep_grads``: the
    gradients of the trainable weights stay (plain PyTorch); False drops each as soon as it is complete,
    as ZeRO does (it copies them into its reduce bucket, counted separately)."""
    groups = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    if history_frames is not None:
        arch = dataclasses.replace(arch, history_frames=history_frames)
    with _fake_mode(), cuda_kernels(cuda):
        denoiser = build_models(arch, parts=("denoiser",))["denoiser"]
        params = [p for name, p in denoiser.named_parameters()
                  if any(TRAINABLE_PATTERNS[g].match(name) for g in groups)]
        for p in params:
            p.data = p.data.to(trainable_dtype)
            p.requires_grad_(True)
            if not keep_grads:
                p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
        if gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        denoiser.train()
        inputs = denoiser_inputs(arch, arch.weight_dtype, history=bool(arch.history_frames))

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                velocity = denoiser(**inputs)
            velocity.float().square().mean().backward()

        return _measure(step)


# ---------------------------------------------------------------------------------------------- modes
@dataclass
class ModeEstimate:
    """One row of the table: bytes on the GPU at peak and in host RAM, with how they were composed."""

    mode: str
    gpu_bytes: int
    host_bytes: int
    note: str = ""
    parts: dict = field(default_factory=dict)

    @property
    def gpu_gib(self) -> float:
        return self.gpu_bytes / GiB

    @property
    def host_gib(self) -> float:
        return self.host_bytes / GiB


def with_margin(nbytes: int) -> int:
    """Add the stated margin: :data:`FRAGMENTATION` of the bytes plus :data:`CUDA_CONTEXT_BYTES`."""
    return int(nbytes * (1 + FRAGMENTATION)) + CUDA_CONTEXT_BYTES


OFFLOAD_MODES = ("none", "model", "group")


def stage_residency(weights: WeightBytes, offload: str, fp8: bool = False) -> dict[str, int]:
    """Weight bytes on the GPU during each stage of a clip (:data:`STAGES`), per offload mode.

    * none: everything, always.
    * model (diffusers' model CPU offload, sequence text_encoder -> image_encoder -> denoiser -> vae): a
      model's hook offloads only its predecessor in the sequence, so the image encoder stays during the
      VAE encodes and the VAE stays during denoising.
    * group: the VAE is moved whole to the GPU; the root group of the denoiser (everything outside the
      blocks) is counted resident (it is kept there between calls once the mode keeps it on the GPU),
      with two blocks in flight (the one computing and the one prefetched); umT5 and CLIP are offloaded
      whole (their direct children are no ModuleList, so diffusers' block-level offload makes one group).
    """
    w = weights.components
    denoiser = weights.linear_fp8_denoiser if fp8 else weights.denoiser
    if offload == "none":
        return dict.fromkeys(STAGES, denoiser + w["text_encoder"] + w["image_encoder"] + w["vae"])
    if offload == "model":
        return {"text_encoder": w["text_encoder"], "image_encoder": w["image_encoder"],
                "vae_encode": w["vae"] + w["image_encoder"], "denoise": denoiser + w["vae"], "vae_decode": w["vae"]}
    if offload == "group":
        root = weights.fp8_root if fp8 else weights.denoiser_root
        block = (max(weights.fp8_block_main, weights.fp8_block_control) if fp8
                 else max(weights.block_main, weights.block_control))
        base = w["vae"] + root
        return {"text_encoder": base + w["text_encoder"], "image_encoder": base + w["image_encoder"],
                "vae_encode": base, "denoise": base + 2 * block, "vae_decode": base}
    raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")


def host_bytes(weights: WeightBytes, offload: str, fp8: bool = False, processes: int = 1) -> int:
    """Host RAM of ``processes`` sampling processes on one machine (each holds its own models).

    none: the loaders read every component to the host before moving it (peak while loading);
    model: every model waits in host RAM while another computes; group: every weight stays in host RAM
    (the copy the blocks are streamed from) + the pinned staging of two blocks (pinned tensor by tensor,
    each rounded up to a power of two). FP8 stores the denoiser in FP8 on the host too (model, group);
    under "none" the bf16 weights pass through the host while loading."""
    stored = weights.total - (weights.denoiser - weights.linear_fp8_denoiser if fp8 and offload != "none" else 0)
    if offload == "group":
        stored += 2 * (weights.fp8_pinned_block if fp8 else weights.pinned_block)
    return processes * (stored + HOST_PROCESS_BYTES)


@dataclass(frozen=True)
class InferenceMode:
    """One combination of the sampling options that change memory."""

    offload: str = "none"
    fp8: bool = False
    compile: bool = False
    step_cache: str | None = None
    cfg: str = "sequential"
    vae_tiling: bool = False

    @property
    def placement(self) -> str:
        """"none", "model", "group", "fp8+none", "fp8+model", "fp8+group" (what ``--max-vram`` reads)."""
        return ("fp8+" if self.fp8 else "") + self.offload

    @property
    def name(self) -> str:
        """:attr:`placement` + the other options."""
        parts = [self.placement]
        parts += ["compile"] * self.compile + ([f"cache={self.step_cache}"] if self.step_cache else [])
        parts += [f"cfg-{self.cfg}"] * (self.cfg != "sequential") + ["vae-tiling"] * self.vae_tiling
        return " ".join(parts)


def loop_variant(mode: InferenceMode) -> tuple:
    """The denoising-loop measurements a mode needs: (cfg, step_cache, fp8 kind, fused) for each FP8 kind."""
    if not mode.fp8:
        return ((mode.cfg, mode.step_cache, None, False),)
    return tuple((mode.cfg, mode.step_cache, kind, mode.compile) for kind in FP8_KINDS)


def estimate_mode(weights: WeightBytes, peaks: dict[str, int], loop_peaks: dict[tuple, int],
                  mode: InferenceMode, name: str | None = None) -> ModeEstimate:
    """GPU peak (margin included) and host RAM of one inference mode (row named ``name``, by default
    the mode's full name).

    ``peaks``: the encoder/VAE stage peaks (the tiled VAE's under key "vae_encode_tiled"/"vae_decode_tiled");
    ``loop_peaks``: :func:`denoise_loop_peak` per :func:`loop_variant` key."""
    resident = stage_residency(weights, mode.offload, mode.fp8)
    tiled = "_tiled" if mode.vae_tiling else ""
    activations = {"text_encoder": peaks["text_encoder"], "image_encoder": peaks["image_encoder"],
                   "vae_encode": peaks["vae_encode" + tiled], "vae_decode": peaks["vae_decode" + tiled],
                   "denoise": max(loop_peaks[key] for key in loop_variant(mode))}
    per_stage = {s: resident[s] + activations[s] for s in STAGES}
    worst = max(per_stage, key=per_stage.get)
    processes = 2 if mode.cfg == "parallel" else 1
    note = (f"peak in {worst}: weights {resident[worst] / GiB:.2f} + activations {activations[worst] / GiB:.2f} GiB"
            + (" per rank (2 ranks)" if processes == 2 else ""))
    return ModeEstimate(name or mode.name, with_margin(per_stage[worst]),
                        host_bytes(weights, mode.offload, mode.fp8, processes),
                        note, {"stage": worst, "bytes": per_stage[worst], "resident": resident,
                               "activations": activations, "mode": mode})


def inference_modes(weights: WeightBytes, peaks: dict[str, int], cfg_batch: int = 1,
                    loop_peaks: dict[tuple, int] | None = None, step_cache: str | None = None,
                    compile: bool = False, vae_tiling: bool = False, cfg: str | None = None) -> list[ModeEstimate]:
    """The rows ``--max-vram`` chooses from, fastest exact first: none, model, group, fp8+none, fp8+model,
    fp8+group, for one setting of the other options (``cfg_batch`` 2 = ``cfg="batch"``).

    Without ``loop_peaks`` the loop is taken as ``peaks["denoiser"] x cfg_batch`` (one call's peak) for
    every FP8 kind - a rough stand-in for callers that measured no loop."""
    cfg = cfg or ("batch" if cfg_batch == 2 else "sequential")
    modes = [InferenceMode(offload, fp8, compile, step_cache, cfg, vae_tiling)
             for fp8 in (False, True) for offload in OFFLOAD_MODES]
    if loop_peaks is None:
        loop_peaks = {key: peaks["denoiser"] * cfg_batch for m in modes for key in loop_variant(m)}
    if vae_tiling and "vae_encode_tiled" not in peaks:
        peaks = dict(peaks, vae_encode_tiled=peaks["vae_encode"], vae_decode_tiled=peaks["vae_decode"])
    return [estimate_mode(weights, peaks, loop_peaks, m, m.placement) for m in modes]


def all_inference_modes() -> list[InferenceMode]:
    """Every combination: offload x FP8 x compile x step cache (off, firstblock) x guidance (sequential,
    batch, parallel) x VAE tiling."""
    return [InferenceMode(offload, fp8, compiled, cache, cfg, tiling)
            for offload in OFFLOAD_MODES for fp8 in (False, True) for compiled in (False, True)
            for cache in (None, "firstblock") for tiling in (False, True)
            for cfg in ("sequential", "batch", "parallel")]


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AccelerateSetup:
    """What memory depends on in an accelerate config (configs/accelerate/*.yaml)."""

    name: str
    processes: int = 1
    machines: int = 1
    deepspeed: bool = False
    zero_stage: int = 0
    offload_optimizer: str = "none"
    offload_param: str = "none"
    reduce_bucket_size: int = DEEPSPEED_REDUCE_BUCKET
    overlap_comm: bool | None = None  # None: DeepSpeed's default (on for stage 3 only)

    @property
    def gpus_per_node(self) -> int:
        return max(1, self.processes // max(1, self.machines))


def accelerate_setups(folder: Path | None = None) -> list[AccelerateSetup]:
    """Every ``configs/accelerate/*.yaml`` (or ``folder``), parsed."""
    from ..presets.config import CONFIG_DIR

    return [read_accelerate_setup(path) for path in sorted((folder or CONFIG_DIR / "accelerate").glob("*.yaml"))]


def read_accelerate_setup(path) -> AccelerateSetup:
    import yaml

    path = Path(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    ds = config.get("deepspeed_config") or {}
    deepspeed = config.get("distributed_type") == "DEEPSPEED"
    return AccelerateSetup(path.stem, int(config.get("num_processes", 1)), int(config.get("num_machines", 1)),
                           deepspeed, int(ds.get("zero_stage", 0)) if deepspeed else 0,
                           str(ds.get("offload_optimizer_device") or "none"),
                           str(ds.get("offload_param_device") or "none"),
                           int(float(ds.get("reduce_bucket_size", DEEPSPEED_REDUCE_BUCKET))),
                           ds.get("overlap_comm"))


@dataclass(frozen=True)
class TrainingStage:
    """What memory depends on in a training stage config (configs/train_stage{1,2,3}.yaml)."""

    stage: int
    groups: tuple[str, ...]
    history_frames: int            # the most history pixel frames a clip gets (0: none)
    gradient_checkpointing: bool = True
    weight_dtype: torch.dtype = torch.bfloat16
    vae_dtype: torch.dtype = torch.bfloat16
    gradient_accumulation_steps: int = 2
    depth_p: float = 0.0
    first_frame_p: float = 0.0
    regen_p: float = 0.0
    color_drift_independent_p: float = 0.0
    history_degrade_p: float = 0.0

    @property
    def degrades_frame(self) -> bool:
        """Whether a clip's conditioning frame can be re-encoded (needs CLIP and the VAE even from a cache)."""
        return (self.first_frame_p > 0 or self.color_drift_independent_p > 0
                or (self.history_frames >= 4 and self.history_degrade_p > 0))

    @property
    def regenerates(self) -> bool:
        return self.first_frame_p > 0 and self.regen_p > 0

    def encoders(self, latent_cache: bool) -> tuple[str, ...]:
        """The frozen encoders a training process loads (= longvie.train.runtime.encoders_needed)."""
        if not latent_cache:
            return ("text_encoder", "image_encoder", "vae")
        needed = []
        if self.degrades_frame:
            needed.append("image_encoder")
        if self.degrades_frame or self.depth_p > 0 or self.history_frames >= 4:
            needed.append("vae")
        return tuple(needed)


def training_stage(config: dict) -> TrainingStage:
    """A :class:`TrainingStage` from a training config dict (a stage YAML)."""
    from ..presets.config import torch_dtype

    train, model, degradation = config["train"], config["model"], config["degradation"]
    history = int(degradation.get("history_max_frames", 0)) // 4 * 4
    return TrainingStage(
        int(config["stage"]), tuple(train["trainable"]), history, bool(train.get("gradient_checkpointing", True)),
        torch_dtype(model.get("weight_dtype", "bfloat16")), torch_dtype(model.get("vae_dtype", "bfloat16")),
        int(train.get("gradient_accumulation_steps", 1)), float(degradation.get("depth_p", 0.0)),
        float(degradation.get("first_frame_p", 0.0)), float(degradation.get("regen_p", 0.0)),
        float(degradation.get("color_drift_p", 0.0)) if degradation.get("color_drift_independent") else 0.0,
        float(degradation.get("history_degrade_p", 0.0)))


def training_stages() -> list[TrainingStage]:
    """configs/train_stage{1,2,3}.yaml."""
    import yaml

    from ..presets.config import CONFIG_DIR

    return [training_stage(yaml.safe_load((CONFIG_DIR / f"train_stage{n}.yaml").read_text(encoding="utf-8")))
            for n in (1, 2, 3)]


@dataclass
class TrainingPeaks:
    """Measured activation peaks of a stage's micro-step: ``deepspeed`` with bf16 trainable weights whose
    gradients leave as ZeRO takes them, ``plain`` with float32 trainable weights (autocast's bf16 copies
    of them included), gradients counted apart; ``encode``: the VAE encodes of one clip (bf16 VAE);
    ``regen``: one inference call (re-generation degradation)."""

    deepspeed: int
    plain: int
    encode: int
    regen: int = 0


def _trainable(weights: WeightBytes, groups) -> tuple[int, int, int]:
    """(parameters, bytes as loaded, largest parameter's elements) of the trainable ``groups``."""
    entries = [weights.trainable[g] for g in groups]
    return sum(e[0] for e in entries), sum(e[1] for e in entries), max(e[2] for e in entries)


def training_estimate(weights: WeightBytes, stage: TrainingStage, setup: AccelerateSetup, peaks: TrainingPeaks,
                      latent_cache: bool = False) -> ModeEstimate:
    """GPU peak per rank and host RAM per node of ``stage`` trained with ``setup``.

    GPU: the denoiser (frozen weights as loaded - ``keep_frozen_fp32`` restores DeepSpeed's bf16 cast of
    the float32 modules -, trainable weights in bf16 under DeepSpeed, float32 otherwise), the encoders the
    run loads (:meth:`TrainingStage.encoders`, in their training dtypes) and the largest of: the loading
    moment (trainable weights still float32 on the GPU), the micro-step (activations measured at this
    stage's history length), the encoders' VAE work, a re-generation call.
    * DeepSpeed ZeRO-1/2 with CPU optimizer offload (deepspeed/runtime/zero/stage_1_and_2.py): the GPU
      holds the reduce bucket (reduce_bucket_size bf16 elements, twice with overlap_comm) and a bf16
      staging buffer of the largest trainable parameter (temp_grad_buffer_for_gpu_offload); gradients pass
      through the bucket, so none stays. On the host, per trainable parameter over the node's partitions:
      float32 master (4) + its float32 gradient (4) + Adam's two moments (8) + the bf16 copy-back buffer
      (2) + with gradient accumulation the bf16 accumulated gradients (2).
    * ZeRO-1/2 without offload: those host tensors (but the bf16 buffers) sit on the GPU, partitioned.
    * plain (no DeepSpeed): float32 gradients and AdamW's two moments on the GPU, and at the step one
      float32 temporary per parameter (foreach AdamW's sqrt of the second moment).
    Host per node: each rank's process margin, plus the larger of loading (``runtime.load_in_turns``: one
    rank at a time holds its models on the host) and the optimizer state.
    ZeRO-3 is not estimated (and the trainer refuses ``train.keep_frozen_fp32`` there).
    """
    w = weights.components
    params, loaded, largest = _trainable(weights, stage.groups)
    encoders = stage.encoders(latent_cache)
    encoder_bytes = sum(w[name] for name in encoders)  # ``weights`` counted in the stage's dtypes
    frozen = weights.denoiser - loaded
    loading = frozen + 4 * params + encoder_bytes  # select_trainable: float32 on the GPU before prepare
    node_ranks = setup.gpus_per_node
    notes = []
    if setup.deepspeed and setup.zero_stage >= 3:
        return ModeEstimate(f"stage {stage.stage} | {setup.name}", 0, 0,
                            "ZeRO-3: not estimated (train.keep_frozen_fp32 must be false there)",
                            {"estimated": False})
    activations = max(peaks.deepspeed if setup.deepspeed else peaks.plain,
                      peaks.encode if "vae" in encoders else 0, peaks.regen)
    if setup.deepspeed:
        overlap = setup.overlap_comm if setup.overlap_comm is not None else setup.zero_stage == 3
        buffers = setup.reduce_bucket_size * 2 * (2 if overlap else 1)
        world = setup.processes
        if setup.offload_optimizer == "cpu":
            buffers += largest * 2
            host_state = params * (4 + 4 + 8 + 2 + (2 if stage.gradient_accumulation_steps > 1 else 0))
            host_state = host_state * node_ranks // world
            notes.append(f"optimizer on the host: {host_state / GiB:.1f} GiB per node")
        else:
            buffers += params * (4 + 4 + 8 + 2) // world  # master, its gradient, moments, gradient partition
            host_state = 0
        step = frozen + 2 * params + encoder_bytes + buffers + activations
    else:
        gradients_and_moments = 3 * 4 * params
        step = frozen + 4 * params + encoder_bytes + gradients_and_moments + max(activations, 4 * params)
        host_state = 0
        notes.append("AdamW state on the GPU")
    gpu = max(step, loading)
    load_host = frozen + 4 * params + encoder_bytes  # one rank's host copy while it loads
    host = node_ranks * HOST_PROCESS_BYTES + max(load_host, host_state)
    cache = "latent cache" if latent_cache else "encoders"
    notes.insert(0, f"loads {', '.join(encoders) or 'no encoder'}")
    return ModeEstimate(f"stage {stage.stage} | {setup.name} | {cache}", with_margin(gpu), host, "; ".join(notes),
                        {"estimated": True, "gpu_step": step, "gpu_loading": loading, "activations": activations,
                         "trainable_parameters": params, "host_state": host_state, "host_loading": load_host,
                         "encoders": encoders})


def measure_training_peaks(arch: Architecture, stage: TrainingStage, cuda: bool = True) -> TrainingPeaks:
    """The activation peaks :func:`training_estimate` needs, for one stage (see :class:`TrainingPeaks`)."""
    arch = dataclasses.replace(arch, weight_dtype=stage.weight_dtype, vae_dtype=stage.vae_dtype)
    common = dict(gradient_checkpointing=stage.gradient_checkpointing, trainable=stage.groups,
                  history_frames=stage.history_frames, keep_grads=False, cuda=cuda)
    deepspeed = training_activation_peak(arch, trainable_dtype=torch.bfloat16, **common)
    plain = training_activation_peak(arch, trainable_dtype=torch.float32, **common)
    encode = activation_peaks(arch, stages=("vae_encode",), cuda=cuda)["vae_encode"]
    regen = 0
    if stage.regenerates:
        regen = activation_peaks(dataclasses.replace(arch, history_frames=0), stages=("denoiser",),
                                 cuda=cuda)["denoiser"]
    return TrainingPeaks(deepspeed, plain, encode, regen)


def training_modes(weights: WeightBytes, train_peak, latent_cache: bool = False,
                   stages: list[TrainingStage] | None = None,
                   setups: list[AccelerateSetup] | None = None) -> list[ModeEstimate]:
    """Rows for every stage x accelerate config. ``train_peak``: a :class:`TrainingPeaks` per stage number
    (dict), one for all stages, or an int (old interface: one float32-trainable peak used for everything)."""
    stages = stages or training_stages()
    setups = setups or accelerate_setups()
    rows = []
    for stage in stages:
        peaks = train_peak.get(stage.stage) if isinstance(train_peak, dict) else train_peak
        if isinstance(peaks, int):
            peaks = TrainingPeaks(peaks, peaks, 0)
        for setup in setups:
            rows.append(training_estimate(weights, stage, setup, peaks, latent_cache))
    return rows


# ---------------------------------------------------------------------------------------------- report
@dataclass
class MemoryReport:
    arch: Architecture
    weights: WeightBytes
    peaks: dict[str, int]
    inference: list[ModeEstimate]
    training: list[ModeEstimate] = field(default_factory=list)
    train_peak: dict | None = None
    matrix: list[ModeEstimate] = field(default_factory=list)
    loop_peaks: dict = field(default_factory=dict)


def estimate_memory(preset: str | Architecture = "longvie2_i2v_14b", training: bool = True, vae_tiling: bool = False,
                    cfg_batch: int = 1, step_cache: str | None = None, compile: bool = False,
                    cfg: str | None = None, matrix: bool = False, full_depth: bool = False) -> MemoryReport:
    """Weights and activation peaks of ``preset`` (a preset name/YAML, or an :class:`Architecture` with
    another clip shape): ``inference`` holds the six offload x FP8 rows for the given options (what
    ``--max-vram`` chooses from); with ``matrix`` also every mode (:func:`all_inference_modes`); with
    ``training`` every training stage x accelerate config, with and without a latent cache."""
    arch = preset if isinstance(preset, Architecture) else architecture(preset)
    cfg = cfg or ("batch" if cfg_batch == 2 else "sequential")
    weights = weight_bytes(arch)
    peaks = activation_peaks(arch, stages=("text_encoder", "image_encoder", "vae_encode", "vae_decode"))
    if vae_tiling or matrix:
        tiled = activation_peaks(arch, stages=("vae_encode", "vae_decode"), vae_tiling=True)
        peaks.update(vae_encode_tiled=tiled["vae_encode"], vae_decode_tiled=tiled["vae_decode"])
    main_modes = [InferenceMode(o, f, compile, step_cache, cfg, vae_tiling) for f in (False, True)
                  for o in OFFLOAD_MODES]
    wanted = main_modes + (all_inference_modes() if matrix else [])
    loop_peaks = {}
    for mode in wanted:
        for key in loop_variant(mode):
            if key not in loop_peaks:
                loop_peaks[key] = denoise_loop_peak(arch, *key, full_depth=full_depth)
    peaks["denoise_loop"] = loop_peaks[(cfg, step_cache, None, False)]
    report = MemoryReport(arch, weights, peaks,
                          [estimate_mode(weights, peaks, loop_peaks, m, m.placement) for m in main_modes],
                          loop_peaks=loop_peaks)
    if matrix:
        report.matrix = [estimate_mode(weights, peaks, loop_peaks, m) for m in all_inference_modes()]
    if training:
        report.training, report.train_peak = training_report(arch, weights)
    return report


def training_report(arch: Architecture, weights: WeightBytes | None = None,
                    stages: list[TrainingStage] | None = None, setups: list[AccelerateSetup] | None = None,
                    cuda: bool = True) -> tuple[list[ModeEstimate], dict]:
    """Training rows (every stage x accelerate config, without then with a latent cache) and the measured
    peaks per stage number. Stages of the same shape share their measurements."""
    stages = stages or training_stages()
    measured, peaks, counted = {}, {}, {}
    for stage in stages:
        shape = (stage.groups, stage.history_frames, stage.gradient_checkpointing, stage.weight_dtype,
                 stage.vae_dtype)
        if shape not in measured:
            measured[shape] = measure_training_peaks(arch, dataclasses.replace(stage, first_frame_p=0.0), cuda)
        peaks[stage.stage] = measured[shape]
        if stage.regenerates:
            regen = activation_peaks(dataclasses.replace(arch, history_frames=0, weight_dtype=stage.weight_dtype),
                                     stages=("denoiser",), cuda=cuda)["denoiser"]
            peaks[stage.stage] = dataclasses.replace(measured[shape], regen=regen)
    rows = []
    for cache in (False, True):
        for stage in stages:
            dtypes = (stage.weight_dtype, stage.vae_dtype)
            if dtypes not in counted:  # the stage's loaders' dtypes (the VAE in bf16 in the stage configs)
                same = weights is not None and dtypes == (arch.weight_dtype, arch.vae_dtype)
                counted[dtypes] = weights if same else weight_bytes(
                    dataclasses.replace(arch, weight_dtype=stage.weight_dtype, vae_dtype=stage.vae_dtype))
            rows += training_modes(counted[dtypes], peaks, cache, [stage], setups)
    return rows, peaks


def lightest_mode(rows: list[ModeEstimate], max_vram_gib: float) -> ModeEstimate:
    """The fastest mode whose estimated GPU peak fits ``max_vram_gib`` (rows are ordered fastest
    first: none, model, group, fp8+none, fp8+model, fp8+group). Raises ValueError when none fits."""
    for row in rows:
        if row.gpu_gib <= max_vram_gib:
            return row
    smallest = min(rows, key=lambda r: r.gpu_bytes)
    raise ValueError(f"no mode fits {max_vram_gib:g} GiB: the smallest estimate is {smallest.gpu_gib:.1f} GiB "
                     f"({smallest.mode})")


def margin_lines() -> list[str]:
    return [f"# GPU margin: {FRAGMENTATION:.0%} caching-allocator slack + {CUDA_CONTEXT_BYTES / GiB:.1f} GiB CUDA "
            "context and cuBLAS/cuDNN workspaces;",
            f"# host margin: {HOST_PROCESS_BYTES / GiB:.1f} GiB per process (interpreter, torch/CUDA libraries; "
            "assumed, not measured)."]


def format_matrix(rows: list[ModeEstimate]) -> list[str]:
    """Every mode, one line per offload x FP8 x compile x cache x VAE tiling, one GPU column per guidance mode."""
    by_key = {}
    for row in rows:
        m = row.parts["mode"]
        by_key.setdefault((m.offload, m.fp8, m.compile, m.step_cache, m.vae_tiling), {})[m.cfg] = row
    lines = ["| offload | fp8 | compile | cache | VAE tiling | GPU peak GiB: CFG sequential | CFG batch | "
             "CFG parallel (per rank) | host RAM GiB (1 process) | host RAM GiB (CFG parallel, 2 ranks) | "
             "peak in (sequential) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for (offload, fp8, compiled, cache, tiling), cfgs in by_key.items():
        seq, batch, par = cfgs["sequential"], cfgs["batch"], cfgs["parallel"]
        lines.append(f"| {offload} | {'on' if fp8 else 'off'} | {'on' if compiled else 'off'} | {cache or 'off'} | "
                     f"{'on' if tiling else 'off'} | {seq.gpu_gib:.1f} | {batch.gpu_gib:.1f} | {par.gpu_gib:.1f} | "
                     f"{seq.host_gib:.1f} | {par.host_gib:.1f} | {seq.parts['stage']} |")
    return lines


def format_report(report: MemoryReport) -> str:
    w, arch = report.weights, report.arch
    lines = [f"# Memory estimate for {arch.name}: {arch.num_frames} frames at {arch.height}x{arch.width}, "
             f"{arch.history_frames} history frames, weights {arch.weight_dtype}",
             "# ESTIMATES, not measurements: weights counted on the meta device, activation peaks from real-size "
             "passes on fake tensors,",
             *margin_lines(),
             "weights (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in w.components.items())
             + f"; total {w.total / GiB:.2f}",
             f"FP8 rule: denoiser {w.denoiser / GiB:.2f} -> {w.linear_fp8_denoiser / GiB:.2f} GiB "
             f"(float32 row scales {w.fp8_scales / GiB:.3f} GiB included)",
             "activation peaks (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in report.peaks.items()),
             ""]
    first = report.inference[0].parts["mode"] if report.inference else InferenceMode()
    options = [f"guidance {first.cfg}"] + (["compile"] if first.compile else []) + \
        ([f"cache {first.step_cache}"] if first.step_cache else []) + (["VAE tiling"] if first.vae_tiling else [])
    lines += [f"inference modes ({', '.join(options)}):", "",
              f"| {'inference mode':<16} | GPU peak (GiB) | host RAM (GiB) | notes |",
              f"|{'-' * 18}|---------------:|---------------:|-------|"]
    for row in report.inference:
        lines.append(f"| {row.mode:<16} | {row.gpu_gib:14.1f} | {row.host_gib:14.1f} | {row.note} |")
    if report.matrix:
        lines += ["", "every inference mode (FP8: the larger of per-row FP8 GEMMs and weight-only FP8; compile: "
                  "the eager count, FP8 quantisation fused):", ""] + format_matrix(report.matrix)
    if report.training:
        lines += ["", "training, per stage config and accelerate config (GPU per rank, host RAM per node; batch 1, "
                  "gradient checkpointing; stage 3 with 16 history frames):", "",
                  "| stage | accelerate config | data | GPU peak (GiB) | host RAM per node (GiB) | notes |",
                  "|---|---|---|---:|---:|---|"]
        for row in report.training:
            stage, setup, *data = row.mode.split(" | ")
            if not row.parts.get("estimated"):
                lines.append(f"| {stage} | {setup} | {' '.join(data)} | - | - | {row.note} |")
                continue
            lines.append(f"| {stage} | {setup} | {' '.join(data)} | {row.gpu_gib:.1f} | {row.host_gib:.1f} | "
                         f"{row.note} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="longvie2_i2v_14b", help="preset name or YAML (default: the release)")
    parser.add_argument("--no-training", action="store_true", help="skip the training estimate (faster)")
    parser.add_argument("--no-matrix", action="store_true",
                        help="only the six offload x FP8 rows for the options given (faster)")
    parser.add_argument("--vae-tiling", action="store_true", help="the six rows with VAE tiling on")
    parser.add_argument("--cfg-batch", type=int, default=1, choices=(1, 2),
                        help="2: the six rows with the conditional and unconditional passes as one batch")
    parser.add_argument("--cfg-parallel", action="store_true", help="the six rows with one guidance branch per rank")
    parser.add_argument("--cache", dest="step_cache", default=None, help="the six rows with this step cache")
    parser.add_argument("--compile", action="store_true", help="the six rows with torch.compile")
    parser.add_argument("--full-depth", action="store_true",
                        help="measure the denoising loop with all 40 + 2x12 blocks (slower; same peak)")
    parser.add_argument("--max-vram", type=float, metavar="GiB", help="print the lightest inference mode that fits")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.benchmark --estimate-memory",
                                     description="GPU/host memory estimates per mode, without a GPU")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from ..presets.config import config_path
    from ..presets.schema import model_key_problems

    try:  # a misspelt model size: the file, its line and the closest key, not a TypeError from diffusers
        problems = model_key_problems(config_path(args.config))
    except FileNotFoundError as error:
        problems = [str(error)]
    if problems:
        print("error: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    report = estimate_memory(args.config, training=not args.no_training, vae_tiling=args.vae_tiling,
                             cfg_batch=args.cfg_batch, step_cache=args.step_cache, compile=args.compile,
                             cfg="parallel" if args.cfg_parallel else None, matrix=not args.no_matrix,
                             full_depth=args.full_depth)
    print(format_report(report))
    if args.max_vram is not None:
        try:
            row = lightest_mode(report.inference, args.max_vram)
        except ValueError as error:
            print(f"error: {error}")
            return 2
        print(f"\n--max-vram {args.max_vram:g}: use offload mode '{row.mode}' "
              f"(estimated {row.gpu_gib:.1f} GiB)")
    return 0
