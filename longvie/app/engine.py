"""The app's jobs, without any UI: new runs, resume, redo, control extraction, cancel.

Every job is a generator of :class:`JobEvent` (status lines, denoising steps, previews, finished
clips, the end), so a consumer can show progress while the work runs in a background thread. Jobs
run one at a time (one GPU); :class:`longvie.app.jobs.JobManager` queues them for the page, away
from any browser request. Generation is :class:`longvie.longvideo.LongVideoSampler` on a run
directory (resumable, atomic commits), with its ``on_step`` hook for per-step progress and for
cancelling after the current step (the clip in progress is then not committed, and resuming the run
generates it again), ``on_preview`` for the live preview of the clip being denoised, and
``stop_requested`` for "stop after this clip". A :class:`JobControl` carries a job's cancel and
stop requests.

Bad input never raises out of a job: it ends the job with an ``error`` event whose message names
the file and the fix (unexpected faults too, as one line; the traceback goes to the server log).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import queue
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..longvideo.cli import (
    build_parser,
    check_model_dirs,
    model_identity,
    pipeline_loader,
    plan_run_modes,
    resolve_config,
    run_settings,
)
from ..longvideo.run_state import RedoRequest, RunDir, RunLockedError, RunMismatchError
from ..longvideo.sampler import LongVideoSampler, LongVideoSettings
from ..longvideo.validation import InputValidationError, check_clip_settings, validate_inputs
from .extraction import ExtractionOptions, extract_controls
from .inputs import AppInputError, stage_condition_folder
from .preview import preview_every, preview_strip
from .runs import INPUTS_DIR, run_inputs, zip_run

__all__ = ["JobCancelled", "JobEvent", "JobControl", "GenerationRequest", "PreparedRun", "ClipView", "Studio",
           "OFFLOAD_MODES", "apply_loras", "check_loras"]

logger = logging.getLogger("longvie.app")
OFFLOAD_MODES = ("none", "model", "group")


class JobCancelled(Exception):
    """Raised from the step hook when the user pressed cancel (stops after the current step)."""


@dataclass
class JobEvent:
    """One thing that happened in a job.

    kind: "status" (a line of text), "step" (clip, step, steps), "preview" (``image``: the live
    preview of ``clip`` after ``step``), "clip" (clip finished), "done" (``video`` written),
    "stopped" (stopped after a clip on request; ``video`` holds the finished clips), "cancelled",
    or "error" (``message`` for the page). Clip numbers start at 0.
    """

    kind: str
    message: str = ""
    run_dir: Path | None = None
    clip: int | None = None
    step: int | None = None
    steps: int | None = None
    num_clips: int | None = None
    video: Path | None = None
    stage: str | None = None  # extraction stage
    folder: Path | None = None  # extraction output
    image: Any = None  # "preview": uint8 (H, W, 3)

    @property
    def final(self) -> bool:
        return self.kind in ("done", "stopped", "cancelled", "error")


@dataclass
class JobControl:
    """Requests to a running job: ``cancel`` (stop after the current denoising step; the clip in
    progress is not kept) and ``stop_after_clip`` (finish the clip in progress, then stop)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    stop_after_clip: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenerationRequest:
    """A new run from the page: inputs, prompts and the settings the user may change."""

    image: str | Path | None
    depth: Sequence[str | Path]
    track: Sequence[str | Path]
    texts: Sequence[str]
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    offload: str | None = None
    name: str | None = None
    loras: Sequence[str] = ()  # "PATH[:SCALE]" each (``--lora`` of the sample CLI)
    owner: str | None = None  # recorded in the run folder (longvie.app.access.write_owner)


@dataclass
class PreparedRun:
    """A new run whose inputs are checked and copied into its folder, ready to generate."""

    run_dir: Path
    settings: LongVideoSettings
    clips: list
    image: Path
    notes: list[str]
    offload: str
    loras: tuple[str, ...] = ()


@dataclass
class ClipView:
    """What the page shows for one clip: its prompt and controls, and the clip once generated."""

    index: int
    text: str
    depth: Path
    track: Path
    video: Path | None = None  # None until the clip is finished
    version: str = ""  # changes when the clip is regenerated (cache-busting for the browser)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:60]


def _as_int(value, name: str, problems: list[str]) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} {value!r}: not a number")
        return None
    if number != int(number):
        problems.append(f"{name} {value!r}: must be a whole number")
        return None
    return int(number)


@dataclass
class Studio:
    """The app's state: the resolved config, the loaded pipeline, the output folder, the running job.

    Args:
        config: a config name (``longvie2_i2v_14b``, ``tiny``) or YAML path, as ``python -m longvie.sample``.
        outputs: where run directories are created and listed.
        device: torch device (default: cuda when available; cpu for tiny).
        step_delay: seconds to wait after each denoising step (demos and the browser test, which
            must see a clip appear while the next one is still running).
        previews: emit a live preview of the clip being denoised every few steps.
    """

    config_name: str = "longvie2_i2v_14b"
    outputs: Path = Path("outputs/app")
    device: str | None = None
    step_delay: float = 0.0
    previews: bool = True
    config: dict = field(init=False)
    pipes: dict = field(init=False, default_factory=dict)  # loaded pipeline by memory mode (one at a time)
    _busy: threading.Lock = field(init=False, default_factory=threading.Lock)
    _loading: threading.Lock = field(init=False, default_factory=threading.Lock)
    _cancel: threading.Event | None = field(init=False, default=None)

    def __post_init__(self):
        self.outputs = Path(self.outputs)
        self.config = resolve_config(build_parser().parse_args(["--config", str(self.config_name)]))

    # ------------------------------------------------------------------ settings
    @property
    def sampling(self) -> dict:
        return self.config["sampling"]

    def weight_problems(self) -> list[str]:
        """Missing or incomplete weight folders of the config (none for the tiny preset)."""
        return check_model_dirs(self.config)

    def settings(self, seed: int = 0, offload: str | None = None, **overrides) -> LongVideoSettings:
        """The sampler settings of this config with the page's overrides (None keeps the config's), built as the
        sample CLI builds them (``longvideo.cli.run_settings``): FP8 and its kind as the loaded pipeline will
        run them (the modes planned for this device, with ``offload`` or the config's), the step cache, VAE
        tiling, the schedule and the config's LoRAs. Raises ``ModeError`` for modes that cannot run here."""
        config = {**self.config, "sampling": {**self.sampling,
                                              **{k: v for k, v in overrides.items() if v is not None}}}
        if offload is not None:
            config["offload"] = offload
        return run_settings(config, plan_run_modes(config, self.device), seed=seed)

    def settings_of_run(self, manifest: dict) -> LongVideoSettings:
        """A run's recorded settings with this app's model identity (a run made with other weights is
        then reported as such by the sampler, not continued)."""
        names = {f.name for f in fields(LongVideoSettings)} - {"model", "dtype", "seed"}
        recorded = {k: v for k, v in (manifest.get("settings") or {}).items() if k in names}
        return LongVideoSettings(**recorded, model=model_identity(self.config), dtype=self.config["dtype"],
                                 seed=int(manifest.get("seed", 0)))

    # ------------------------------------------------------------------ pipeline
    def _load_pipe(self, offload: str, loras: Sequence[str] = ()):
        loras = tuple(loras)
        key = (offload, loras) if loras else offload
        with self._loading:  # a job waits for a preload in progress instead of loading a second copy
            if key not in self.pipes:
                self.pipes.clear()  # one model in memory at a time
                config = {**self.config, "offload": offload, **({"loras": list(loras)} if loras else {})}
                pipe = pipeline_loader(config, self.device)()
                # A loader that fuses the config's LoRAs itself records them on the denoiser: not twice.
                fused = getattr(getattr(pipe, "denoiser", None), "_longvie_loras", None)
                if loras and not fused and getattr(pipe, "longvie_app_loras", ()) != loras:
                    apply_loras(pipe, loras, self.config.get("model"))
                    pipe.longvie_app_loras = loras
                self.pipes[key] = pipe
            return self.pipes[key]

    def preload(self, offload: str | None = None) -> threading.Thread | None:
        """Load the pipeline in a background thread (so the first job does not wait for it); None
        when the weights are missing. A failure is only logged: the first job reports it."""
        if self.weight_problems():
            return None
        offload = offload or self.config.get("offload") or "none"

        def load():
            try:
                self._load_pipe(offload)
            except Exception:  # noqa: BLE001 - the first job shows the message in the page
                logger.exception("preloading the model failed")

        thread = threading.Thread(target=load, name="longvie-app-preload", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ jobs
    def cancel(self) -> str:
        """Ask the running job to stop after its current denoising step."""
        if self._cancel is None:
            return "No job is running."
        self._cancel.set()
        return "Cancelling: the job stops after the current denoising step (the run can be resumed)."

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def _stream(self, work: Callable[[Callable[[JobEvent], None], JobControl], JobEvent],
                control: JobControl | None = None) -> Iterator[JobEvent]:
        """Run ``work(emit, control)`` in a thread, one job at a time; yield its events as they come.

        ``work`` returns the final event. Known input errors become ``error`` events with their
        message; anything else too, as one line (the traceback is logged).
        """
        control = control or JobControl()
        if not self._busy.acquire(blocking=False):
            yield JobEvent("status", "Waiting for the running job to finish ...")
            self._busy.acquire()
        events: queue.Queue[JobEvent] = queue.Queue()
        cancel = control.cancel
        self._cancel = cancel

        def target():
            try:
                events.put(work(events.put, control))
            except JobCancelled:
                events.put(JobEvent("cancelled", "Cancelled after the current step. The finished clips are kept; "
                                                 "resume the run from Past runs."))
            except Exception as err:  # noqa: BLE001 - every fault ends as a message in the page
                events.put(JobEvent("error", describe_error(err)))
                if not isinstance(err, KNOWN_ERRORS):
                    logger.exception("job failed")

        thread = threading.Thread(target=target, name="longvie-app-job", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                yield event
                if event.final:
                    break
        finally:
            if thread.is_alive():  # the consumer went away: stop after the current step
                cancel.set()
                thread.join()
            self._cancel = None
            self._busy.release()

    def _generate(self, run_dir: Path, settings: LongVideoSettings, image: Path, clips, offload: str,
                  emit: Callable[[JobEvent], None], control: JobControl, seed: int | None = None,
                  redo: RedoRequest | None = None, config: dict | None = None, notes: Sequence[str] = (),
                  loras: Sequence[str] = ()) -> JobEvent:
        num_clips = len(clips)
        loras = tuple(loras)
        if loras:  # each LoRA's sha256 and scale are settings of the run: a resume with another set is refused
            from dataclasses import replace

            from ..longvideo.loras import lora_records

            settings = replace(settings, loras=lora_records(check_loras(loras, self.config.get("model")))[0])
        on_step, on_preview, on_clip_done = sampler_hooks(self, run_dir, num_clips, settings.steps, emit, control)

        loaded = (offload, loras) if loras else offload
        emit(JobEvent("status", "Loading the model ..." if loaded not in self.pipes else "Starting ...",
                      run_dir=run_dir, num_clips=num_clips))
        sampler = LongVideoSampler(settings, load_pipe=lambda: self._load_pipe(offload, loras), progress=False)
        config = {**self.config, "offload": offload, **(config or {}), "image": str(image),
                  **({"loras": list(loras)} if loras else {})}
        result = sampler(run_dir, image, clips, seed=seed, redo=redo, config=config,
                         command="python -m longvie.app", notes=notes, on_clip_done=on_clip_done, on_step=on_step,
                         on_preview=on_preview if self.previews else None,
                         stop_requested=control.stop_after_clip.is_set)
        if result.stopped:
            done = sampler.finished_clips
            return JobEvent("stopped", f"Stopped after clip {done - 1}, as asked: clips 0..{done - 1} of "
                                       f"{num_clips} are finished ({result.num_frames} frames). Resume continues "
                                       f"with clip {done}.",
                            run_dir=run_dir, video=result.video_path, num_clips=num_clips)
        return JobEvent("done", f"Finished: {result.num_frames} frames from {num_clips} clip(s) "
                                f"({len(result.generated)} generated now, {result.seconds:.1f} s).",
                        run_dir=run_dir, video=result.video_path, num_clips=num_clips)

    def new_run(self, request: GenerationRequest, control: JobControl | None = None) -> Iterator[JobEvent]:
        """Validate the page's inputs, copy them into a new run directory, and generate it."""

        def work(emit, control) -> JobEvent:
            return self._run_prepared(self.prepare_new_run(request), emit, control)

        return self._stream(work, control)

    def run_prepared(self, prepared: PreparedRun, control: JobControl | None = None) -> Iterator[JobEvent]:
        """Generate a run made by :meth:`prepare_new_run` (the page prepares when the user clicks
        Generate, and the job generates when its turn in the queue comes)."""
        return self._stream(lambda emit, control: self._run_prepared(prepared, emit, control), control)

    def _run_prepared(self, prepared: PreparedRun, emit, control: JobControl) -> JobEvent:
        return self._generate(prepared.run_dir, prepared.settings, prepared.image, prepared.clips, prepared.offload,
                              emit, control, config={"cond": str(prepared.run_dir / INPUTS_DIR / "cond.json")},
                              notes=prepared.notes, loras=prepared.loras)

    def discard(self, prepared: PreparedRun) -> None:
        """Remove a prepared run that never started (cancelled while queued): nothing was generated."""
        if RunDir(prepared.run_dir).load_manifest() is None:
            shutil.rmtree(prepared.run_dir, ignore_errors=True)

    def prepare_new_run(self, request: GenerationRequest) -> PreparedRun:
        """Check a new run's inputs and copy them into its run folder (``inputs/``).

        Raises:
            AppInputError: anything unusable (every problem at once, file names only).
        """
        problems = list(self.weight_problems())
        numbers = {name: _as_int(getattr(request, name), name, problems)
                   for name in ("seed", "steps", "height", "width", "num_frames")}
        cfg = request.cfg
        if cfg is not None:
            try:
                cfg = float(cfg)
            except (TypeError, ValueError):
                problems.append(f"CFG {cfg!r}: not a number")
        offload = request.offload or self.config.get("offload") or "none"
        if offload not in OFFLOAD_MODES:
            problems.append(f"memory mode {offload!r}: must be one of {', '.join(OFFLOAD_MODES)}")
        if problems:
            raise AppInputError(problems)
        if numbers["steps"] is not None and numbers["steps"] < 1:
            problems.append(f"steps {numbers['steps']}: must be at least 1")
        settings_overrides = dict(steps=numbers["steps"], cfg=cfg, height=numbers["height"], width=numbers["width"],
                                  num_frames=numbers["num_frames"])
        from ..acceleration.modes import ModeError

        try:
            settings = self.settings(seed=numbers["seed"] or 0, offload=offload, **settings_overrides)
        except ModeError as err:  # a mode of the config that cannot run on this device: before any model loads
            raise AppInputError([str(err)]) from None
        problems += check_clip_settings(settings.num_frames, settings.height, settings.width,
                                        settings.history_frames, settings.resize)
        if request.loras:
            try:
                check_loras(request.loras, self.config.get("model"))
            except AppInputError as err:
                problems += err.problems
        if problems:
            raise AppInputError(problems)

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = _slug(request.name or "") or f"run-{stamp}-{uuid.uuid4().hex[:4]}"
        run_dir = self.outputs / name
        if run_dir.exists():
            raise AppInputError([f"run name {name}: already taken — pick another name (or resume or redo that "
                                 "run from Past runs)"])
        try:
            cond = stage_condition_folder(run_dir / INPUTS_DIR, request.image, request.depth, request.track,
                                          request.texts)
            try:
                validated = validate_inputs(next((run_dir / INPUTS_DIR).glob("first.*")), cond,
                                            num_frames=settings.num_frames, height=settings.height,
                                            width=settings.width, resize=settings.resize,
                                            num_clips=len(request.texts), history_frames=settings.history_frames,
                                            progress=False)
            except InputValidationError as err:  # the run's own copies: name the files, not the server folder
                inputs = str((run_dir / INPUTS_DIR).resolve()) + "/"
                raise AppInputError([p.replace(inputs, "").replace(str(run_dir / INPUTS_DIR) + "/", "")
                                     for p in err.problems]) from None
            if request.owner:
                from .access import write_owner

                write_owner(run_dir, request.owner)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was generated: leave no empty run behind
            raise
        return PreparedRun(run_dir, settings, validated.clips, validated.image, validated.notes, offload,
                           tuple(str(x) for x in request.loras or ()))

    def resume(self, run_dir: str | Path, offload: str | None = None,
               control: JobControl | None = None) -> Iterator[JobEvent]:
        """Continue a run after its last finished clip (and re-stitch it)."""
        return self._stream(lambda emit, control: self._continue(Path(run_dir), offload, None, emit, control),
                            control)

    def redo(self, run_dir: str | Path, clip: int, seed: int | None = None, text: str | None = None,
             offload: str | None = None, control: JobControl | None = None) -> Iterator[JobEvent]:
        """Regenerate clip ``clip`` (new seed and/or prompt) and every clip after it."""

        def work(emit, control) -> JobEvent:
            return self._continue(Path(run_dir), offload, (clip, seed, text), emit, control)

        return self._stream(work, control)

    def _continue(self, run_dir: Path, offload: str | None, redo, emit, control) -> JobEvent:
        problems = list(self.weight_problems())
        if problems:
            raise AppInputError(problems)
        manifest = RunDir(run_dir).load_manifest()
        if manifest is None:
            raise AppInputError([f"{run_dir}: not a run directory (no manifest.json) — pick a run from the list"])
        image, clips = run_inputs(run_dir)
        request = None
        if redo is not None:
            clip, seed, text = redo
            problems = []
            clip = _as_int(clip, "clip", problems)
            seed = _as_int(seed, "seed", problems)
            text = (text or "").strip() or None
            if clip is not None and not 0 <= clip < len(clips):
                problems.append(f"clip {clip}: the run has clips 0..{len(clips) - 1}")
            if clip is None and not problems:
                problems.append("clip: give the number of the clip to regenerate")
            if problems:
                raise AppInputError(problems)
            request = RedoRequest(clip, seed=seed, text=text)
        recorded = manifest.get("config") or {}
        offload = offload or recorded.get("offload") or self.config.get("offload") or "none"
        return self._generate(run_dir, self.settings_of_run(manifest), image, clips, offload, emit, control,
                              redo=request, config={"cond": recorded.get("cond")}, loras=recorded.get("loras") or ())

    def extract(self, video: str | Path | None, options: ExtractionOptions, control: JobControl | None = None,
                owner: str | None = None) -> Iterator[JobEvent]:
        """A driving video -> a condition folder under ``outputs/.controls`` (stage progress events)."""

        def work(emit, control) -> JobEvent:
            problems = []
            from .inputs import VIDEO_SUFFIXES, check_suffix

            if video is None:
                problems.append("driving video: missing — upload a video (at least 81 frames)")
            problems += check_suffix(video, VIDEO_SUFFIXES, "driving video")
            if options.depth_npy:
                problems += check_suffix(options.depth_npy, (".npy",), "disparity")
            if problems:
                raise AppInputError(problems)
            folder = self.outputs / ".controls" / f"{_slug(Path(video).stem)}-{uuid.uuid4().hex[:6]}"

            def progress(stage: str, done: int, total: int) -> None:
                emit(JobEvent("step", f"{stage}: {done}/{total}", stage=stage, step=done, steps=total))
                if control.cancel.is_set():
                    raise JobCancelled

            try:
                cond = extract_controls(video, folder, options, progress=progress,
                                        log=lambda line: emit(JobEvent("status", line)))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            if owner:
                from .access import write_owner

                write_owner(cond.parent, owner)
            return JobEvent("done", f"Controls extracted ({folder.name}). Replace the placeholder prompts, then "
                                    "generate.", folder=cond.parent)

        return self._stream(work, control)

    def zip(self, run_dir: str | Path) -> Path:
        """The run folder as a zip under ``outputs/.downloads`` (for the page's download link)."""
        return zip_run(run_dir, self.outputs / ".downloads")

    def clip_views(self, run_dir: str | Path) -> list[ClipView]:
        """Per clip: prompt, depth and track videos, and the generated clip when finished."""
        run = RunDir(run_dir)
        with contextlib.suppress(ValueError):
            manifest = run.load_manifest()
            if manifest is not None:
                views = []
                records = manifest.get("clips") or []
                num_clips = int((manifest.get("inputs") or {}).get("num_clips") or len(records))
                for index, record in enumerate(records[:num_clips]):
                    inputs = (record or {}).get("inputs") or {}
                    if not inputs.get("depth"):
                        continue
                    done = record.get("status") == "done" and run.clip_video_path(index).is_file()
                    views.append(ClipView(index, inputs.get("text", ""), Path(inputs["depth"]["path"]),
                                          Path(inputs["track"]["path"]),
                                          run.clip_video_path(index) if done else None,
                                          str(record.get("state_sha256", ""))[:12] if done else ""))
                return views
        return []


def _lora_library():
    try:
        from ..weights import lora as lora_library
    except ImportError:
        raise AppInputError(["LoRA: this installation cannot load LoRA files yet — remove the LoRA rows to "
                             "generate without them"]) from None
    return lora_library


def check_loras(loras: Sequence[str], model_config: dict | None = None) -> list:
    """The LoRA specs of ``"PATH[:SCALE]"`` strings (as ``--lora``), checked by the LoRA library
    (:mod:`longvie.weights.lora`; from the files' headers, against ``model_config``, the config's
    ``model`` section, None for the release) before the job is queued. Raises :class:`AppInputError`."""
    lora_library = _lora_library()
    try:
        specs = [lora_library.parse_lora_arg(str(text)) for text in loras]
        problems = lora_library.check_lora_files(specs, model_config)
    except (ValueError, FileNotFoundError) as err:
        raise AppInputError([f"LoRA: {err}"]) from None
    if problems:
        raise AppInputError([f"LoRA: {p}" for p in problems])
    return specs


def apply_loras(pipe, loras: Sequence[str], model_config: dict | None = None) -> None:
    """Fuse LoRAs (``"PATH[:SCALE]"`` each, as ``--lora``) into a loaded pipeline's denoiser, through
    the LoRA library; a clear message where this installation has none."""
    _lora_library().load_loras(pipe.denoiser, check_loras(loras, model_config or pipe.denoiser))


KNOWN_ERRORS: tuple = (AppInputError, InputValidationError, RunMismatchError, RunLockedError, ValueError,
                       FileNotFoundError, RuntimeError)


def describe_error(err: BaseException) -> str:
    """The page's message for an error: the library's own text for known ones (they name the file
    and the fix), one line for anything else."""
    from ..weights.files import WeightsError

    if isinstance(err, (AppInputError, InputValidationError)):
        return "\n".join(f"- {p}" for p in err.problems)
    if isinstance(err, (RunMismatchError, RunLockedError, WeightsError, ValueError, FileNotFoundError)):
        return str(err)
    if isinstance(err, RuntimeError):
        if "out of memory" in str(err).lower():
            return (f"Out of GPU memory ({str(err).splitlines()[0]}). Choose memory mode 'model' or 'group', or a "
                    "smaller resolution, and resume the run.")
        return str(err)
    return f"Internal error ({type(err).__name__}: {err}). The details are in the server log."


def sampler_hooks(studio: Studio, run_dir: Path, num_clips: int, steps: int, emit, control: JobControl):
    """``on_step`` (progress, step delay, cancel), ``on_preview`` and ``on_clip_done`` for a sampler run of a
    job: the main tab's runs (:meth:`Studio._generate`) and the camera tab's (``app.camera``)."""
    every = preview_every(steps)

    def on_step(clip: int, step: int, steps: int) -> None:
        emit(JobEvent("step", run_dir=run_dir, clip=clip, step=step, steps=steps, num_clips=num_clips))
        if studio.step_delay:
            time.sleep(studio.step_delay)
        if control.cancel.is_set():
            logger.info("cancelled from the page during clip %d after step %d/%d; clip %d is not kept",
                        clip, step, steps, clip)
            raise JobCancelled

    def on_preview(clip: int, step: int, steps: int, x0) -> None:
        if step % every and step != steps:
            return
        try:
            image = preview_strip(x0)
        except ValueError:
            return
        emit(JobEvent("preview", run_dir=run_dir, clip=clip, step=step, steps=steps, num_clips=num_clips,
                      image=image))

    def on_clip_done(clip: int) -> None:
        emit(JobEvent("clip", f"clip {clip} finished ({clip + 1} of {num_clips})", run_dir=run_dir, clip=clip,
                      num_clips=num_clips))

    return on_step, on_preview, on_clip_done
