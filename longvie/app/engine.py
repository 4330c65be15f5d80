"""The app's jobs, without any UI: new runs, resume, redo, control extraction, cancel.

Every job is a generator of :class:`JobEvent` (status lines, denoising steps, finished clips, the
end), so the page can show progress while the work runs in a background thread. Jobs run one at a
time (one GPU); the page's queue orders them. Generation is
:class:`longvie.longvideo.LongVideoSampler` on a run directory (resumable, atomic commits), with
its ``on_step`` hook for per-step progress and for cancelling after the current step: the clip in
progress is then not committed, and resuming the run generates it again.

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
from typing import Callable, Iterator, Sequence

from ..longvideo.cli import build_parser, check_model_dirs, model_identity, pipeline_loader, resolve_config
from ..longvideo.run_state import RedoRequest, RunDir, RunLockedError, RunMismatchError
from ..longvideo.sampler import LongVideoSampler, LongVideoSettings
from ..longvideo.validation import InputValidationError, check_clip_settings, validate_inputs
from .extraction import ExtractionOptions, extract_controls
from .inputs import AppInputError, stage_condition_folder
from .runs import INPUTS_DIR, run_inputs, zip_run

__all__ = ["JobCancelled", "JobEvent", "GenerationRequest", "ClipView", "Studio", "OFFLOAD_MODES"]

logger = logging.getLogger("longvie.app")
OFFLOAD_MODES = ("none", "model", "group")


class JobCancelled(Exception):
    """Raised from the step hook when the user pressed cancel (stops after the current step)."""


@dataclass
class JobEvent:
    """One thing that happened in a job.

    kind: "status" (a line of text), "step" (clip, step, steps), "clip" (clip finished), "done"
    (``video`` written), "cancelled", or "error" (``message`` for the page).
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

    @property
    def final(self) -> bool:
        return self.kind in ("done", "cancelled", "error")


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
    """

    config_name: str = "longvie2_i2v_14b"
    outputs: Path = Path("outputs/app")
    device: str | None = None
    step_delay: float = 0.0
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

    def settings(self, seed: int = 0, **overrides) -> LongVideoSettings:
        """The sampler settings of this config with the page's overrides (None keeps the config's)."""
        s = {**self.sampling, **{k: v for k, v in overrides.items() if v is not None}}
        return LongVideoSettings(
            num_frames=int(s["num_frames"]), height=int(s["height"]), width=int(s["width"]), steps=int(s["steps"]),
            cfg=float(s["cfg"]), shift=float(s["shift"]), history_frames=int(s["history_frames"]),
            resize=s["resize"], negative_prompt=s["negative_prompt"], fps=int(s["fps"]),
            model=model_identity(self.config), dtype=self.config["dtype"], seed=int(seed))

    def settings_of_run(self, manifest: dict) -> LongVideoSettings:
        """A run's recorded settings with this app's model identity (a run made with other weights is
        then reported as such by the sampler, not continued)."""
        names = {f.name for f in fields(LongVideoSettings)} - {"model", "dtype", "seed"}
        recorded = {k: v for k, v in (manifest.get("settings") or {}).items() if k in names}
        return LongVideoSettings(**recorded, model=model_identity(self.config), dtype=self.config["dtype"],
                                 seed=int(manifest.get("seed", 0)))

    # ------------------------------------------------------------------ pipeline
    def _load_pipe(self, offload: str):
        with self._loading:  # a job waits for a preload in progress instead of loading a second copy
            if offload not in self.pipes:
                self.pipes.clear()  # one model in memory at a time
                config = {**self.config, "offload": offload}
                self.pipes[offload] = pipeline_loader(config, self.device)()
            return self.pipes[offload]

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

    def _stream(self, work: Callable[[Callable[[JobEvent], None], threading.Event], JobEvent]) -> Iterator[JobEvent]:
        """Run ``work(emit, cancel)`` in a thread, one job at a time; yield its events as they come.

        ``work`` returns the final event. Known input errors become ``error`` events with their
        message; anything else too, as one line (the traceback is logged).
        """
        if not self._busy.acquire(blocking=False):
            yield JobEvent("status", "Waiting for the running job to finish ...")
            self._busy.acquire()
        events: queue.Queue[JobEvent] = queue.Queue()
        cancel = threading.Event()
        self._cancel = cancel

        def target():
            try:
                events.put(work(events.put, cancel))
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
            if thread.is_alive():  # the page went away: stop after the current step
                cancel.set()
                thread.join()
            self._cancel = None
            self._busy.release()

    def _generate(self, run_dir: Path, settings: LongVideoSettings, image: Path, clips, offload: str,
                  emit: Callable[[JobEvent], None], cancel: threading.Event, seed: int | None = None,
                  redo: RedoRequest | None = None, config: dict | None = None, notes: Sequence[str] = ()) -> JobEvent:
        num_clips = len(clips)

        def on_step(clip: int, step: int, steps: int) -> None:
            emit(JobEvent("step", run_dir=run_dir, clip=clip, step=step, steps=steps, num_clips=num_clips))
            if self.step_delay:
                time.sleep(self.step_delay)
            if cancel.is_set():  # logged into run.log too (the sampler's file handler is on "longvie")
                logger.info("cancelled from the page during clip %d after step %d/%d; clip %d is not kept",
                            clip, step, steps, clip)
                raise JobCancelled

        def on_clip_done(clip: int) -> None:
            emit(JobEvent("clip", f"clip {clip + 1}/{num_clips} finished", run_dir=run_dir, clip=clip,
                          num_clips=num_clips))

        emit(JobEvent("status", "Loading the model ..." if offload not in self.pipes else "Starting ...",
                      run_dir=run_dir, num_clips=num_clips))
        sampler = LongVideoSampler(settings, load_pipe=lambda: self._load_pipe(offload), progress=False)
        config = {**self.config, "offload": offload, **(config or {}), "image": str(image)}
        result = sampler(run_dir, image, clips, seed=seed, redo=redo, config=config,
                         command="python -m longvie.app", notes=notes, on_clip_done=on_clip_done, on_step=on_step)
        return JobEvent("done", f"Finished: {result.num_frames} frames from {num_clips} clip(s) "
                                f"({len(result.generated)} generated now, {result.seconds:.1f} s).",
                        run_dir=run_dir, video=result.video_path, num_clips=num_clips)

    def new_run(self, request: GenerationRequest) -> Iterator[JobEvent]:
        """Validate the page's inputs, copy them into a new run directory, and generate it."""

        def work(emit, cancel) -> JobEvent:
            run_dir, settings, clips, image, notes, offload = self._prepare_new_run(request)
            return self._generate(run_dir, settings, image, clips, offload, emit, cancel,
                                  config={"cond": str(run_dir / INPUTS_DIR / "cond.json")}, notes=notes)

        return self._stream(work)

    def _prepare_new_run(self, request: GenerationRequest):
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
        settings = self.settings(seed=numbers["seed"] or 0, **settings_overrides)
        problems += check_clip_settings(settings.num_frames, settings.height, settings.width,
                                        settings.history_frames, settings.resize)
        if problems:
            raise AppInputError(problems)

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = _slug(request.name or "") or f"run-{stamp}-{uuid.uuid4().hex[:4]}"
        run_dir = self.outputs / name
        if run_dir.exists():
            raise AppInputError([f"run {name}: already exists in {self.outputs} — pick another name, or resume or "
                                 "redo it from Past runs"])
        try:
            cond = stage_condition_folder(run_dir / INPUTS_DIR, request.image, request.depth, request.track,
                                          request.texts)
            validated = validate_inputs(next((run_dir / INPUTS_DIR).glob("first.*")), cond,
                                        num_frames=settings.num_frames, height=settings.height, width=settings.width,
                                        resize=settings.resize, num_clips=len(request.texts),
                                        history_frames=settings.history_frames)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was generated: leave no empty run behind
            raise
        return run_dir, settings, validated.clips, validated.image, validated.notes, offload

    def resume(self, run_dir: str | Path, offload: str | None = None) -> Iterator[JobEvent]:
        """Continue a run after its last finished clip (and re-stitch it)."""
        return self._stream(lambda emit, cancel: self._continue(Path(run_dir), offload, None, emit, cancel))

    def redo(self, run_dir: str | Path, clip: int, seed: int | None = None, text: str | None = None,
             offload: str | None = None) -> Iterator[JobEvent]:
        """Regenerate clip ``clip`` (new seed and/or prompt) and every clip after it."""

        def work(emit, cancel) -> JobEvent:
            return self._continue(Path(run_dir), offload, (clip, seed, text), emit, cancel)

        return self._stream(work)

    def _continue(self, run_dir: Path, offload: str | None, redo, emit, cancel) -> JobEvent:
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
        offload = offload or (manifest.get("config") or {}).get("offload") or self.config.get("offload") or "none"
        return self._generate(run_dir, self.settings_of_run(manifest), image, clips, offload, emit, cancel,
                              redo=request, config={"cond": (manifest.get("config") or {}).get("cond")})

    def extract(self, video: str | Path | None, options: ExtractionOptions) -> Iterator[JobEvent]:
        """A driving video -> a condition folder under ``outputs/.controls`` (stage progress events)."""

        def work(emit, cancel) -> JobEvent:
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
                if cancel.is_set():
                    raise JobCancelled

            try:
                cond = extract_controls(video, folder, options, progress=progress,
                                        log=lambda line: emit(JobEvent("status", line)))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return JobEvent("done", f"Controls written to {folder}. Replace the placeholder prompts, then generate.",
                            folder=cond.parent)

        return self._stream(work)

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
