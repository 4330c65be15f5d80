"""Benchmark modes for step caching and the fast (4-step distilled) mode, and MagCache calibration.

* ``--cache KIND`` (repeatable; firstblock, teacache, magcache): one mode per threshold — the one given
  with ``--cache-threshold``, else the published ones (TeaCache4Wan2.1 I2V-480P: 0.13, 0.19, 0.26;
  MagCache4Wan2.1: 0.12, 0.24; firstblock: its default). Each row shows the speed-up and PSNR/SSIM
  against the exact clip; the JSON adds the skipped steps per guidance branch.
* ``--fast``: 4 steps at timesteps 1000, 750, 500, 250 (shift as the run), no guidance, with the
  step-distilled LoRA fused in (``--fast-lora PATH``, default the fast config's file). Compared with the
  exact clip of the same run (50 steps with guidance at the release settings). On the tiny preset a random
  LoRA written for the tiny model stands in and the quality numbers mean nothing; with ``--random-weights``
  no LoRA is loaded (a fused LoRA costs nothing per step) and the quality numbers mean nothing either.
* ``--calibrate-magcache FILE``: one exact clip that records MagCache's residual magnitude ratios per step
  and guidance branch into FILE (for ``--cache magcache --cache-ratios FILE`` / ``magcache_ratios=FILE``).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

FAST_TIMESTEPS = [1000, 750, 500, 250]


def cache_modes(args, Mode) -> list:
    """One ``Mode`` (the benchmark's mode class) per cache kind and threshold."""
    from ..acceleration.step_cache import DEFAULT_THRESHOLDS, MAGCACHE_THRESHOLDS, TEACACHE_THRESHOLDS, StepCacheConfig

    published = {"teacache": TEACACHE_THRESHOLDS, "magcache": MAGCACHE_THRESHOLDS,
                 "firstblock": (DEFAULT_THRESHOLDS["firstblock"],)}
    modes = []
    for kind in args.cache or []:
        thresholds = [args.cache_threshold] if args.cache_threshold is not None else published[kind]
        for threshold in thresholds:
            ratios = getattr(args, "cache_ratios", None) if kind == "magcache" else None
            config = StepCacheConfig(kind=kind, threshold=threshold, magcache_ratios=ratios)
            modes.append(Mode(f"cache-{kind}-{threshold:g}", {"step_cache": config}))
    return modes


def _random_tiny_lora(pipe, folder: Path) -> Path:
    """A rank-4 LoRA on every attention projection of the tiny DiT, in LightX2V's key layout."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for index, block in enumerate(pipe.denoiser.transformer.blocks):
        for original, layer in (("self_attn.q", block.attn1.to_q), ("self_attn.v", block.attn1.to_v),
                                ("cross_attn.k_img", block.attn2.add_k_proj),
                                ("cross_attn.v_img", block.attn2.add_v_proj)):
            tensors[f"diffusion_model.blocks.{index}.{original}.lora_A.weight"] = \
                torch.randn(4, layer.in_features, generator=g) * 0.05
            tensors[f"diffusion_model.blocks.{index}.{original}.lora_B.weight"] = \
                torch.randn(layer.out_features, 4, generator=g) * 0.05
    path = folder / "random_tiny_lora.safetensors"
    save_file(tensors, str(path))
    return path


def fast_lora_path(args) -> Path | None:
    """The distill LoRA the fast mode fuses on real weights (None on tiny / random weights)."""
    if args.random_weights or (args.base_dir is None and args.preset == "tiny"):
        return None
    if getattr(args, "fast_lora", None):
        return Path(args.fast_lora)
    from ..longvideo.loras import FAST_CONFIG, REPO_ROOT
    from ..presets.config import load_config

    path = Path(load_config(FAST_CONFIG)["loras"][0]["path"])
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def fast_mode(args, Mode):
    """The fast mode: the distilled schedule without guidance, with its LoRA fused for the run."""
    state = {}

    def apply(pipe):
        path = fast_lora_path(args)
        if path is None and not args.random_weights:
            path = _random_tiny_lora(pipe, Path(tempfile.mkdtemp(prefix="longvie_fast_lora_")))
        state["records"] = pipe.load_loras([path]) if path is not None else []

    def undo(pipe):
        if state.get("records"):
            pipe.unfuse_loras()

    kwargs = {"timesteps": FAST_TIMESTEPS, "guidance_scale": 1.0, "num_inference_steps": len(FAST_TIMESTEPS)}
    return Mode("fast", kwargs, apply=apply, undo=undo)


def fast_note(args) -> str:
    if args.random_weights:
        return "fast: random weights and no LoRA — the speed is real, the quality numbers mean nothing"
    if fast_lora_path(args) is None:
        return ("fast: tiny preset with a random LoRA standing in for the distill LoRA — the quality numbers "
                "mean nothing here")
    return (f"fast: LoRA {fast_lora_path(args)} (trained on plain Wan2.1, not with LongVie's control branch); "
            "PSNR/SSIM are against the exact clip above")


def check_fast_lora(args) -> str | None:
    """An error line when the fast mode's LoRA is missing or does not fit (before any model loads)."""
    path = fast_lora_path(args)
    if path is None:
        return None
    if not path.is_file():
        return f"--fast: the distill LoRA {path} is missing; fetch it with `python download_wan2.1.py --fast-lora`"
    from ..weights.files import CONTROL_FILENAME
    from ..weights.lora import check_lora_files, lora_model_config

    control = Path(args.longvie_dir) / CONTROL_FILENAME if args.longvie_dir else None
    problems = check_lora_files([path], lora_model_config(args.base_dir, control if control and control.is_file()
                                                          else None))
    return "; ".join(problems) or None


def precheck(args) -> str | None:
    """Problems knowable before loading: the fast mode's LoRA, an existing calibration output file."""
    if getattr(args, "calibrate_magcache", None) is not None and Path(args.calibrate_magcache).exists():
        return (f"--calibrate-magcache {args.calibrate_magcache}: exists; choose a new file name "
                "(it is never overwritten)")
    return check_fast_lora(args) if getattr(args, "fast", False) else None


def mode_steps(mode, args) -> int:
    timesteps = mode.call_kwargs.get("timesteps")
    return len(timesteps) if timesteps is not None else mode.call_kwargs.get("num_inference_steps", args.steps)


def mode_guidance(mode, args) -> bool:
    return mode.call_kwargs.get("guidance_scale", args.cfg) != 1.0


def cache_summary(mode) -> dict:
    """Skipped steps per guidance branch of a cache mode's last clip."""
    config = mode.call_kwargs.get("step_cache")
    if config is None or not config.traces:
        return {}
    last = {}
    for trace in config.traces:
        last[trace["branch"]] = trace
    return {"skipped_steps": {branch: sum(t["skipped"]) for branch, t in last.items()},
            "cache_threshold": config.threshold}


def calibrate_magcache(pipe, inputs: dict, args, device_name: str) -> int:
    """Run one exact clip recording MagCache's ratios; write them to ``args.calibrate_magcache``."""
    from ..acceleration.step_cache import StepCacheConfig, calibration_result
    from ..media.atomic import atomic_write_bytes

    out = Path(args.calibrate_magcache)
    config = StepCacheConfig("magcache", calibrate=True)
    pipe(**{**inputs, "num_inference_steps": args.steps, "step_cache": config})
    result = calibration_result(config, args.steps, shift=5.0, cfg=args.cfg, frames=args.frames, height=args.height,
                                width=args.width, preset=args.preset, random_weights=args.random_weights,
                                base_dir=args.base_dir, longvie_dir=args.longvie_dir, device=device_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # appeared while the clip ran
        print(f"error: --calibrate-magcache {out}: exists; choose a new file name (it is never overwritten)")
        return 2
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    print(f"MagCache ratios ({args.steps} steps, {', '.join(b for b in ('cond', 'uncond') if b in result)}) -> {out}")
    print(f"use them with: --cache magcache --cache-ratios {out}")
    return 0
