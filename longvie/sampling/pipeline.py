"""LongVie 2 single-clip pipeline: first image + prompt + depth/track videos (+ history) -> one clip.

SPEC §4. Typical use::

    pipe = LongViePipeline.from_pretrained("models/Wan2.1-I2V-14B-480P-Diffusers", "models/LongVie2",
                                           torch_dtype=torch.bfloat16, device="cuda", offload="model")
    frames, noise = pipe(image, prompt, dense_video, sparse_video)                  # clip 1
    frames, _ = pipe(frames[-1], prompt2, dense2, sparse2, history=frames[-8:], noise=noise)  # clip 2
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, NamedTuple

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging

from ..acceleration.devices import draw_noise
from ..acceleration.offload import MODES as OFFLOAD_MODE_NAMES
from ..media.video_io import FRAME_FORMS, fit_frames, load_image, to_frame_array
from ..models.denoiser import LongVieDenoiser
from .conditioning import (
    clip_pixel_values,
    control_condition,
    encode_image,
    encode_prompt,
    frames_to_tensor,
    image_condition,
    tensor_to_frames,
    vae_decode,
    vae_encode,
)
from .distributed import PromptCache
from .guidance import GuidedVelocity
from .scheduling import make_sampling_scheduler

logger = logging.get_logger(__name__)

# Wan2.1's standard negative prompt (from the Wan2.1 release; upstream LongVie uses it verbatim).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Unified noise (SPEC §4): a later clip's first latent frame is (1-σ)·z_hist[-1] + σ·ε[0].
UNIFIED_NOISE_SIGMA = 0.925926
OFFLOAD_MODES = OFFLOAD_MODE_NAMES  # "none" | "model" | "group" (see longvie.acceleration.offload)


class ClipOutput(NamedTuple):
    """``frames``: uint8 (T, H, W, 3) (a list of them for a batch); ``noise``: the initial noise
    (B, 16, F, H/8, W/8), float32 on CPU, to pass to the next clip."""

    frames: np.ndarray | list
    noise: torch.Tensor


def _is_frame(x) -> bool:
    """One image: a PIL image, or an (H, W) / (H, W, C) array (C = 1, 3 or 4)."""
    if isinstance(x, PIL.Image.Image):
        return True
    return isinstance(x, np.ndarray) and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)))


def _as_video_batch(video, name: str) -> list[np.ndarray]:
    """A video or a batch of them -> list of uint8 (T, H, W, 3) arrays.

    A video is a (T, H, W, 3) or grayscale (T, H, W) array (uint8, or float in [0, 1]) or a list of
    frames (PIL images / (H, W, 3) / (H, W) arrays); a batch is a (B, T, H, W, 3) array or a list
    of videos. Anything else raises a ValueError naming ``name`` and the accepted forms.
    """
    if video is None:
        raise ValueError(f"{name} is required: {FRAME_FORMS}")
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim == 5:
            return [to_frame_array(v, f"{name}[{i}]") for i, v in enumerate(video)]
        return [to_frame_array(video, name)]
    if isinstance(video, (str, bytes)) or not hasattr(video, "__iter__"):
        raise ValueError(f"{name}: got {type(video).__name__}; give {FRAME_FORMS}")
    video = list(video)
    if not video:
        raise ValueError(f"{name} is empty: it needs at least 1 frame ({FRAME_FORMS})")
    if _is_frame(video[0]):
        return [to_frame_array(video, name)]
    return [to_frame_array(v, f"{name}[{i}]") for i, v in enumerate(video)]


def _as_image_batch(image) -> list[np.ndarray]:
    """The first frame(s) -> list of uint8 (H, W, 3) arrays (PIL images or (H, W[, C]) arrays,
    uint8 or float in [0, 1]; a (B, H, W, 3) array or a list of images for a batch)."""
    if image is None:
        raise ValueError("image is required: the clip's first frame (PIL image, or (H, W, 3) / (H, W) array: "
                         "uint8, or float in [0, 1])")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return [to_frame_array(image, "image")[i] for i in range(len(image))]
    if _is_frame(image):
        return [np.asarray(load_image(image, "image"))]
    if isinstance(image, (str, bytes)) or not hasattr(image, "__iter__"):
        raise ValueError(f"image: got {type(image).__name__}; give a PIL image or an (H, W, 3) / (H, W) array "
                         "(a path: load it with longvie.media.video_io.load_image)")
    images = list(image)
    if not images:
        raise ValueError("image is empty: give one first frame (or a list of them for a batch)")
    return [to_frame_array([im], f"image[{i}]")[0] for i, im in enumerate(images)]


def check_sampling_arguments(num_inference_steps, guidance_scale, shift, seed, generator) -> None:
    """Finite guidance/shift and a seed torch can use (an integer in [0, 2^64))."""
    import math

    for name, value in (("guidance_scale", guidance_scale), ("shift", shift)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if shift <= 0:
        raise ValueError(f"shift must be positive (5.0 for the released model), got {shift}")
    if generator is None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                              or not 0 <= int(seed) < 2**64):
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")


def _as_prompt_batch(prompt, name: str) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(isinstance(p, str) for p in prompt):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {type(prompt).__name__}")
    return list(prompt)


def validate_clip_settings(num_frames: int, height: int, width: int, num_inference_steps: int) -> None:
    """Shape rules of Wan2.1-I2V (VAE x4 in time, x8 in space, DiT patch 2)."""
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1 (e.g. 81, 49, 9, 5), got {num_frames}")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % 16:
            raise ValueError(f"{name} must be a positive multiple of 16 (e.g. 352 x 640), got {value}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}")


class LongViePipeline(DiffusionPipeline):
    """Wan2.1-I2V + LongVie 2 control branch, one 4k+1-frame clip per call."""

    model_cpu_offload_seq = "text_encoder->image_encoder->denoiser->vae"

    def __init__(self, tokenizer, text_encoder, image_encoder, vae, denoiser: LongVieDenoiser, image_processor=None):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder,
                              vae=vae, denoiser=denoiser, image_processor=image_processor)
        self._run_device = None
        self.attention_choice = None
        self.offload_mode = None
        self.vae_tiling = False
        self._parallel = None      # acceleration.parallel.ParallelState, set by enable_parallelism
        self.default_step_cache = None  # StepCacheConfig used when a call passes none (set by apply_modes)
        self.mode_record = None    # acceleration.modes.ModeRecord: what apply_modes applied
        self.stage_timer = None    # optional f(stage name) -> context manager, set by the benchmark
        self.prompt_cache = PromptCache()   # umT5 embeddings by prompt (cache_prompts)
        self.text_encoder_loader = None     # loads umT5 again after release_text_encoder (set by from_pretrained)

    def _stage(self, name: str):
        """Context manager around one stage of __call__ (timed by the benchmark; a no-op otherwise)."""
        return self.stage_timer(name) if self.stage_timer is not None else contextlib.nullcontext()

    def enable_parallelism(self, sequence_degree: int = 1, cfg_degree: int = 1) -> None:
        """Spread each denoiser call over the ranks of ``torch.distributed`` (started by torchrun):
        ``cfg_degree`` 2 puts the guidance branches on different ranks, ``sequence_degree`` N splits the
        token streams over N ranks (Ulysses attention; any N). sequence_degree * cfg_degree = world size.
        Every rank must then call the pipeline with the same arguments (``python -m longvie.sample`` has rank 0
        send them: :mod:`longvie.longvideo.ranks`); the encoders and a tiled VAE decode are split over the
        ranks (:mod:`longvie.sampling.distributed`). See :mod:`longvie.acceleration.parallel`."""
        from ..acceleration.parallel import ParallelConfig, apply_parallelism

        self._parallel = apply_parallelism(self.denoiser, ParallelConfig(sequence_degree, cfg_degree))

    def cache_prompts(self, prompts, release_text_encoder: bool = False) -> int:
        """Encode ``prompts`` (a string or a list) once into ``self.prompt_cache``, so later clips with these
        prompts run no umT5; under torchrun rank 0 encodes and broadcasts. ``release_text_encoder``: then drop
        umT5 from GPU and host memory (a prompt not cached later loads it again for that call). Returns the
        number of prompts encoded. See :mod:`longvie.sampling.distributed`."""
        from .distributed import cache_prompts
        from .distributed import release_text_encoder as release

        count = cache_prompts(self, _as_prompt_batch(prompts, "prompts"))
        if release_text_encoder:
            release(self)
        return count

    def release_text_encoder(self) -> bool:
        """Drop umT5 from GPU and host memory (cached prompts keep working). Returns whether one was held."""
        from .distributed import release_text_encoder

        return release_text_encoder(self)
    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, base_dir, longvie_dir, torch_dtype: torch.dtype = torch.bfloat16,
                        device: str | torch.device | None = None, offload: str = "none",
                        vae_dtype: torch.dtype = torch.float32,
                        attention_backend: str = "auto", vae_tiling: bool = False, load_text_encoder: bool = True,
                        sequence_degree: int = 1, cfg_degree: int = 1, loras=None, modes=None) -> "LongViePipeline":
        """Load the base model (either Wan layout) and the LongVie 2 weights.

        Args:
            base_dir: Wan2.1-I2V-14B-480P folder, diffusers layout ("...-Diffusers") or original.
            longvie_dir: folder with ``control.safetensors`` and optionally ``dit.safetensors``.
            torch_dtype: dtype of the DiT, control branch, umT5 and CLIP (bf16 on GPU).
            device: where to run; defaults to the GPU when available. "cuda" means
                ``cuda:<LOCAL_RANK>`` under torchrun, else the current CUDA device.
            offload: "none" (all on the device), "model" (diffusers model CPU offload: one model
                on the GPU at a time) or "group" (block-level streamed offload of the denoiser
                with prefetch, for 24-48 GB cards). GPU and host memory per mode:
                ``python -m longvie.benchmark --estimate-memory``.
            vae_dtype: the VAE is small and precision-sensitive; float32 by default.
            attention_backend: "auto" (on sm90 GPUs FlashAttention-3 or cuDNN attention, elsewhere
                flash-attn 2 on sm80+ GPUs, each where diffusers reports it usable and with
                half-precision weights; PyTorch SDPA otherwise), or any diffusers
                backend name ("native", "flash", "_flash_3", "sage", ...). The choice and the
                reason are in ``pipe.attention_choice``.
            vae_tiling: tiled VAE encode/decode (lower peak memory, slightly different pixels);
                independent of ``offload``.
            load_text_encoder: False leaves umT5 on disk (it is loaded for a prompt not in
                ``prompt_cache``); under torchrun only rank 0 needs it.
            sequence_degree, cfg_degree: parallelism over the torchrun ranks (:meth:`enable_parallelism`);
                a combination that cannot run is refused before anything loads.
            loras: LoRAs fused into the denoiser before offloading (and before FP8): paths, ``"PATH:SCALE"``
                strings or :class:`~longvie.weights.lora.LoraSpec`; records in ``pipe.loras``. Checked from
                the files' headers before the base model loads (:mod:`longvie.weights.lora`).
            modes: an ``acceleration.modes.ModeRequest`` (offload, FP8, compile, step cache, attention,
                LoRAs, ...); when given, it replaces ``offload`` and ``attention_backend``. Validated
                against the device before anything loads (``ModeError`` names what cannot run) and
                applied in one order by ``acceleration.modes.apply_modes``; ``pipe.mode_record`` says
                what ran.
        """
        from ..acceleration.devices import resolve_device
        from ..acceleration.modes import DeviceInfo, ModeRequest, apply_modes, plan_modes
        from ..weights.loading import load_base_components, load_denoiser, longvie_weight_paths

        device = resolve_device(device)
        request = modes if modes is not None else ModeRequest(offload=offload, attention=attention_backend)
        if loras:  # fused first by apply_modes (before FP8 and offload)
            from ..weights.lora import _as_specs

            request = dataclasses.replace(request, loras=tuple(request.loras) + tuple(_as_specs(loras)))
        request = dataclasses.replace(request, sequence_parallel=max(request.sequence_parallel, sequence_degree))
        # Checked before loading: a mode or a parallel layout that cannot run fails in seconds, not after the 14B load.
        plan = plan_modes(request, DeviceInfo.probe(device, torch_dtype))
        if sequence_degree * cfg_degree > 1:
            from ..acceleration.parallel import init_distributed, parallel_problems

            _, world = init_distributed(device)  # joins torchrun's group; (0, 1) outside torchrun
            problems = parallel_problems(sequence_degree, cfg_degree, world_size=world,
                                         attention_backend=plan.attention.backend)
            if problems:
                raise ValueError("; ".join(problems))
        control_path, dit_path = longvie_weight_paths(longvie_dir)
        if plan.loras:  # a LoRA that cannot fit fails in seconds, before the 14B load
            from ..weights.lora import LoraError, check_lora_files, lora_model_config

            problems = check_lora_files(list(plan.loras), lora_model_config(base_dir, control_path))
            if problems:
                raise LoraError("cannot apply the LoRA(s):\n" + "\n".join(f"  - {p}" for p in problems))
        components = load_base_components(base_dir, torch_dtype=torch_dtype, vae_dtype=vae_dtype,
                                          text_encoder=load_text_encoder)
        denoiser = load_denoiser(base_dir, control_path, dit_path, torch_dtype=torch_dtype)
        pipe = cls(denoiser=denoiser, **components)
        from .distributed import load_text_encoder as load_umt5

        pipe.text_encoder_loader = lambda: load_umt5(base_dir, torch_dtype)
        apply_modes(pipe, plan)
        logger.info(plan.describe())
        pipe.set_vae_tiling(vae_tiling)
        if sequence_degree * cfg_degree > 1:
            pipe.enable_parallelism(sequence_degree, cfg_degree)
        return pipe

    @property
    def loras(self) -> list[dict]:
        """The LoRAs applied to the denoiser: path, sha256, scale, matched_keys, targets, format, fused."""
        from ..weights.lora import loaded_loras

        return loaded_loras(self.denoiser)

    def load_loras(self, loras, fuse: bool = True) -> list[dict]:
        """Apply LoRAs to the loaded denoiser (see :func:`longvie.weights.lora.load_loras`): fused into the
        weights by default. Before FP8 storage and group offload (refused after them); with ``offload="model"``
        or none."""
        from ..weights.lora import load_loras

        return load_loras(self.denoiser, loras, fuse=fuse)

    def unfuse_loras(self) -> list[dict]:
        """Remove the LoRAs again (see :func:`longvie.weights.lora.unfuse_loras`); returns their records."""
        from ..weights.lora import unfuse_loras

        return unfuse_loras(self.denoiser)

    def set_attention(self, choice) -> None:
        """Apply an ``acceleration.attention.AttentionChoice`` to the denoiser and log it."""
        from ..acceleration.attention import apply_attention

        apply_attention(self.denoiser, choice)
        self.attention_choice = choice
        logger.info(choice.describe())

    def set_vae_tiling(self, enabled: bool) -> None:
        """Tiled VAE encode/decode on or off (``self.vae_tiling`` records it)."""
        if enabled:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        self.vae_tiling = bool(enabled)

    def enable_offload(self, mode: str, device: str | torch.device | None = "cuda", stream=None) -> None:
        """Place the models: "none", "model" or "group" (see :meth:`from_pretrained` and
        ``longvie.acceleration.offload``). "cuda" is resolved to an indexed device first. Prefer
        ``acceleration.modes.apply_modes``, which also orders FP8 and compile around it."""
        from ..acceleration.devices import resolve_device
        from ..acceleration.offload import enable_offload

        device = resolve_device(device)
        enable_offload(self, mode, device, stream=stream)
        self._run_device = device
        self.offload_mode = mode

    def _prompt_embeddings(self, prompts: list[str], device, dtype) -> torch.Tensor:
        """umT5 embeddings of ``prompts``: from ``prompt_cache`` when all are cached, else encoded (by a
        umT5 loaded again for this call if it was released)."""
        cached = self.prompt_cache.lookup(prompts, device, dtype)
        if cached is not None:
            return cached
        from .distributed import text_encoder_of

        with text_encoder_of(self) as encoder:
            return encode_prompt(self.tokenizer, encoder, prompts, device, dtype)

    @property
    def _execution_device(self):
        if self._run_device is not None:
            return self._run_device
        return super()._execution_device

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        image,
        prompt,
        dense_video,
        sparse_video,
        negative_prompt=WAN_NEGATIVE_PROMPT,
        history=None,
        noise: torch.Tensor | None = None,
        num_frames: int = 81,
        height: int = 352,
        width: int = 640,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        shift: float = 5.0,
        seed: int = 0,
        generator: torch.Generator | None = None,
        progress: bool = True,
        resize_mode: str = "auto",
        control_scale: float = 1.0,
        callback_on_step_end: Callable | None = None,
        cfg_batch: bool = False,
        step_cache=None,
        callback_on_step_end_tensor_inputs=("latents",),
        timesteps=None,
    ) -> ClipOutput:
        """Generate one clip.

        Args:
            image: first frame (PIL image or uint8 (H, W, 3)); resized to height x width.
            prompt: the clip's text (or a list, one per batch item).
            dense_video, sparse_video: depth and track videos with exactly ``num_frames`` frames
                (uint8 (T, H, W, 3) arrays or lists of PIL images).
            negative_prompt: for classifier-free guidance (Wan2.1's standard one by default).
            history: the previous clip's last frames (8 in LongVie 2), or None for the first clip.
            noise: the initial noise returned by the first clip (unified noise), or None to draw
                it from ``seed`` / ``generator`` (on the CPU, so it is the same on every device).
            resize_mode: "auto" (stretch within 10% of the target aspect ratio, else crop), "crop"
                (resize short side + centre crop, upstream training) or "stretch" (plain resize, upstream inference).
            callback_on_step_end: ``f(pipe, step, timestep, {"latents": latents})`` after each step;
                may return a dict with a replacement "latents".
            callback_on_step_end_tensor_inputs: what the callback's dict holds: "latents", and
                "x0" (the current estimate of the clean latents, for previews) when asked for.
            cfg_batch: run the guidance branches as one batch of 2 (faster on a GPU, more memory).
            step_cache: optional :class:`~longvie.acceleration.step_cache.StepCacheConfig`: skip the
                blocks on steps where they would change little (firstblock, TeaCache, MagCache). None uses
                ``self.default_step_cache`` (set from the modes; off by default); False turns it off.
            timesteps: optional explicit schedule, positions before the shift in (0, 1000], strictly
                decreasing (e.g. [1000, 750, 500, 250], the step-distilled schedule of the fast mode);
                overrides ``num_inference_steps`` (see ``longvie.sampling.scheduling``).
        Returns:
            ``ClipOutput(frames, noise)``.
        """
        if timesteps is not None:
            from .scheduling import check_timesteps

            timesteps = check_timesteps(timesteps)
            num_inference_steps = len(timesteps)
        validate_clip_settings(num_frames, height, width, num_inference_steps)
        check_sampling_arguments(num_inference_steps, guidance_scale, shift, seed, generator)
        images = _as_image_batch(image)
        prompts = _as_prompt_batch(prompt, "prompt")
        dense_videos = _as_video_batch(dense_video, "dense_video")
        sparse_videos = _as_video_batch(sparse_video, "sparse_video")
        histories = None if history is None else _as_video_batch(history, "history")
        negatives = _as_prompt_batch(negative_prompt if negative_prompt is not None else "", "negative_prompt")
        batch = len(images)
        if len(prompts) == 1 and batch > 1:
            prompts = prompts * batch
        if len(negatives) == 1:
            negatives = negatives * batch
        sizes = {"image": len(images), "prompt": len(prompts), "negative_prompt": len(negatives),
                 "dense_video": len(dense_videos), "sparse_video": len(sparse_videos)}
        if histories is not None:
            sizes["history"] = len(histories)
        if len(set(sizes.values())) != 1:
            raise ValueError(f"mismatched batch sizes: {sizes}")
        for name, videos in (("dense_video", dense_videos), ("sparse_video", sparse_videos)):
            for video in videos:
                if len(video) != num_frames:
                    raise ValueError(f"{name} has {len(video)} frames; it must have num_frames={num_frames} "
                                     "(cut or pick the clip's frames before calling the pipeline)")
        latent_shape = (batch, 16, 1 + (num_frames - 1) // 4, height // 8, width // 8)
        if noise is not None and tuple(noise.shape) != latent_shape:
            raise ValueError(f"noise must have shape {latent_shape} for these settings, got {tuple(noise.shape)}")

        device, dtype = self._execution_device, self.denoiser.dtype

        def pixels(videos):  # list of videos -> (B, 3, T, H, W) in [-1, 1] at the target size
            return torch.cat([frames_to_tensor(fit_frames(v, height, width, resize_mode)) for v in videos]).to(device)

        first = pixels([[im] for im in images])[:, :, 0]
        split = self._parallel is not None and self._parallel.world_size > 1
        if split:  # every encoder call on one rank, broadcast (longvie.sampling.distributed)
            from .distributed import encode_over_ranks

            with self._stage("encoders"):
                (prompt_embeds, negative_embeds, image_embeds, image_latents, dense, sparse,
                 history_latents) = encode_over_ranks(
                    self, prompts, negatives if guidance_scale != 1.0 else None, first, num_frames,
                    lambda: pixels(dense_videos), lambda: pixels(sparse_videos),
                    (lambda: pixels(histories)) if histories is not None else None)
        else:
            with self._stage("text_encoder"):
                prompt_embeds = self._prompt_embeddings(prompts, device, dtype)
                negative_embeds = self._prompt_embeddings(negatives, device, dtype) if guidance_scale != 1.0 else None
            with self._stage("image_encoder"):
                image_embeds = encode_image(self.image_encoder,
                                            clip_pixel_values(first, self.image_processor).to(device), dtype)
            with self._stage("vae_encode"):
                image_latents = image_condition(self.vae, first, num_frames).to(dtype)
                dense = control_condition(self.vae, pixels(dense_videos)).to(dtype)
                sparse = control_condition(self.vae, pixels(sparse_videos)).to(dtype)
                history_latents = vae_encode(self.vae, pixels(histories)) if histories is not None else None

        if noise is None:  # drawn on the generator's device (CPU from ``seed`` by default)
            noise = draw_noise(latent_shape, generator, seed, "cpu")
        latents = noise.to(device=device, dtype=torch.float32).clone()
        if history_latents is not None:
            latents[:, :, :1] = (1 - UNIFIED_NOISE_SIGMA) * history_latents[:, :, -1:] + UNIFIED_NOISE_SIGMA * latents[:, :, :1]
            history_latents = history_latents.to(dtype)

        # Denoising loop. Nothing in it waits for the GPU: the per-clip work is prepared on the first
        # call (GuidedVelocity's clip caches) and the scheduler starts at index 0 instead of looking
        # its timestep up (a device->host copy).
        scheduler = make_sampling_scheduler(num_inference_steps, shift, device=device, timesteps=timesteps)
        scheduler.set_begin_index(0)
        make_block_stack = None
        if step_cache is None:
            step_cache = self.default_step_cache
        if step_cache:
            from ..acceleration.step_cache import make_step_cache

            # GuidedVelocity makes one cache per branch, the conditional branch first (see its branch modes)
            cfg_parallel = self._parallel is not None and self._parallel.cfg_degree > 1
            branches = iter(["cond"] if guidance_scale == 1.0 or cfg_batch else
                            ["cond" if self._parallel.cfg_rank == 0 else "uncond"] if cfg_parallel else
                            ["cond", "uncond"])
            # The ranks that must skip alike: those sharing one denoiser call's tokens (sequence parallel);
            # CFG-parallel ranks compute different branches and decide on their own, as one process does.
            cache_group = self._parallel.sequence_group if self._parallel is not None else None
            fed_timesteps = scheduler.timesteps.to(dtype)  # as the denoiser receives them (TeaCache measures them)
            make_block_stack = lambda: make_step_cache(  # noqa: E731
                step_cache, num_inference_steps, timesteps=fed_timesteps, denoiser=self.denoiser,
                branch=next(branches, "cond"), group=cache_group)
        guided = GuidedVelocity(
            self.denoiser, prompt_embeds, negative_embeds,
            dict(image_embeds=image_embeds, image_latents=image_latents, dense_latents=dense, sparse_latents=sparse,
                 history_latents=history_latents),
            guidance_scale, control_scale=control_scale, cfg_batch=cfg_batch, parallel=self._parallel,
            make_block_stack=make_block_stack)
        self.set_progress_bar_config(disable=not progress, desc="denoising")
        with self._stage("denoise"):
            for step, t in enumerate(self.progress_bar(scheduler.timesteps)):
                # Upstream (DiffSynth) feeds the timestep in the model dtype; the released weights were
                # trained that way, so bf16 inference rounds it the same way.
                timestep = t.expand(batch).to(dtype)
                velocity = guided(latents.to(dtype), timestep)
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    tensors = {"latents": latents}
                    if "x0" in callback_on_step_end_tensor_inputs:
                        # Flow matching: x_t = (1 - s) x0 + s eps, v = eps - x0, and the Euler step gives
                        # x_next = x_t + (s_next - s) v, so x0 = x_next - s_next v (no extra model call).
                        tensors["x0"] = latents - scheduler.sigmas[step + 1].to(latents.device) * velocity.float()
                    update = callback_on_step_end(self, step, t, tensors)
                    if update and "latents" in update:
                        latents = update["latents"]

        with self._stage("vae_decode"):
            if split:  # tiled decode: the tiles over the ranks; untiled: the whole decode on every rank
                from .distributed import decode_over_ranks

                video = decode_over_ranks(self.vae, latents, self._parallel)
            else:
                video = vae_decode(self.vae, latents)
            frames = [tensor_to_frames(v) for v in video]
        self.maybe_free_model_hooks()
        return ClipOutput(frames[0] if batch == 1 else frames, noise.cpu())

