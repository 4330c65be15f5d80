"""Ultra-long video generation: clip after clip, resumable (SPEC §4).

From a first image and a condition list (one prompt + depth video + track video per clip):

* clip 0 starts from the first image and draws its noise from the run's seed;
* clip k > 0 starts from clip k-1's last frame, sees clip k-1's last 8 frames as history and is
  sampled from the same noise tensor as clip 0 (unified noise);
* every clip is written as an mp4 (16 fps), and all clips as one stitched video without duplicated
  boundary frames: clip 0 whole, then every later clip without its first frame
  (81 + (n - 1) * 80 frames for n clips of 81).

Runs are resumable: see :mod:`longvie.longvideo.run_state` for the run directory and what is stored. ::

    sampler = LongVideoSampler(settings, pipe=pipe)
    result = sampler("outputs/ride_horse", "first.png", load_conditions("cond.json")[0])
    print(result.video_path)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import LongVieError
from ..controls.captioning import PLACEHOLDER_PREFIX, is_placeholder_prompt
from ..media.video_io import fit_frames, load_image, read_video, to_frame_array, write_video
from .provider import FinishedClips, provided_source
from .run_state import (
    ClipState,
    RedoRequest,
    RunDir,
    apply_redo,
    mark_clip_done,
    new_manifest,
    plan_resume,
    record_modes,
    sha256_file,
)
from .validation import ClipCondition, InputValidationError

__all__ = ["LongVideoSettings", "LongVideoResult", "LongVideoSampler", "NonFiniteOutputError", "stitched_length",
           "stitch_clips", "load_run_frames", "is_placeholder_prompt", "placeholder_problems",
           "PLACEHOLDER_MARKER"]

# utils/prepare_controls.py writes "PLACEHOLDER for clip {i}: replace this text ..." (and "placeholder": true)
# into cond.json when no caption model is given; such a prompt must be replaced before sampling.
PLACEHOLDER_MARKER = PLACEHOLDER_PREFIX


def placeholder_problems(clips: Sequence[ClipCondition]) -> list[str]:
    """One problem per clip whose prompt is empty or still a prepare_controls placeholder."""
    bad = [clip.index for clip in clips
           if getattr(clip, "placeholder", False) or not str(clip.text).strip() or is_placeholder_prompt(clip.text)]
    if not bad:
        return []
    shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    return [f"{len(bad)} clip(s) ({shown}) have an empty or placeholder prompt (text starting with "
            f"{PLACEHOLDER_MARKER!r}, as utils/prepare_controls.py writes without --caption-model) — write a "
            "description of each clip into its \"text\" in cond.json, or pass --allow-placeholder-prompts to "
            "sample with them anyway"]


class NonFiniteOutputError(LongVieError, FloatingPointError):
    """The model produced NaN or infinite values for a clip; nothing of that clip was written."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LongVideoSettings:
    """Everything that shapes the generated pixels, recorded in the manifest and checked on resume.

    ``seed`` is the seed of a new run (a resumed run keeps its recorded seed unless told otherwise);
    ``model`` names the weights (paths or "tiny") so that a run is not continued with other weights.
    """

    num_frames: int = 81
    height: int = 352
    width: int = 640
    steps: int = 50
    cfg: float = 5.0
    shift: float = 5.0
    history_frames: int = 8
    resize: str = "auto"
    negative_prompt: str | None = None  # None: the pipeline's default (Wan2.1's standard one)
    fps: int = 16
    model: str = "unspecified"
    dtype: str = "bfloat16"
    vae_tiling: bool = False  # tiled VAE encode/decode changes pixels slightly: part of the run's identity
    fp8: bool = False  # FP8 weights in the denoiser's blocks: changes pixels slightly
    fp8_kind: str | None = None  # "gemm" (FP8 matmuls) | "weight-only" when fp8 (acceleration.fp8): other numerics
    step_cache: str | None = None  # "firstblock" | "teacache" | "magcache": skip redundant steps (changes pixels)
    step_cache_threshold: float | None = None  # None: the kind's default
    loras: tuple = ()  # [{sha256, scale}] of the LoRAs fused into the denoiser (longvideo.loras)
    timesteps: tuple | None = None  # explicit schedule before the shift (the fast mode: 1000, 750, 500, 250)
    step_cache_ratios: str | None = None  # magcache: calibrated magnitude ratios file (None: the published ones)
    seed: int = 0

    def recorded(self) -> dict:
        """The settings a resumed run must match (all but the default seed)."""
        settings = asdict(self)
        settings.pop("seed")
        settings["loras"] = [dict(entry) for entry in self.loras]  # lists, as the manifest's JSON reads back
        settings["timesteps"] = None if self.timesteps is None else [float(t) for t in self.timesteps]
        return settings


@dataclass
class LongVideoResult:
    run_dir: Path
    video_path: Path  # the stitched video
    clip_paths: list[Path]  # one mp4 per clip
    num_frames: int  # of the stitched video
    generated: list[int] = field(default_factory=list)  # clips generated by this call
    seconds: float = 0.0  # wall time of this call
    stopped: bool = False  # stopped after a clip on request (``stop_requested``); the rest is pending


def stitched_length(num_clips: int, clip_frames: int = 81) -> int:
    """Frames of the stitched video: every clip after the first shares its first frame."""
    return clip_frames + (num_clips - 1) * (clip_frames - 1) if num_clips > 0 else 0


def stitch_clips(clips: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield the frames of consecutive clips, dropping the first frame of every clip after the first.

    Clip k's first frame continues from clip k-1's last frame (it was generated from it), so keeping
    both would show the boundary frame twice.
    """
    for index, frames in enumerate(clips):
        yield from (frames if index == 0 else frames[1:])


def load_run_frames(run_dir: str | Path, num_clips: int | None = None) -> np.ndarray:
    """The stitched video of a run, losslessly, from its clip states: (T, H, W, 3) uint8."""
    run = RunDir(run_dir)
    manifest = run.load_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{run.manifest_path} not found: {run_dir} is not a LongVie run directory")
    records = [r for r in manifest["clips"] if r and r["status"] == "done"]
    records = records[:num_clips] if num_clips is not None else records
    clips = (run.load_clip_state(r["index"], r["state_sha256"]).frames for r in records)
    return np.stack(list(stitch_clips(clips)))


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Append this package's log records (INFO and up) to ``path`` while the block runs."""
    package_logger = logging.getLogger("longvie")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = package_logger.level
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    package_logger.addHandler(handler)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
        handler.close()


def _environment() -> dict:
    import torch

    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "longvie": __version__,
            "platform": platform.platform(), "host": platform.node()}


class LongVideoSampler:
    """Generates a long video clip by clip into a resumable run directory.

    Args:
        settings: clip shape, sampling settings and model identity.
        pipe: a loaded :class:`longvie.sampling.pipeline.LongViePipeline` (or anything with its call
            signature), or
        load_pipe: a function returning one, called only when a clip must be generated (a finished
            run is re-stitched without loading any model).
        progress: show a clip bar and the pipeline's step bar (tqdm, with ETA).
    """

    def __init__(self, settings: LongVideoSettings, pipe: Any = None, load_pipe: Callable[[], Any] | None = None,
                 progress: bool = True):
        if (pipe is None) == (load_pipe is None):
            raise ValueError("give exactly one of pipe and load_pipe")
        self.settings = settings
        self._pipe = pipe
        self._load_pipe = load_pipe
        self.progress = progress
        self.finished_clips: int | None = None  # clips 0..n-1 finished in the run being worked on
        self.pipe_kwargs: dict = {}  # speed-only pipeline options (e.g. cfg_batch): same math, not recorded
        # drop umT5 from memory once the session's prompts are cached (the CLI: one run per process)
        self.release_text_encoder = False

    @property
    def pipe(self):
        if self._pipe is None:
            logger.info("loading the model")
            started = time.perf_counter()
            self._pipe = self._load_pipe()
            logger.info("model loaded in %.1f s", time.perf_counter() - started)
        return self._pipe

    # ------------------------------------------------------------------------------------------
    def __call__(
        self,
        run_dir: str | Path,
        image: str | Path,
        clips: Sequence[ClipCondition],
        seed: int | None = None,
        redo: RedoRequest | None = None,
        config: dict | None = None,
        command: str | None = None,
        on_clip_done: Callable[[int], None] | None = None,
        notes: Sequence[str] = (),
        on_step: Callable[[int, int, int], None] | None = None,
        allow_placeholder_prompts: bool = False,
        on_preview: Callable[[int, int, int, Any], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
        controls: Callable | None = None,
    ) -> LongVideoResult:
        """Generate (or continue) the run in ``run_dir``.

        Args:
            run_dir: the run directory (created; an existing run is continued after its last
                finished clip).
            image: the first frame.
            clips: the clips' conditions, in order (validated beforehand, see
                :func:`longvie.longvideo.validation.validate_inputs`).
            seed: the run's seed; None keeps a resumed run's recorded seed (``settings.seed`` for a
                new run). A different seed for a run with finished clips is an error (use ``redo``).
            redo: regenerate one clip and every clip after it (optionally with a new seed/prompt).
            config, command: recorded in the manifest for reference.
            on_clip_done: called with the clip index after each clip is committed (tests use it).
            notes: input adjustments found by validation (resizes, trims), logged to run.log.
            on_step: called as ``on_step(clip, step, steps)`` after each denoising step (step counts
                from 1). An exception raised by it stops the run after that step; the clip in
                progress is not committed, so the run resumes from it (the app's cancel button).
            allow_placeholder_prompts: sample clips whose prompt is empty or a prepare_controls
                placeholder (refused by default).
            on_preview: called as ``on_preview(clip, step, steps, x0)`` after each denoising step
                with the pipeline's current estimate of the clean latents (B, 16, F, h, w), on the
                model's device (the app's live preview; it decides how often to look at it).
            stop_requested: checked after each committed clip but the last; True ends the call
                there: the finished clips are stitched, the rest stay pending (a later call resumes
                them) and the result has ``stopped`` set (the app's "stop after this clip").
            controls: a control provider (:mod:`longvie.longvideo.provider`) called per clip with the
                clips so far, instead of reading the clips' depth/track files.

        Raises:
            RunMismatchError: inputs or settings of finished clips changed.
            RunLockedError: another live process works on ``run_dir``.
            InputValidationError: placeholder prompts (unless allowed).
            NonFiniteOutputError: a clip came out NaN/Inf (it is not written; earlier clips are kept).
        """
        started = time.perf_counter()
        run = RunDir(run_dir)
        if not clips:
            raise ValueError("no clips to generate: the condition list is empty")
        if redo is not None and not 0 <= redo.clip < len(clips):
            raise ValueError(f"--redo {redo.clip}: the run has clips 0..{len(clips) - 1}")
        if not allow_placeholder_prompts and placeholder_problems(clips):
            raise InputValidationError(placeholder_problems(clips))
        with run.lock(), _log_to_file(run.log_path):
            logger.info("=== session started: %s (%d clips) ===", run.root, len(clips))
            for note in notes:
                logger.info("input: %s", note)
            manifest, first_pending = self._prepare(run, Path(image), clips, seed, redo, config, command, controls)
            self.finished_clips = first_pending
            generated = self._generate(run, manifest, Path(image), clips, first_pending, on_clip_done, on_step,
                                       on_preview=on_preview, stop_requested=stop_requested, controls=controls)
            stopped = self.finished_clips < len(clips)
            stitched = self.finished_clips if stopped else len(clips)
            video_path, num_frames = self._stitch(run, manifest, stitched)
            seconds = time.perf_counter() - started
            logger.info("video: %s (%d frames, %d clips); this session generated %d clip(s) in %.1f s",
                        video_path, num_frames, stitched, len(generated), seconds)
        return LongVideoResult(run_dir=run.root, video_path=video_path,
                               clip_paths=[run.clip_video_path(i) for i in range(len(clips))],
                               num_frames=num_frames, generated=generated, seconds=seconds, stopped=stopped)

    # ------------------------------------------------------------------------------------------
    def _prepare(self, run: RunDir, image: Path, clips: Sequence[ClipCondition], seed: int | None,
                 redo: RedoRequest | None, config: dict | None, command: str | None,
                 controls: Callable | None = None) -> tuple[dict, int]:
        """Load or create the manifest, apply ``redo``, check finished clips; returns the first clip to make."""
        settings = self.settings.recorded()
        manifest = run.load_manifest()
        if manifest is None:
            manifest = new_manifest(settings, self.settings.seed if seed is None else seed, config, command,
                                    _environment())
        else:
            manifest["config"], manifest["environment"] = config or manifest["config"], _environment()
            manifest["command"] = command or manifest["command"]
        if redo is not None and apply_redo(manifest, redo, settings):
            logger.info("redo from clip %d (seed %s, prompt %s)", redo.clip, redo.seed,
                        "new" if redo.text is not None else "from the condition list")

        hashes: dict[Path, str] = {}

        def file_info(path: Path) -> dict:
            if path not in hashes:
                hashes[path] = sha256_file(path)
            return {"path": str(path), "sha256": hashes[path]}

        image_info = file_info(image.resolve())
        sources = [{"text": c.text, **{k: {**file_info(getattr(c, k)), "found_by": c.found_by.get(k, "given")}
                                       for k in ("depth", "track")}} if controls is None else
                   {"text": c.text, **{k: provided_source(controls, c, k) for k in ("depth", "track")}}
                   for c in clips]
        first_pending, warnings = plan_resume(manifest, run, settings, seed, sources, image_info)
        for warning in warnings:
            logger.warning(warning)
        manifest["inputs"] = {"image": image_info, "num_clips": len(clips)}
        if first_pending > 0:
            logger.info("resuming: clips 0..%d are finished", first_pending - 1)
        run.save_manifest(manifest)
        return manifest, first_pending

    def _load_controls(self, clip: ClipCondition) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        try:
            dense, sparse = (fit_frames(read_video(path, max_frames=s.num_frames), s.height, s.width, s.resize)
                             for path in (clip.depth, clip.track))
        except ValueError as err:  # e.g. a stream that opened during validation but does not decode
            raise InputValidationError([f"clip {clip.index}: {err}"]) from None
        for name, video in (("depth", dense), ("track", sparse)):
            if len(video) != s.num_frames:
                raise ValueError(f"clip {clip.index} {name} video has {len(video)} frames, needs {s.num_frames}")
        return dense, sparse

    def _provided_controls(self, controls: Callable, run: RunDir, manifest: dict, index: int,
                           previous: ClipState | None) -> tuple[np.ndarray, np.ndarray]:
        """Clip ``index``'s controls from a provider, given the clips before it, brought to the run's size."""
        s = self.settings
        hashes = [manifest["clips"][i]["state_sha256"] for i in range(index)]
        finished = FinishedClips(lambda i: run.load_clip_state(i, hashes[i]).frames, hashes,
                                 None if previous is None else (index - 1, previous.frames))
        dense, sparse = (fit_frames(to_frame_array(v, name), s.height, s.width, s.resize)
                         for v, name in zip(controls(index, finished), ("depth", "track")))
        for name, video in (("depth", dense), ("track", sparse)):
            if len(video) != s.num_frames:
                raise ValueError(f"clip {index}: the control provider gave {len(video)} {name} frames, "
                                 f"needs {s.num_frames}")
        return dense, sparse

    def _generate(self, run: RunDir, manifest: dict, image: Path, clips: Sequence[ClipCondition],
                  start: int, on_clip_done: Callable[[int], None] | None,
                  on_step: Callable[[int, int, int], None] | None = None,
                  on_preview: Callable[[int, int, int, Any], None] | None = None,
                  stop_requested: Callable[[], bool] | None = None,
                  controls: Callable | None = None) -> list[int]:
        s = self.settings
        generated: list[int] = []
        if start >= len(clips):
            manifest["pending_redo"] = None
            return generated
        if start == 0:
            previous = None
        else:
            record = manifest["clips"][start - 1]
            previous = run.load_clip_state(start - 1, record["state_sha256"])
        extra = dict(self.pipe_kwargs)
        if s.negative_prompt is not None:
            extra["negative_prompt"] = s.negative_prompt
        step_cache = None
        if s.step_cache is not None:
            from ..acceleration.step_cache import StepCacheConfig

            step_cache = StepCacheConfig(kind=s.step_cache, threshold=s.step_cache_threshold,
                                         magcache_ratios=s.step_cache_ratios)
            extra["step_cache"] = step_cache
        elif getattr(self.pipe, "default_step_cache", None) is not None:
            extra["step_cache"] = False  # the run's settings say off: the pipeline's default must not apply
        if s.timesteps is not None:
            extra["timesteps"] = list(s.timesteps)
        mode_record = getattr(self.pipe, "mode_record", None)
        if mode_record is not None:  # what actually runs (acceleration.modes), the step cache from the settings
            record_modes(manifest, mode_record.as_dict(), None if step_cache is None else
                         {"kind": step_cache.kind, "threshold": step_cache.threshold})
        if hasattr(self.pipe, "set_vae_tiling"):  # the recorded setting, whatever the pipe was built with
            self.pipe.set_vae_tiling(s.vae_tiling)
        if hasattr(self.pipe, "cache_prompts"):  # every prompt of the session encoded once (one rank under torchrun)
            self.pipe.cache_prompts(self._session_prompts(manifest, start, len(clips)),
                                    release_text_encoder=self.release_text_encoder)
        final_latents_finite: list = []
        if "callback_on_step_end" in inspect.signature(self.pipe).parameters:
            def check_final_latents(pipe, step, timestep, tensors):
                # Only after the last step: one host sync per clip, none inside the denoising loop.
                if step == s.steps - 1:
                    import torch

                    final_latents_finite.append(bool(torch.isfinite(tensors["latents"]).all()))
                return None

            extra["callback_on_step_end"] = check_final_latents
        previews = on_preview is not None and \
            "callback_on_step_end_tensor_inputs" in inspect.signature(self.pipe).parameters

        clip_bar = tqdm(total=len(clips), initial=start, desc="clips", unit="clip", disable=not self.progress,
                        dynamic_ncols=True)
        try:
            for index in range(start, len(clips)):
                clip_started = time.perf_counter()
                inputs = manifest["clips"][index]["inputs"]
                dense, sparse = (self._load_controls(clips[index]) if controls is None
                                 else self._provided_controls(controls, run, manifest, index, previous))
                if previous is None:
                    first_image, history, noise = fit_frames(load_image(image), s.height, s.width, s.resize), None, None
                else:
                    first_image = Image.fromarray(previous.frames[-1])
                    history = previous.frames[-s.history_frames:]
                    noise = previous.noise
                if inputs["noise_seed"] is not None:  # clip 0, or a clip re-seeded by --redo
                    noise = None
                step_hook = {}
                if on_step is not None or previews:
                    check = extra.get("callback_on_step_end")

                    def after_step(pipe, step, timestep, tensors, clip=index, check=check):
                        if check is not None:
                            check(pipe, step, timestep, tensors)
                        if previews and "x0" in tensors:
                            on_preview(clip, step + 1, s.steps, tensors["x0"])
                        if on_step is not None:
                            on_step(clip, step + 1, s.steps)

                    step_hook = {"callback_on_step_end": after_step}
                    if previews:
                        step_hook["callback_on_step_end_tensor_inputs"] = ("latents", "x0")
                frames, clip_noise = self.pipe(
                    first_image, inputs["text"], dense, sparse, history=history, noise=noise,
                    num_frames=s.num_frames, height=s.height, width=s.width, num_inference_steps=s.steps,
                    guidance_scale=s.cfg, shift=s.shift,
                    seed=inputs["noise_seed"] if inputs["noise_seed"] is not None else manifest["seed"],
                    progress=self.progress, **{**extra, **step_hook})
                self._check_finite(index, final_latents_finite, clip_noise)
                final_latents_finite.clear()
                frames = to_frame_array(frames)
                if frames.shape != (s.num_frames, s.height, s.width, 3):
                    raise RuntimeError(f"the pipeline returned frames of shape {frames.shape}, expected "
                                       f"{(s.num_frames, s.height, s.width, 3)}")

                # Commit order: lossless state, mp4, then the manifest (the commit point).
                state_sha256 = run.save_clip_state(index, frames, clip_noise, {"clip": index})
                run.write_clip_video(index, frames, s.fps)
                seconds = time.perf_counter() - clip_started
                mark_clip_done(manifest, run, index, state_sha256, len(frames), seconds)
                if mode_record is not None:
                    manifest["clips"][index]["modes"] = manifest["modes"]["summary"]
                if index == len(clips) - 1:
                    manifest["pending_redo"] = None
                run.save_manifest(manifest)
                generated.append(index)
                logger.info("clip %d done (%d of %d) in %.1f s -> %s", index, index + 1, len(clips), seconds,
                            run.clip_video_path(index))
                previous = ClipState(frames=frames, noise=clip_noise)
                self.finished_clips = index + 1
                clip_bar.update(1)
                if on_clip_done is not None:
                    on_clip_done(index)
                if stop_requested is not None and index < len(clips) - 1 and stop_requested():
                    logger.info("stopped after clip %d on request; clips %d..%d are pending (resume continues)",
                                index, index + 1, len(clips) - 1)
                    break
        finally:
            clip_bar.close()
        return generated

    def _session_prompts(self, manifest: dict, start: int, stop: int) -> list[str]:
        """The prompts clips ``start..stop-1`` will use, and the negative prompt when guidance is on."""
        texts = [manifest["clips"][index]["inputs"]["text"] for index in range(start, stop)]
        if self.settings.cfg != 1.0:
            from ..sampling.pipeline import WAN_NEGATIVE_PROMPT

            texts.append(self.settings.negative_prompt if self.settings.negative_prompt is not None
                         else WAN_NEGATIVE_PROMPT)
        return texts

    def _check_finite(self, index: int, final_latents_finite: list, clip_noise) -> None:
        """Refuse a clip whose final latents (or noise) hold NaN/Inf: decoding them gives garbage frames."""
        import torch

        bad = [] if all(final_latents_finite) else ["its final latents"]
        if clip_noise is not None and not bool(torch.isfinite(clip_noise).all()):
            bad.append("its initial noise")
        if bad:
            s = self.settings
            raise NonFiniteOutputError(
                f"clip {index}: {' and '.join(bad)} contain NaN or infinite values, so clip {index} was not "
                f"written (clips before it are kept). Likely causes: extreme settings (cfg {s.cfg}, shift "
                f"{s.shift}, {s.steps} steps; the release uses 5.0, 5.0, 50), a dtype the weights overflow in "
                f"({s.dtype}), or damaged weights (check them with `python download_wan2.1.py --check-only --deep`)")

    def _stitch(self, run: RunDir, manifest: dict, num_clips: int) -> tuple[Path, int]:
        """(Re)write video.mp4 unless it already holds exactly these clips; repair missing clip mp4s."""
        records = manifest["clips"][:num_clips]
        num_frames = sum(r["frames"] for r in records) - (num_clips - 1)
        wanted = {"path": run.relative(run.video_path), "clips": num_clips, "frames": num_frames,
                  "fps": self.settings.fps, "state_sha256": [r["state_sha256"] for r in records]}
        missing_clip_videos = [r["index"] for r in records if not run.clip_video_path(r["index"]).is_file()]
        if manifest.get("video") == wanted and run.video_path.is_file() and not missing_clip_videos:
            return run.video_path, num_frames

        def clip_frames() -> Iterator[np.ndarray]:
            for record in records:
                frames = run.load_clip_state(record["index"], record["state_sha256"]).frames
                if record["index"] in missing_clip_videos:
                    logger.info("re-encoding missing %s from its state", run.clip_video_path(record["index"]))
                    run.write_clip_video(record["index"], frames, self.settings.fps)
                yield frames

        write_video(run.video_path, stitch_clips(clip_frames()), fps=self.settings.fps)
        manifest["video"] = wanted
        run.save_manifest(manifest)
        return run.video_path, num_frames
