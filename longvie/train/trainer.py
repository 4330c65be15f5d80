"""The LongVie 2 training loop (all three stages), on accelerate (DDP, or DeepSpeed ZeRO-2 on GPUs).

Read top to bottom: :func:`train` builds the models, selects the trainable weights, prepares the
data stream and runs optimizer steps; one step is ``gradient_accumulation_steps`` micro-batches of
one clip each, every clip encoded by the frozen VAE / umT5 / CLIP (or read from the latent cache)
and degraded per its plan (:mod:`longvie.train.inputs`), then :func:`compute_loss`.

Determinism: every random number of a micro-batch comes from generators seeded with (seed, step,
micro-batch, rank) and (seed, epoch, clip index); the data position of every rank is saved with
each checkpoint. A resumed run therefore repeats the uninterrupted run's losses.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ..media.atomic import atomic_write_text
from ..models.control_branch import LongVieControlBranch
from ..models.denoiser import LongVieDenoiser
from ..presets.config import torch_dtype
from ..sampling.scheduling import TrainingSchedule
from . import checkpointing
from .data import (
    MAX_CONSECUTIVE_BAD,
    ClipDataset,
    DataError,
    SampleStream,
    SkippedClip,
    read_metadata,
    too_many_bad_clips,
)
from .degradations import DegradationSettings
from .inputs import ClipInputs
from .losses import add_noise, degraded_frame_loss, flow_matching_loss, flow_target
from .metrics import MetricsLogger
from .outputs import mark_training_output
from .runtime import build_encoder, encoders_needed, load_in_turns, make_accelerator
from .zero import keep_frozen_fp32, release_tensors

logger = logging.getLogger("longvie.train")

# Parameter groups that a stage may train (names of LongVieDenoiser parameters).
TRAINABLE_PATTERNS = {
    "control": re.compile(r"^control\."),
    # Stage 3: every DiT self-attention layer: q, k, v, o and the q/k RMSNorms (SPEC §6).
    "dit_self_attention": re.compile(r"^transformer\.blocks\.\d+\.attn1\."),
}


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    step: int
    losses: list = field(default_factory=list)  # (step, loss) logged by this run
    skipped: int = 0


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def build_denoiser(config: dict) -> LongVieDenoiser:
    """The Wan2.1-I2V DiT + control branch, initialised for the stage (on the CPU).

    Stage 1 (``init_from`` null / "half_copy"): control block i = half copy of DiT block i (SPEC §2).
    Stages 2-3: the previous stage's control.safetensors (+ dit.safetensors when present).
    """
    from ..weights.loading import load_control_branch, load_transformer, longvie_weight_paths, overlay_dit_weights

    model_cfg = config["model"]
    weight_dtype = torch_dtype(model_cfg["weight_dtype"])
    transformer = load_transformer(model_cfg["base_model_dir"], torch_dtype=weight_dtype)
    init_from = model_cfg.get("init_from")
    if init_from in (None, "half_copy"):
        control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config,
                                                                         model_cfg["control_layers"]))
        control.init_half_copy(transformer)
    else:
        control_path, dit_path = longvie_weight_paths(checkpointing.resolve_weights_dir(init_from))
        control = load_control_branch(control_path, transformer.config, torch_dtype=torch.float32)
        if dit_path is not None:
            overlay_dit_weights(transformer, dit_path)
    return LongVieDenoiser(transformer, control)


def check_before_loading(config: dict) -> None:
    """Fail fast, before a 14B model is loaded: the metadata must parse and the weights to start
    from must exist."""
    read_metadata(config["data"]["metadata"], config["data"].get("root"))
    init_from = config["model"].get("init_from")
    if init_from is None and config["stage"] > 1:
        raise ValueError(f"stage {config['stage']} starts from the previous stage's weights: pass "
                         "--init-from OUTPUT_OF_PREVIOUS_STAGE (or set model.init_from: half_copy to start fresh)")
    if init_from not in (None, "half_copy"):
        checkpointing.resolve_weights_dir(init_from)


def load_checkpoint_state(accelerator, resume_dir: Path, out_dir: Path, automatic: bool) -> Path | None:
    """Load the accelerate state of ``resume_dir``; returns the checkpoint loaded.

    With ``automatic`` (``--resume`` without a path) a checkpoint that fails to load is reported
    and the previous intact one of the run is tried (None when none is left: a fresh start would
    silently discard the run's progress, so that raises instead).
    """
    candidates = [resume_dir]
    if automatic:
        candidates += [c for c in checkpointing.resume_candidates(out_dir) if c != resume_dir]
    errors = []
    for checkpoint in candidates:
        if checkpoint is not resume_dir and checkpointing.checkpoint_problems(checkpoint):
            continue
        try:
            if checkpointing.is_deepspeed(accelerator):
                accelerator.load_state(str(checkpoint / checkpointing.STATE_DIR), load_module_strict=False)
            else:
                accelerator.load_state(str(checkpoint / checkpointing.STATE_DIR))
        except Exception as err:  # noqa: BLE001 - a damaged file shows up as any error of its reader
            if not automatic:
                raise checkpointing.CheckpointError(f"--resume {checkpoint}: cannot load its state ({err})") from err
            errors.append(f"{checkpoint}: {type(err).__name__}: {err}")
            logger.warning("checkpoint %s could not be loaded (%s); trying the previous one", checkpoint, err)
            continue
        if checkpoint != resume_dir:
            logger.warning("resuming from %s instead of the damaged %s", checkpoint, resume_dir)
        return checkpoint
    raise checkpointing.CheckpointError("no checkpoint of this run could be loaded:\n  " + "\n  ".join(errors)
                                        + f"\nmove the damaged checkpoint folders out of {out_dir} to start over")


def select_trainable(denoiser: torch.nn.Module, groups) -> set[str]:
    """Freeze everything but the parameters of ``groups``; trainable ones are made float32."""
    patterns = [TRAINABLE_PATTERNS[g] for g in groups]
    names = set()
    for name, param in denoiser.named_parameters():
        trainable = any(p.match(name) for p in patterns)
        param.requires_grad_(trainable)
        if trainable:
            param.data = param.data.float()  # master weights in float32 (bf16 compute under autocast)
            names.add(name)
    if not names:
        raise ValueError(f"train.trainable {groups} matches no parameter")
    return names


# --------------------------------------------------------------------------------------------------
# One micro-batch
# --------------------------------------------------------------------------------------------------


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """CPU generator of one micro-batch: the noise, the timestep and the re-generation noise."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def compute_loss(model, inputs: ClipInputs, schedule: TrainingSchedule, generator: torch.Generator,
                 loss_cfg: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Flow-matching loss of one clip (SPEC §6).

    Draws ε ~ N(0, I) and a schedule index uniformly, x_t = (1 - s) x0 + s ε, predicts v̂ and
    compares it with v = ε - x0: plain MSE, or the stage-3 degraded-frame loss when the
    conditioning frame is degraded; the result is multiplied by the timestep's bell weight.

    Returns:
        dict with "loss" (scalar, weighted) and the unweighted terms.
    """
    x0 = inputs.latents
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    sigma, timestep, weight = schedule.sample(1, generator)
    noisy = add_noise(x0, noise, sigma.to(x0.device))
    target = flow_target(x0, noise)
    # The model sees the timestep in its weight dtype, as upstream (DiffSynth) trains it.
    pred = model(noisy.to(dtype), timestep.to(x0.device).to(dtype), **inputs.model_kwargs(dtype)).float()
    if inputs.degraded and loss_cfg["degraded_terms"]:
        noise0 = noise[:, :, :1]
        history_target = (flow_target(inputs.history_last_latent, noise0)
                          if inputs.history_last_latent is not None else None)
        terms = degraded_frame_loss(pred, target, flow_target(inputs.degraded_latent, noise0), history_target,
                                    loss_cfg["frame_weights"], loss_cfg["lowpass_weight"],
                                    loss_cfg["highpass_weight"], loss_cfg["consistency_weight"])
    else:
        terms = {"loss": flow_matching_loss(pred, target)}
    terms["loss"] = terms["loss"] * weight.to(x0.device)
    return terms


def learning_rate_at(step: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` optimizer steps, then constant."""
    return base * min(1.0, (step + 1) / warmup) if warmup > 0 else base


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def build_dataset(config: dict):
    data = config["data"]
    records = read_metadata(data["metadata"], data.get("root"))
    settings = DegradationSettings(**config["degradation"])
    seed = config["train"]["seed"]
    if data.get("cache_dir"):
        from .cache import CachedClipDataset

        return CachedClipDataset(data["cache_dir"], records, settings, seed, data, skip_bad=data["skip_bad"])
    return ClipDataset(records, data["num_frames"], data["height"], data["width"], settings, seed,
                       resize=data["resize"], skip_bad=data["skip_bad"])


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def train(config: dict, resume=None, build_cache: bool = False) -> TrainResult:
    """Run one training stage as configured (see configs/train_stage1.yaml).

    Args:
        config: from :func:`longvie.train.config.load_train_config`.
        resume: None, "auto" (the output folder's latest checkpoint, if any) or a checkpoint path.
        build_cache: first write the latent cache into ``data.cache_dir`` (then train from it).
    """
    from .presets import resolve_preset

    accelerator = make_accelerator(config)
    with accelerator.main_process_first():
        config = resolve_preset(config)
    train_cfg, data_cfg = config["train"], config["data"]
    out_dir = Path(train_cfg["output_dir"])
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    accum, seed = train_cfg["gradient_accumulation_steps"], train_cfg["seed"]
    if accelerator.is_main_process:
        mark_training_output(out_dir)  # first: the folder is ours from now on (longvie.train.outputs)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    resume_dir = checkpointing.resolve_resume(resume, out_dir)
    check_before_loading(config)

    # Models: the denoiser (trainable parts in float32) and the frozen encoders, loaded by the ranks
    # of a node in turns so that host RAM holds one rank's CPU copy at a time (runtime.load_in_turns).
    def load_models():
        torch.manual_seed(seed)
        denoiser = build_denoiser(config)
        denoiser.control.dense_weakening_position = config["degradation"].get("dense_weakening_position", "after")
        trainable = select_trainable(denoiser, train_cfg["trainable"])
        if train_cfg["gradient_checkpointing"]:
            denoiser.enable_gradient_checkpointing()
        denoiser.to(device).train()
        # From a latent cache the prompts are pre-encoded: umT5 (and CLIP / the VAE when the stage never
        # re-encodes) is not loaded at all (runtime.encoders_needed).
        latent_cache = bool(data_cfg.get("cache_dir")) and not build_cache
        encoder = build_encoder(config, device, encoders_needed(config, latent_cache))
        return denoiser, trainable, encoder

    denoiser, trainable, encoder = load_in_turns(accelerator, load_models, train_cfg.get("load_ranks_at_once", 1))
    if build_cache:
        from .cache import build_latent_cache

        build_latent_cache(config, encoder, accelerator)
    save_dtype = torch_dtype(train_cfg["save_dtype"])
    if config["stage"] == 1 and resume_dir is None and accelerator.is_main_process:
        checkpointing.write_release_weights(out_dir / "init", denoiser.state_dict(), trainable, save_dtype)
    logger.info("stage %d: training %d tensors (%.1fM parameters) on %d process(es)", config["stage"], len(trainable),
                sum(p.numel() for n, p in denoiser.named_parameters() if n in trainable) / 1e6, world)

    # Optimizer (AdamW, SPEC §6) and accelerate.
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg["learning_rate"], betas=tuple(train_cfg["adam_betas"]),
                                  weight_decay=train_cfg["weight_decay"])
    if checkpointing.is_deepspeed(accelerator):
        # No dataloader goes through prepare(): give DeepSpeed the batch geometry ourselves.
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = 1
        ds_config["gradient_accumulation_steps"] = accum
    # DeepSpeed bf16 casts every module; frozen fp32 ones are restored (train.keep_frozen_fp32, refused
    # under ZeRO-3 by runtime.make_accelerator).
    with keep_frozen_fp32(denoiser) if train_cfg.get("keep_frozen_fp32", True) else contextlib.nullcontext():
        model, optimizer = accelerator.prepare(denoiser, optimizer)
    checkpointing.install_state_hooks(accelerator)
    unwrapped = accelerator.unwrap_model(model)

    state = {"step": 0, "positions": [[0, 0]] * world, "skipped": 0}
    if resume_dir is not None:
        resume_dir = load_checkpoint_state(accelerator, resume_dir, out_dir, automatic=resume == "auto")
    if resume_dir is not None:
        state = checkpointing.read_trainer_state(resume_dir)
        if len(state["positions"]) != world:
            raise ValueError(f"{resume_dir} was saved by {len(state['positions'])} process(es); resume it with the "
                             f"same number (got {world}) for an exact data order")
        logger.info("resumed from %s at step %d", resume_dir, state["step"])

    dataset = build_dataset(config)
    stream = SampleStream(dataset, seed, rank, world, position=tuple(state["positions"][rank]),
                          num_workers=data_cfg["num_workers"])
    metrics = MetricsLogger(out_dir / "logs", enabled=accelerator.is_main_process, resume_step=state["step"])
    schedule = TrainingSchedule(shift=train_cfg["shift"])
    dtype = unwrapped.dtype
    step, skipped = state["step"], torch.zeros((), device=device)
    skipped_before = state["skipped"]
    overfit_sample = overfit_inputs = None
    result = TrainResult(out_dir, out_dir / checkpointing.FINAL, step)

    def next_sample():
        nonlocal overfit_sample, skipped
        if train_cfg["overfit"] and overfit_sample is not None:
            return overfit_sample
        bad = []  # consecutive unusable clips
        while True:
            sample = next(stream)
            if not isinstance(sample, SkippedClip):
                break
            skipped += 1
            bad.append(sample)
            error = too_many_bad_clips(bad, len(dataset), data_cfg.get("max_consecutive_bad", MAX_CONSECUTIVE_BAD))
            if error is not None:
                raise error
        if train_cfg["overfit"]:
            overfit_sample = sample
        return sample

    def next_sample_on_every_rank():
        # A rank that stops on unusable data must not leave the others waiting in the next collective
        # (they would hang until the process-group timeout): every rank learns of the stop in the same
        # micro-batch, through one small all-reduce (one host sync per micro-batch, beside the step's own).
        error, sample = None, None
        try:
            sample = next_sample()
        except DataError as err:
            error = err
        if world > 1:
            stopped = accelerator.reduce(torch.tensor([0 if error is None else 1], device=device), reduction="sum")
            if error is None and int(stopped.item()):
                error = DataError(f"{int(stopped.item())} other process(es) stopped on unusable training data "
                                  "(their message names the clips); this process stops with them")
        if error is not None:
            raise error
        return sample

    while step < train_cfg["max_steps"]:
        lr = learning_rate_at(step, train_cfg["learning_rate"], train_cfg["warmup_steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        losses, degraded, history_frames = [], 0, 0  # the last two: of this rank's micro-batches
        for micro in range(accum):
            generator = step_generator(seed, 0 if train_cfg["overfit"] else step, micro, rank)
            sample = next_sample_on_every_rank()
            with accelerator.accumulate(model), accelerator.autocast():
                if overfit_inputs is not None:
                    inputs = overfit_inputs
                else:
                    inputs = encoder(sample, denoiser=unwrapped, generator=generator,
                                     degraded_terms=config["loss"]["degraded_terms"])
                    # Overfitting one clip: its encodings never change, unless re-generation
                    # (which runs the model being trained) degrades its first frame.
                    regenerated = sample["plan"].first_frame is not None and \
                        sample["plan"].first_frame.regen_timestep is not None
                    if train_cfg["overfit"] and not regenerated:
                        overfit_inputs = inputs
                terms = compute_loss(model, inputs, schedule, generator, config["loss"], dtype)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and train_cfg["max_grad_norm"] and \
                        not checkpointing.is_deepspeed(accelerator):  # DeepSpeed: its gradient_clipping
                    accelerator.clip_grad_norm_(params, train_cfg["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(terms["loss"].detach().float())
            degraded += int(inputs.degraded)
            history_frames += sample["plan"].history_frames
        step += 1

        loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        seconds = time.perf_counter() - started
        if step % train_cfg["log_every"] == 0 or step == train_cfg["max_steps"]:
            total_skipped = skipped_before + int(accelerator.reduce(skipped.clone(), reduction="sum").item())
            samples_per_second = accum * world / seconds
            metrics.log(dict(step=step, epoch=stream.epoch, loss=loss, lr=lr, step_seconds=seconds,
                             samples_per_second=samples_per_second,
                             frames_per_second=samples_per_second * data_cfg["num_frames"],
                             degraded=degraded, history_frames=history_frames, skipped=total_skipped))
            result.losses.append((step, loss))
            logger.info("step %d  loss %.5f  lr %.2e  %.2f s/step  %.2f clips/s", step, loss, lr, seconds,
                        samples_per_second)
        if step % train_cfg["save_every"] == 0 or step == train_cfg["max_steps"]:
            positions = accelerator.gather(torch.tensor([list(stream.position)], device=device)).tolist()
            total_skipped = skipped_before + int(accelerator.reduce(skipped.clone(), reduction="sum").item())
            trainer_state = {"step": step, "positions": positions, "skipped": total_skipped, "stage": config["stage"]}
            path = checkpointing.save_checkpoint(accelerator, model, out_dir, step, trainer_state, trainable,
                                                 save_dtype, train_cfg["keep_checkpoints"])
            logger.info("saved %s", path)

    # Final weights (no optimizer state), for the next stage and for inference.
    state_dict = release_tensors(accelerator, model, trainable)  # only the released tensors, main process
    if accelerator.is_main_process:
        checkpointing.write_release_weights(result.final_dir, state_dict, trainable, save_dtype)
    result.step = step
    result.skipped = skipped_before + int(accelerator.reduce(skipped.clone(), reduction="sum").item())
    if result.skipped:
        logger.warning("%d clip(s) were skipped as unusable (data.skip_bad); see the warnings above", result.skipped)
    metrics.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result
