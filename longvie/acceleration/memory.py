"""GPU and host memory estimates that need no GPU (``python -m longvie.benchmark --estimate-memory``).

Two measurements, both at the real shapes and neither allocating real memory:

* **weights**: every model is built on the meta device and its parameters and buffers counted in
  the dtype the loaders give them (bf16, with diffusers' float32 exceptions: time embedder,
  modulation tables, norms; the VAE in its own dtype). FP8 is counted from :mod:`.fp8` itself: the
  layers :func:`~longvie.acceleration.fp8.fp8_target_names` selects, stored as
  :data:`~longvie.acceleration.fp8.FP8_LAYOUT` says (one byte per weight element plus one float32
  scale per output row; the bias and everything else as loaded). Group offload is counted from the
  streamer's own sizing functions (:mod:`.offload`: ``unit_bytes``, ``pack_slabs``, ``slab_sizes``,
  ``root_bytes``), on a denoiser converted by :func:`~longvie.acceleration.fp8.apply_fp8` for FP8.
* **activations**: the code runs for real - same code, same shapes - on fake tensors
  (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and dtypes, no storage) while a
  ``TorchDispatchMode`` (:class:`LiveTensorBytes`) adds up the bytes of every storage an operator
  creates and drops them when the storage dies; its high-water mark is the activation peak.
  Where a GPU kernel allocates less than the code's CPU composite, a stand-in of the kernel runs
  while measuring: ``rms_norm`` (one fused kernel on CUDA: output + a float32 row statistic;
  :func:`cuda_kernels`) and, for compiled modes, FP8's quantisation fused by inductor
  (:func:`fused_fp8_kernels`). FP8 layers are fp8.py's ``FP8Linear`` of each kind (``gemm``: the
  per-token FP8 copy of the input and its scales, then ``torch._scaled_mm``; ``weight-only``: the
  weight dequantised per call). Attention dispatches to SDPA's fused kernel on fake CPU tensors too
  (output + log-sum-exp), as on the GPU.

What is measured, per stage of a clip: umT5 (512 tokens), CLIP, a VAE encode of one 81-frame video
(its pixels on the device included), the **denoising loop** (:func:`denoise_loop_peak`: the
latents, the prompt embeddings and condition latents, one prepared clip per guidance branch, the
step cache's residuals per branch, the guidance arithmetic and the Euler step - two steps, so that
everything a step leaves behind for the next is alive) and a VAE decode with the uint8 conversion.
The loop runs on a denoiser of the real width and token count but 4 main / 3 control blocks
(:func:`loop_architecture`): with no gradients nothing accumulates over blocks, so the peak is that
of the full depth (checked in tests/benchmark/test_memory.py, and by ``--full-depth``).

Per inference mode the GPU peak is, over the stages, the weights resident on the GPU during the stage
(:func:`stage_residency`: which models each offload mode keeps there; umT5 only for the text stage, as
``python -m longvie.sample`` releases it once the run's prompts are cached) + the stage's activation
peak, plus a stated margin (:data:`CUDA_CONTEXT_BYTES` for the CUDA context and cuBLAS/cuDNN
workspaces, and :data:`FRAGMENTATION` of the rest for the caching allocator). Host RAM
(:func:`host_phases`, :func:`host_bytes`) is the peak over loading, placing and sampling, per machine
(under torchrun rank 0 alone loads umT5), plus :data:`HOST_PROCESS_BYTES` per process; the RAM held once
umT5 has left is given beside it. Training rows (every stage config x every
``configs/accelerate/*.yaml``, with and without a latent cache) count DeepSpeed's buffers from its
source (see :func:`training_estimate`).
These are **estimates**: where a GPU is available, ``python -m longvie.benchmark`` prints measured peaks.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from . import offload as _offload
from .fp8 import FP8_LAYOUT, FP8_STORAGE_DTYPE, FP8Linear, apply_fp8, fp8_target_names
from .fp8 import KINDS as FP8_KINDS

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

# FP8 (issue 21, point 3) is counted from longvie.acceleration.fp8 itself: the layers it converts
# (fp8_target_names: every Linear inside the 40 main and 2 x 12 control blocks), each stored as FP8_LAYOUT
# says (one byte per weight + one float32 scale per output row; the bias as loaded), and for the activations
# the real FP8Linear forward of each kind (fp8.KINDS: "gemm" = per-token FP8 activations + torch._scaled_mm,
# "weight-only" = the weight dequantised per call). The estimate takes the larger kind (the GPU decides).

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
    block 1 (control, reading block 0's streams, which a step cache hands over), block 2 (control, streams
    of its own; the step cache still holds block 0's output tokens), block 3 (no control) - every kind of
    block of the full model, at the real width and token count. Without gradients nothing accumulates over
    blocks, so an inference peak measured on it is that of the full depth (tests/benchmark/test_memory.py)."""
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


def fp8_bytes(denoiser: torch.nn.Module) -> tuple[int, int]:
    """(bytes of ``denoiser`` once FP8 is applied, of which scale bytes), from fp8.py's own description:
    every layer of :func:`~longvie.acceleration.fp8.fp8_target_names` stores its weight as
    :data:`~longvie.acceleration.fp8.FP8_LAYOUT` says (one byte per element + one float32 scale per
    output row); its bias and everything else stay as loaded. Works on the meta device."""
    modules = dict(denoiser.named_modules())
    total, scales = tensor_bytes(denoiser), 0
    for name in fp8_target_names(denoiser):
        weight = modules[name].weight
        out_features, in_features = weight.shape
        stored = FP8_LAYOUT.weight_bytes(out_features, in_features)
        scale = out_features * FP8_LAYOUT.scales_per_row * FP8_LAYOUT.scale_dtype.itemsize
        total += stored - weight.numel() * weight.element_size()
        scales += scale
    return total, scales


@dataclass(frozen=True)
class StreamSizes:
    """What group offload (:class:`~longvie.acceleration.offload.BlockStreamer`) allocates for a denoiser, read
    from the streamer's own sizing functions: ``root`` (every tensor outside the streamed units, resident on the
    GPU), ``slot`` (one device slot: the largest unit, main block i + its control blocks, as laid out in a slot;
    there are :data:`~longvie.acceleration.offload.DEFAULT_SLOTS`), ``slabs`` (the pinned host slabs, bytes
    each, power-of-two rounded as the pinned allocator rounds them), ``blocks`` (the unit tensors' bytes) and
    ``pack_extra`` (while the slabs are packed - originals released as they are copied, slabs allocated as the
    packing reaches them - the most the allocated slabs exceed the bytes packed into them)."""

    root: int
    slot: int
    slabs: tuple[int, ...]
    blocks: int
    pack_extra: int

    @property
    def slots(self) -> int:
        return _offload.DEFAULT_SLOTS * self.slot

    @property
    def pinned(self) -> int:
        return sum(self.slabs)


def stream_sizes(denoiser: torch.nn.Module) -> StreamSizes:
    """:class:`StreamSizes` of ``denoiser`` (meta device works)."""
    entries = [_offload._unit_tensors(unit) for unit in _offload.stream_units(denoiser)]
    layout, used = _offload.pack_slabs(entries)
    slabs = _offload.slab_sizes(used, pin=True)
    allocated, packed, extra, blocks = set(), 0, 0, 0
    for unit, placed in zip(entries, layout):
        for (*_, tensor), (slab, _start) in zip(unit, placed):
            if slab not in allocated:  # the streamer allocates a slab when packing reaches it
                allocated.add(slab)
                extra = max(extra, sum(slabs[i] for i in allocated) - packed)
            nbytes = tensor.numel() * tensor.element_size()
            packed += nbytes
            blocks += nbytes
    slot = _offload._align(max(_offload.unit_bytes(denoiser), default=0))
    return StreamSizes(_offload.root_bytes(denoiser), slot, tuple(slabs), blocks, extra)


@dataclass
class WeightBytes:
    """Per-component weight bytes; ``block_*``: one main / control block; ``linear_fp8_denoiser``: DiT +
    control bytes once FP8 is applied (weights 1 byte + row scales); ``stream`` / ``fp8_stream``: what group
    offload allocates (:class:`StreamSizes`) without / with FP8."""

    components: dict[str, int]
    block_main: int
    block_control: int
    denoiser_root: int
    largest_tensor: int
    linear_fp8_denoiser: int
    trainable_control_fp32: int
    fp8_scales: int = 0                 # float32 row-scale bytes included in linear_fp8_denoiser
    fp8_block_main: int = 0             # one main / control block with FP8
    fp8_block_control: int = 0
    fp8_root: int = 0                   # the denoiser outside the blocks with FP8 (unchanged: FP8 is in the blocks)
    stream: StreamSizes | None = None
    fp8_stream: StreamSizes | None = None
    trainable: dict = field(default_factory=dict)  # per training group: (parameters, bytes as loaded, largest)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def denoiser(self) -> int:
        return self.components["dit"] + self.components["control"]

    def denoiser_bytes(self, fp8: bool) -> int:
        return self.linear_fp8_denoiser if fp8 else self.denoiser

    def streamed(self, fp8: bool) -> StreamSizes:
        return self.fp8_stream if fp8 else self.stream


def count_weights(arch: Architecture, models: dict) -> WeightBytes:
    """:class:`WeightBytes` of models built by :func:`build_models` (meta or fake). The FP8 group-offload sizes
    come from a copy of the denoiser converted by fp8.py (:func:`~longvie.acceleration.fp8.apply_fp8`) on the
    meta device."""
    denoiser = models["denoiser"]
    components = {"dit": tensor_bytes(denoiser.transformer), "control": tensor_bytes(denoiser.control),
                  "text_encoder": tensor_bytes(models["text_encoder"]),
                  "image_encoder": tensor_bytes(models["image_encoder"]), "vae": tensor_bytes(models["vae"])}
    main_blocks = list(denoiser.transformer.blocks)
    control_blocks = list(denoiser.control.control_blocks_dense) + list(denoiser.control.control_blocks_sparse)
    fp8_total, fp8_scales = fp8_bytes(denoiser)
    with torch.device("meta"):
        converted = build_models(arch, dtype=_dtype_of(denoiser), parts=("denoiser",))["denoiser"]
    apply_fp8(converted, "weight-only")  # storage is the same for both kinds
    largest = max(p.numel() * p.element_size() for p in denoiser.parameters())
    control_params = sum(p.numel() for p in denoiser.control.parameters())
    trainable = {}
    for group, pattern in TRAINABLE_PATTERNS.items():
        params = [p for n, p in denoiser.named_parameters() if pattern.match(n)]
        trainable[group] = (sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params),
                            max((p.numel() for p in params), default=0))
    stream, fp8_stream = stream_sizes(denoiser), stream_sizes(converted)
    return WeightBytes(components, tensor_bytes(main_blocks[0]), tensor_bytes(control_blocks[0]), stream.root,
                       largest, fp8_total, control_params * 4, fp8_scales=fp8_scales,
                       fp8_block_main=tensor_bytes(converted.transformer.blocks[0]),
                       fp8_block_control=tensor_bytes(converted.control.control_blocks_dense[0]),
                       fp8_root=fp8_stream.root, stream=stream, fp8_stream=fp8_stream, trainable=trainable)


def _dtype_of(denoiser: torch.nn.Module) -> torch.dtype:
    """The dtype the denoiser was built in (its patch embedding's, never one of diffusers' float32 modules)."""
    return denoiser.transformer.patch_embedding.weight.dtype


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


# --- FP8 under torch.compile --------------------------------------------------------------------------
# The FP8 layers are fp8.FP8Linear, run as they are (eager: the per-token quantisation of the "gemm" kind
# holds float32 copies of the activation; "weight-only" dequantises the weight in float32). Inside a
# compiled block inductor fuses that elementwise work: a reduction writes the per-token scales and one kernel
# the FP8 copy of the activation ("gemm"), or one kernel writes the dequantised weight in the compute dtype
# ("weight-only"). While measuring a compiled mode this stand-in allocates exactly those outputs.
def _fused_fp8_forward(self, x):
    if self.kind == "weight-only":
        weight = torch.empty(self.weight.shape, dtype=x.dtype, device=x.device)  # one fused dequantising kernel
        return F.linear(x, weight, self.bias)
    rows = x.reshape(-1, self.in_features)
    x_scale = torch.empty(rows.shape[0], 1, dtype=torch.float32, device=x.device)        # per-token scales
    x_fp8 = torch.empty(rows.shape, dtype=FP8_STORAGE_DTYPE, device=x.device)           # FP8 copy of the input
    out = torch._scaled_mm(x_fp8, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale.view(1, -1),
                           out_dtype=x.dtype)
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], self.out_features)


@contextlib.contextmanager
def fused_fp8_kernels(enabled: bool = True):
    """While measuring a compiled mode: FP8Linear allocates what its fused kernels do (see above)."""
    if not enabled:
        yield
        return
    original = FP8Linear.forward
    FP8Linear.forward = _fused_fp8_forward
    try:
        yield
    finally:
        FP8Linear.forward = original


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
    included. ``fp8``: None, or an FP8 kind (:data:`FP8_KINDS`: the denoiser converted by
    :func:`~longvie.acceleration.fp8.apply_fp8`); ``fused``: under torch.compile (:func:`fused_fp8_kernels`).
    The denoiser has the depth of :func:`loop_architecture` unless ``full_depth``. ``steps``: by default
    one without a step cache (the second guidance branch is prepared while the first's prepared clip is
    alive: every later step repeats that) and two with one (its residuals then live through a step)."""
    loop_arch = arch if full_depth else loop_architecture(arch)
    steps = steps or (2 if step_cache else 1)
    with _fake_mode(), torch.no_grad(), cuda_kernels(cuda), fused_fp8_kernels(fp8 is not None and fused):
        denoiser = build_models(loop_arch, parts=("denoiser",))["denoiser"]
        if fp8 is not None:
            apply_fp8(denoiser, fp8)  # fp8.py's own layers and storage (fake tensors)
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


TEXT_ENCODER_STATES = ("released", "kept", "absent")


def stage_residency(weights: WeightBytes, offload: str, fp8: bool = False,
                    text_encoder: str = "released") -> dict[str, int]:
    """Weight bytes on the GPU during each stage of a run (:data:`STAGES`), per offload mode.

    ``text_encoder`` (:data:`TEXT_ENCODER_STATES`): "released" - ``python -m longvie.sample`` caches the run's
    prompts with umT5 before clip 0 (``LongViePipeline.cache_prompts``), then drops it from GPU and host
    memory, so only the text-encoder stage holds it; "kept" - the app and a Python API caller that does not
    release it; "absent" - a torchrun rank other than 0 (it never loads umT5; no text-encoder stage).

    * none: everything, always (umT5 until it is released).
    * model (diffusers' model CPU offload, sequence text_encoder -> image_encoder -> denoiser -> vae): a
      model's hook offloads only its predecessor in the sequence, so the image encoder stays during the
      VAE encodes and the VAE stays during denoising.
    * group (:class:`~longvie.acceleration.offload.BlockStreamer`): from set-up on, the denoiser's root
      (everything outside the blocks) and the device slots (:data:`~longvie.acceleration.offload.DEFAULT_SLOTS`
      of the largest unit: main block i with its dense and sparse control blocks) stay on the GPU, and the VAE
      is moved there whole; umT5 and CLIP are offloaded whole by diffusers' hooks (their direct children are
      no ModuleList, so its block-level offload makes one group of each), onloaded for their own stage.
    """
    if text_encoder not in TEXT_ENCODER_STATES:
        raise ValueError(f"text_encoder must be one of {TEXT_ENCODER_STATES}, got {text_encoder!r}")
    w = weights.components
    denoiser = weights.denoiser_bytes(fp8)
    umt5_later = w["text_encoder"] if text_encoder == "kept" else 0  # umT5 on the GPU after its own stage
    if offload == "none":
        everything = denoiser + w["image_encoder"] + w["vae"]
        stages = dict.fromkeys(STAGES, everything + umt5_later)
        stages["text_encoder"] = everything + w["text_encoder"]
    elif offload == "model":
        stages = {"text_encoder": w["text_encoder"], "image_encoder": w["image_encoder"],
                  "vae_encode": w["vae"] + w["image_encoder"], "denoise": denoiser + w["vae"], "vae_decode": w["vae"]}
    elif offload == "group":
        streamed = weights.streamed(fp8)
        base = w["vae"] + streamed.root + streamed.slots
        stages = {"text_encoder": base + w["text_encoder"], "image_encoder": base + w["image_encoder"],
                  "vae_encode": base, "denoise": base, "vae_decode": base}
    else:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    if text_encoder == "absent":
        del stages["text_encoder"]
    return stages


@dataclass(frozen=True)
class HostPhases:
    """Host bytes (tensors) of one sampling process at each phase of a run:

    ``loading``: every model read to the host in its loaded dtype (``LongViePipeline.from_pretrained`` loads
    them all before placing them); ``placing``: ``apply_modes`` (FP8 is quantised one layer at a time and
    stored where it lives; group offload packs the blocks into its slabs - root already on the GPU, originals
    released as they are copied, slabs allocated as the packing reaches them); ``sampling``: while clips are
    made, with umT5; ``released``: the same once umT5 has left."""

    loading: int
    placing: int
    sampling: int
    released: int

    @property
    def peak(self) -> int:
        return max(self.loading, self.placing, self.sampling)


def host_phases(weights: WeightBytes, offload: str, fp8: bool = False, text_encoder: bool = True) -> HostPhases:
    """:class:`HostPhases` of one process; ``text_encoder``: it loads umT5 (one process, or rank 0 under
    torchrun: the other ranks never load it).

    none: after placing, nothing stays in host RAM; model: every model waits there (the denoiser in FP8 with
    FP8); group: the pinned slabs (:class:`StreamSizes`) + CLIP and umT5 (the root and the VAE are on the GPU)."""
    w = weights.components
    umt5 = w["text_encoder"] if text_encoder else 0
    loading = weights.total - w["text_encoder"] + umt5
    if offload == "none":
        return HostPhases(loading, loading, 0, 0)
    if offload == "model":
        sampling = loading - weights.denoiser + weights.denoiser_bytes(fp8)
        return HostPhases(loading, loading, sampling, sampling - umt5)
    if offload == "group":
        streamed = weights.streamed(fp8)
        others = w["image_encoder"] + umt5
        placing = others + w["vae"] + streamed.blocks + streamed.pack_extra
        sampling = others + streamed.pinned
        return HostPhases(loading, placing, sampling, sampling - umt5)
    raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")


def host_bytes(weights: WeightBytes, offload: str, fp8: bool = False, ranks: int = 1, released: bool = False) -> int:
    """Host RAM of one machine running ``ranks`` sampling processes on one video, margin included
    (:data:`HOST_PROCESS_BYTES` per process): the peak over the run, or with ``released`` the RAM held
    while sampling once umT5 has left (``python -m longvie.sample`` releases it after caching the run's
    prompts; the app keeps it).

    Under torchrun rank 0 alone loads umT5 (``TEXT_RANK``), and loads first while the other ranks wait at
    a barrier; they then load at once while rank 0 holds its models, umT5 still among them."""
    first = host_phases(weights, offload, fp8, text_encoder=True)
    if ranks == 1:
        tensors = first.released if released else first.peak
    else:
        other = host_phases(weights, offload, fp8, text_encoder=False)
        if released:
            tensors = first.released + (ranks - 1) * other.sampling
        else:
            tensors = max(first.peak, first.sampling + (ranks - 1) * other.peak)
    return ranks * HOST_PROCESS_BYTES + tensors


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
    """GPU peak (margin included) and host RAM of one inference mode as ``python -m longvie.sample`` runs it
    (umT5 released once the run's prompts are cached), row named ``name`` (by default the mode's full name).

    With CFG-parallel (two ranks) the GPU peak is the larger of rank 0 (umT5 for the text stage) and the other
    rank (no umT5), both in ``parts``; host RAM is the machine's. ``parts`` also holds the peaks of a pipeline
    that keeps umT5 (the app, the Python API without ``cache_prompts(..., release_text_encoder=True)``) and
    the host RAM once umT5 has left.

    ``peaks``: the encoder/VAE stage peaks (the tiled VAE's under key "vae_encode_tiled"/"vae_decode_tiled");
    ``loop_peaks``: :func:`denoise_loop_peak` per :func:`loop_variant` key."""
    tiled = "_tiled" if mode.vae_tiling else ""
    activations = {"text_encoder": peaks["text_encoder"], "image_encoder": peaks["image_encoder"],
                   "vae_encode": peaks["vae_encode" + tiled], "vae_decode": peaks["vae_decode" + tiled],
                   "denoise": max(loop_peaks[key] for key in loop_variant(mode))}

    def gpu(text_encoder: str) -> tuple[str, int, dict]:
        resident = stage_residency(weights, mode.offload, mode.fp8, text_encoder)
        per_stage = {stage: resident[stage] + activations[stage] for stage in resident}
        worst = max(per_stage, key=per_stage.get)
        return worst, per_stage[worst], resident

    ranks = 2 if mode.cfg == "parallel" else 1
    worst, rank0, resident = gpu("released")
    other = gpu("absent") if ranks > 1 else None
    kept = gpu("kept")
    gpu_bytes = with_margin(max(rank0, other[1] if other else 0))
    note = (f"peak in {worst}: weights {resident[worst] / GiB:.2f} + activations {activations[worst] / GiB:.2f} GiB"
            + (f" on rank 0 (rank 1: {with_margin(other[1]) / GiB:.1f} GiB)" if other else ""))
    parts = {"stage": worst, "bytes": rank0, "resident": resident, "activations": activations, "mode": mode,
             "ranks": ranks, "gpu_rank0": with_margin(rank0),
             "gpu_other_ranks": with_margin(other[1]) if other else None,
             "gpu_keep_umt5": with_margin(kept[1]), "stage_keep_umt5": kept[0],
             "host_after_release": host_bytes(weights, mode.offload, mode.fp8, ranks, released=True)}
    return ModeEstimate(name or mode.name, gpu_bytes, host_bytes(weights, mode.offload, mode.fp8, ranks), note, parts)


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


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.1f}"


def format_matrix(rows: list[ModeEstimate]) -> list[str]:
    """Every mode, one line per offload x FP8 x compile x cache x VAE tiling, one GPU column per guidance mode."""
    by_key = {}
    for row in rows:
        m = row.parts["mode"]
        by_key.setdefault((m.offload, m.fp8, m.compile, m.step_cache, m.vae_tiling), {})[m.cfg] = row
    lines = ["| offload | fp8 | compile | cache | VAE tiling | GPU peak GiB: CFG sequential | CFG batch | "
             "CFG parallel (rank 0 / rank 1) | host RAM GiB, 1 process (peak / after umT5 release) | "
             "host RAM GiB, CFG parallel 2 ranks (peak / after release) | peak in (sequential) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for (offload, fp8, compiled, cache, tiling), cfgs in by_key.items():
        seq, batch, par = cfgs["sequential"], cfgs["batch"], cfgs["parallel"]
        lines.append(f"| {offload} | {'on' if fp8 else 'off'} | {'on' if compiled else 'off'} | {cache or 'off'} | "
                     f"{'on' if tiling else 'off'} | {_gib(seq.gpu_bytes)} | {_gib(batch.gpu_bytes)} | "
                     f"{_gib(par.parts['gpu_rank0'])} / {_gib(par.parts['gpu_other_ranks'])} | "
                     f"{_gib(seq.host_bytes)} / {_gib(seq.parts['host_after_release'])} | "
                     f"{_gib(par.host_bytes)} / {_gib(par.parts['host_after_release'])} | {seq.parts['stage']} |")
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
             f"FP8 (longvie.acceleration.fp8): denoiser {w.denoiser / GiB:.2f} -> "
             f"{w.linear_fp8_denoiser / GiB:.2f} GiB "
             f"(float32 row scales {w.fp8_scales / GiB:.3f} GiB included)",
             f"group offload: root {w.stream.root / GiB:.2f} GiB and {_offload.DEFAULT_SLOTS} slots of "
             f"{w.stream.slot / GiB:.2f} GiB on the GPU, {len(w.stream.slabs)} pinned host slabs "
             f"{w.stream.pinned / GiB:.2f} GiB (FP8: {w.fp8_stream.slot / GiB:.2f} GiB slots, "
             f"{len(w.fp8_stream.slabs)} slabs {w.fp8_stream.pinned / GiB:.2f} GiB)",
             "activation peaks (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in report.peaks.items()),
             ""]
    first = report.inference[0].parts["mode"] if report.inference else InferenceMode()
    options = [f"guidance {first.cfg}"] + (["compile"] if first.compile else []) + \
        ([f"cache {first.step_cache}"] if first.step_cache else []) + (["VAE tiling"] if first.vae_tiling else [])
    lines += [f"inference modes ({', '.join(options)}; as python -m longvie.sample runs them: umT5 leaves GPU and "
              "host memory once the run's prompts are cached, before clip 0):", "",
              f"| {'inference mode':<16} | GPU peak (GiB) | GPU peak, umT5 kept (GiB) | host RAM peak (GiB) | "
              "host RAM after umT5 release (GiB) | notes |",
              f"|{'-' * 18}|---------------:|---:|---------------:|---:|-------|"]
    for row in report.inference:
        lines.append(f"| {row.mode:<16} | {row.gpu_gib:14.1f} | {_gib(row.parts['gpu_keep_umt5'])} | "
                     f"{row.host_gib:14.1f} | {_gib(row.parts['host_after_release'])} | {row.note} |")
    if report.matrix:
        lines += ["", "every inference mode (FP8: the larger of its two kinds, FP8 GEMMs and weight-only; compile: the "
                  "eager count with the FP8 work fused; CFG parallel: one guidance branch per rank, rank 0 alone "
                  "loads umT5):", ""] + format_matrix(report.matrix)
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
