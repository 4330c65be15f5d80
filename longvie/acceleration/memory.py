"""GPU and host memory estimates that need no GPU (``python -m longvie.benchmark --estimate-memory``).

Two measurements, both at the real shapes and neither allocating real memory:

* **weights**: every model is built on the meta device and its parameters and buffers counted in
  the dtype the loaders give them (bf16, with diffusers' float32 exceptions: time embedder,
  modulation tables, norms; the VAE in its own dtype).
* **activations**: the stage runs for real - same code, same shapes - on fake tensors
  (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and dtypes, no storage) while a
  ``TorchDispatchMode`` (:class:`LiveTensorBytes`) adds up the bytes of every storage an operator
  creates and drops them when the storage dies; its high-water mark is the activation peak.
  (torch's CUDA memory statistics do not exist without a GPU, so the tracker counts itself.)
  Attention dispatches to SDPA's fused kernel on fake CPU tensors too, so the count is that of a
  fused kernel (output + log-sum-exp), as on the GPU with the fused-only guard.

Per inference mode the GPU peak is weights resident on the GPU + the largest activation peak of a
stage running there, plus a stated margin (:data:`CUDA_CONTEXT_BYTES` for the CUDA context and
cuBLAS/cuDNN workspaces, and :data:`FRAGMENTATION` of the rest for the caching allocator). These
are **estimates**: where a GPU is available, ``python -m longvie.benchmark`` prints measured peaks.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
from dataclasses import dataclass, field

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GiB = 1024 ** 3
CUDA_CONTEXT_BYTES = int(1.0 * GiB)  # CUDA context (~0.5 GiB on H100/A100 with CUDA 12) + cuBLAS/cuDNN workspaces
FRAGMENTATION = 0.10  # caching-allocator slack on top of weights + activations
TEXT_TOKENS = 512  # umT5 context length (SPEC §1)

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


# ---------------------------------------------------------------------------------------------- models
def build_models(arch: Architecture, dtype: torch.dtype | None = None, vae: bool = True) -> dict:
    """The pipeline's models for ``arch`` with parameters in their loaded dtypes, on the current default
    device (call under ``torch.device("meta")`` or a ``FakeTensorMode``)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from ..models.control_branch import LongVieControlBranch
    from ..models.denoiser import LongVieDenoiser

    dtype = dtype or arch.weight_dtype
    transformer = WanTransformer3DModel(**arch.transformer)
    control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, arch.control_layers))
    models = {"denoiser": LongVieDenoiser(transformer, control),
              "text_encoder": UMT5EncoderModel(UMT5Config(**arch.text_encoder)),
              "image_encoder": CLIPVisionModel(CLIPVisionConfig(**arch.image_encoder))}
    if vae:
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


@dataclass
class WeightBytes:
    """Per-component weight bytes; ``block_*``: the largest single block (the unit group offload streams);
    ``linear_fp8``: DiT + control bytes with every Linear weight in one byte (FP8 storage)."""

    components: dict[str, int]
    block_main: int
    block_control: int
    denoiser_root: int
    largest_tensor: int
    linear_fp8_denoiser: int
    trainable_control_fp32: int

    @property
    def total(self) -> int:
        return sum(self.components.values())


def weight_bytes(arch: Architecture) -> WeightBytes:
    """Count every model's weights on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        models = build_models(arch)
    denoiser = models["denoiser"]
    components = {"dit": tensor_bytes(denoiser.transformer), "control": tensor_bytes(denoiser.control),
                  "text_encoder": tensor_bytes(models["text_encoder"]),
                  "image_encoder": tensor_bytes(models["image_encoder"]), "vae": tensor_bytes(models["vae"])}
    block_main = tensor_bytes(denoiser.transformer.blocks[0])
    block_control = tensor_bytes(denoiser.control.control_blocks_dense[0])
    blocks = tensor_bytes(denoiser.transformer.blocks) + 2 * block_control * arch.control_layers
    fp8 = 0
    for module in denoiser.modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            one_byte = isinstance(module, torch.nn.Linear) and tensor is module.weight
            fp8 += tensor.numel() * (1 if one_byte else tensor.element_size())
    largest = max(p.numel() * p.element_size() for p in denoiser.parameters())
    control_params = sum(p.numel() for p in denoiser.control.parameters())
    return WeightBytes(components, block_main, block_control, tensor_bytes(denoiser) - blocks, largest, fp8,
                       control_params * 4)


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
        live = 0
        for key, (ref, nbytes) in list(self._storages.items()):
            if ref.expired():
                del self._storages[key]
            else:
                live += nbytes
        self.live = live
        self.peak = max(self.peak, live)
        return out


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
    with LiveTensorBytes() as tracker:
        run()
    return tracker.peak


def activation_peaks(arch: Architecture, stages: tuple[str, ...] = ("denoiser", "text_encoder", "image_encoder",
                                                                     "vae_encode", "vae_decode"),
                     vae_tiling: bool = False) -> dict[str, int]:
    """Activation peak per inference stage at the real shapes, on fake tensors (no_grad).

    ``denoiser``: one call with history; ``vae_encode``: one 81-frame control video;
    ``vae_decode``: one clip's latents."""
    peaks = {}
    with _fake_mode(), torch.no_grad():
        models = build_models(arch, vae="vae_encode" in stages or "vae_decode" in stages)
        dtype = arch.weight_dtype
        if "denoiser" in stages:
            inputs = denoiser_inputs(arch, dtype)
            peaks["denoiser"] = _measure(lambda: models["denoiser"](**inputs))
        if "text_encoder" in stages:
            ids = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
            mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
            peaks["text_encoder"] = _measure(lambda: models["text_encoder"](ids, mask))
        if "image_encoder" in stages:
            size = arch.image_encoder["image_size"]
            pixels = torch.randn(1, 3, size, size, dtype=dtype)
            peaks["image_encoder"] = _measure(
                lambda: models["image_encoder"](pixels, output_hidden_states=True))
        vae = models.get("vae")
        if vae is not None:
            if vae_tiling:
                vae.enable_tiling()
            frames, height, width = arch.latent_grid
            if "vae_encode" in stages:
                video = torch.randn(1, 3, arch.num_frames, arch.height, arch.width, dtype=arch.vae_dtype)
                peaks["vae_encode"] = _measure(lambda: vae.encode(video))
            if "vae_decode" in stages:
                latents = torch.randn(1, 16, frames, height, width, dtype=arch.vae_dtype)
                peaks["vae_decode"] = _measure(lambda: vae.decode(latents))
    return peaks


def training_activation_peak(arch: Architecture, gradient_checkpointing: bool = True,
                             trainable: str = "control") -> int:
    """Activation peak of one real-size training micro-step (forward + backward, batch 1, bf16 autocast,
    the control branch trainable in float32, the DiT frozen in bf16), on fake tensors.

    Counts activations and the gradients of the trainable weights (created by backward)."""
    with _fake_mode():
        models = build_models(arch, vae=False)
        denoiser = models["denoiser"]
        if trainable == "control":
            cast_as_loaded(denoiser.control, torch.float32)
            denoiser.control.requires_grad_(True)
        if gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        denoiser.train()
        inputs = denoiser_inputs(arch, arch.weight_dtype)

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


def _pinned(nbytes: int) -> int:
    """Pinned host allocations are rounded up to a power of two by torch's caching host allocator."""
    return 1 << (max(nbytes, 1) - 1).bit_length()


def inference_modes(weights: WeightBytes, peaks: dict[str, int], cfg_batch: int = 1) -> list[ModeEstimate]:
    """GPU and host memory of each inference mode from weights and stage activation peaks.

    ``cfg_batch``: 2 when the conditional and unconditional passes run as one batch (activations x2).
    The denoising loop also holds the latents, embeddings and condition latents (counted in the
    denoiser's activation peak: its inputs are created under the tracker)."""
    w = weights.components
    denoiser_w = w["dit"] + w["control"]
    act = {k: v * (cfg_batch if k == "denoiser" else 1) for k, v in peaks.items()}
    stage_weights = {"denoiser": denoiser_w, "text_encoder": w["text_encoder"], "image_encoder": w["image_encoder"],
                     "vae_encode": w["vae"], "vae_decode": w["vae"]}
    rows = []
    largest_act = max(act.values())
    rows.append(ModeEstimate("none", with_margin(weights.total + largest_act), weights.total,
                             "all models on the GPU; host RAM while loading (all components are read to the "
                             "CPU, then moved)", {"weights": weights.total, "activations": largest_act}))
    per_stage = {k: stage_weights[k] + act[k] for k in act}
    worst = max(per_stage, key=per_stage.get)
    rows.append(ModeEstimate("model", with_margin(per_stage[worst]), weights.total,
                             f"one model on the GPU at a time (peak in {worst}); the others wait in host RAM",
                             {"stage": worst, "bytes": per_stage[worst]}))
    # Group offload: root group + the block computing + the block prefetched (the larger of main/control).
    streamed = weights.denoiser_root + 2 * max(weights.block_main, weights.block_control)
    group_stages = dict(per_stage, denoiser=streamed + act["denoiser"])
    worst = max(group_stages, key=group_stages.get)
    pinned = 2 * _pinned(weights.block_main)  # low_cpu_mem_usage: blocks pinned only while copied
    rows.append(ModeEstimate("group", with_margin(group_stages[worst]), weights.total + pinned,
                             f"block-level streamed offload of the denoiser, encoders offloaded whole "
                             f"(peak in {worst}); host: all weights + ~2 pinned blocks",
                             {"stage": worst, "bytes": group_stages[worst]}))
    fp8_extra = weights.largest_tensor  # layerwise casting upcasts one weight at a time to bf16
    fp8 = dict(per_stage, denoiser=weights.linear_fp8_denoiser + fp8_extra + act["denoiser"])
    worst = max(fp8, key=fp8.get)
    rows.append(ModeEstimate("fp8+model", with_margin(fp8[worst]), weights.total - denoiser_w
                             + weights.linear_fp8_denoiser,
                             f"FP8 storage of the DiT/control Linear weights, bf16 compute, model offload "
                             f"(peak in {worst})", {"stage": worst, "bytes": fp8[worst]}))
    fp8_blocks = streamed * weights.linear_fp8_denoiser // max(denoiser_w, 1)
    fp8_group = dict(per_stage, denoiser=fp8_blocks + fp8_extra + act["denoiser"])
    worst = max(fp8_group, key=fp8_group.get)
    rows.append(ModeEstimate("fp8+group", with_margin(fp8_group[worst]), weights.total - denoiser_w
                             + weights.linear_fp8_denoiser + pinned,
                             f"FP8 storage + block-level streamed offload (peak in {worst})",
                             {"stage": worst, "bytes": fp8_group[worst]}))
    return rows


# Training configurations (configs/accelerate/*.yaml): what lives on the GPU and on the host.
TRAINING_CONFIGS = {
    "single_gpu (ZeRO-2 + CPU optimizer)": dict(gpus=1, deepspeed=True, note="configs/accelerate/single_gpu.yaml"),
    "single_gpu_no_deepspeed": dict(gpus=1, deepspeed=False, note="configs/accelerate/single_gpu_no_deepspeed"
                                    ".yaml: AdamW moments and fp32 weights on the GPU"),
    "8 GPUs (ZeRO-2 + CPU optimizer)": dict(gpus=8, deepspeed=True, note="configs/accelerate/deepspeed_zero2_8gpu"
                                            ".yaml; GPU per rank, host per node"),
}
DEEPSPEED_BUCKETS_BYTES = 2 * int(5e8) * 2  # reduce + all-gather buckets, 5e8 elements each (DeepSpeed default), bf16


def training_modes(weights: WeightBytes, train_peak: int, latent_cache: bool = False) -> list[ModeEstimate]:
    """GPU and host memory of a stage-1 step (control branch trained, DiT frozen) per training config.

    ``train_peak`` is measured with the control branch in float32 (its float32 gradients included);
    activations alone are ``train_peak`` minus those gradients.

    * plain (no DeepSpeed): frozen bf16 DiT + float32 control weights, gradients and two AdamW
      moments + encoders + activations.
    * DeepSpeed ZeRO-2 + CPU optimizer (bf16 mode): the module holds the control branch in bf16 and
      its bf16 gradients (an upper bound: ZeRO-2 frees gradients into buckets as they are reduced)
      + the communication buckets; the float32 master weights, the two moments and a float32
      gradient partition live in host RAM (4 x 4 bytes per trainable parameter per node).
    * Encoders: VAE and CLIP on the GPU; umT5 too unless training from a latent cache.
    * Host RAM: the larger of start-up (one rank's CPU copy of all models at a time,
      ``runtime.load_in_turns``) and the steady state (optimizer state, umT5 when cached on the CPU).
    """
    w = weights.components
    control_fp32 = weights.trainable_control_fp32
    activations = max(train_peak - control_fp32, 0)
    encoders = w["vae"] + w["image_encoder"] + (0 if latent_cache else w["text_encoder"])
    rows = []
    for name, spec in TRAINING_CONFIGS.items():
        if spec["deepspeed"]:
            gpu = w["dit"] + control_fp32 // 2 + control_fp32 // 2 + DEEPSPEED_BUCKETS_BYTES
            steady_host = 4 * control_fp32
        else:
            gpu = w["dit"] + 4 * control_fp32  # weights, gradients, two AdamW moments (float32)
            steady_host = 0
        gpu += encoders + activations
        steady_host += w["text_encoder"] if latent_cache else 0
        host = max(weights.total, steady_host)
        rows.append(ModeEstimate(name, with_margin(gpu), host, spec["note"],
                                 {"activations": activations, "encoders": encoders}))
    return rows


@dataclass
class MemoryReport:
    arch: Architecture
    weights: WeightBytes
    peaks: dict[str, int]
    inference: list[ModeEstimate]
    training: list[ModeEstimate] = field(default_factory=list)
    train_peak: int | None = None


def estimate_memory(preset: str | Architecture = "longvie2_i2v_14b", training: bool = True, vae_tiling: bool = False,
                    cfg_batch: int = 1) -> MemoryReport:
    """Weights and activation peaks of ``preset`` (a preset name/YAML, or an :class:`Architecture` with
    another clip shape), per inference mode and, with ``training``, per training config."""
    arch = preset if isinstance(preset, Architecture) else architecture(preset)
    weights = weight_bytes(arch)
    peaks = activation_peaks(arch, vae_tiling=vae_tiling)
    report = MemoryReport(arch, weights, peaks, inference_modes(weights, peaks, cfg_batch))
    if training:
        report.train_peak = training_activation_peak(arch)
        report.training = training_modes(weights, report.train_peak) + [
            dataclasses.replace(row, mode=row.mode + " + latent cache")
            for row in training_modes(weights, report.train_peak, latent_cache=True)]
    return report


def lightest_mode(rows: list[ModeEstimate], max_vram_gib: float) -> ModeEstimate:
    """The fastest mode whose estimated GPU peak fits ``max_vram_gib`` (rows are ordered fastest
    first: none, model, group, fp8+model, fp8+group). Raises ValueError when none fits."""
    for row in rows:
        if row.gpu_gib <= max_vram_gib:
            return row
    smallest = min(rows, key=lambda r: r.gpu_bytes)
    raise ValueError(f"no mode fits {max_vram_gib:g} GiB: the smallest estimate is {smallest.gpu_gib:.1f} GiB "
                     f"({smallest.mode})")


def format_report(report: MemoryReport) -> str:
    w = report.weights
    lines = [f"# Memory estimate for {report.arch.name}: {report.arch.num_frames} frames at "
             f"{report.arch.height}x{report.arch.width}, weights {report.arch.weight_dtype}",
             "# ESTIMATES, not measurements: weights counted on the meta device, activation peaks from real-size "
             "passes on fake tensors,",
             f"# margin = {FRAGMENTATION:.0%} allocator slack + {CUDA_CONTEXT_BYTES / GiB:.1f} GiB CUDA context "
             "and workspaces.",
             "weights (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in w.components.items())
             + f"; total {w.total / GiB:.2f}",
             "activation peaks (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in report.peaks.items()),
             "",
             f"| {'inference mode':<16} | GPU peak (GiB) | host RAM (GiB) | notes |",
             f"|{'-' * 18}|---------------:|---------------:|-------|"]
    for row in report.inference:
        lines.append(f"| {row.mode:<16} | {row.gpu_gib:14.1f} | {row.host_gib:14.1f} | {row.note} |")
    if report.training:
        activations = report.training[0].parts["activations"]
        lines += ["", f"training step (stage 1: control branch trained, gradient checkpointing, batch 1): "
                  f"activations {activations / GiB:.1f} GiB", "",
                  f"| {'training config':<50} | GPU peak (GiB) | host RAM (GiB) | notes |",
                  f"|{'-' * 52}|---------------:|---------------:|-------|"]
        for row in report.training:
            lines.append(f"| {row.mode:<50} | {row.gpu_gib:14.1f} | {row.host_gib:14.1f} | {row.note} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="longvie2_i2v_14b", help="preset name or YAML (default: the release)")
    parser.add_argument("--no-training", action="store_true", help="skip the training estimate (faster)")
    parser.add_argument("--vae-tiling", action="store_true", help="estimate the VAE with tiling on")
    parser.add_argument("--cfg-batch", type=int, default=1, choices=(1, 2),
                        help="2: conditional and unconditional passes as one batch")
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
                             cfg_batch=args.cfg_batch)
    print(format_report(report))
    if args.max_vram is not None:
        try:
            row = lightest_mode(report.inference, args.max_vram)
        except ValueError as error:
            print(f"error: {error}")
            return 2
        print(f"\n--max-vram {args.max_vram:g}: use offload mode '{row.mode}' (estimated {row.gpu_gib:.1f} GiB)")
    return 0
