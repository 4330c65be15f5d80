"""The camera tab's jobs, without any UI: one photo and a camera path -> rendered controls -> a video.

The geometry and the rendering are :mod:`longvie.camera`'s (the library behind ``python -m
longvie.camera``); this module turns the page's fields into its inputs, with every problem in the
page's words and tagged with its field, and runs its work as jobs of the app's queue:

* **Preview path** (:meth:`CameraJobs.preview`): :func:`longvie.camera.make_camera_folder` into a
  new folder ``outputs/.camera/<name>/`` owned by the browser session (stage progress: depth,
  rendering, depth videos, track videos, preview). The page shows its ``path_topdown.png`` and
  ``preview.mp4``.
* **Generate** (:meth:`CameraJobs.generate`): the previewed folder (or one rendered now, when the
  fields changed since) becomes a run of the long-video sampler exactly as the main tab makes one
  (:meth:`longvie.app.engine.Studio.prepare_new_run`: the controls are copied into the run's
  ``inputs/``, with ``camera.json`` beside them so ``python -m longvie.eval`` scores camera
  adherence); the run is listed in Past runs, resumed and redone like any other.
* **Explore** (:meth:`CameraJobs.explore`): :func:`longvie.camera.explore` driven from the job worker
  (the app's pipeline, its step/preview/cancel/stop hooks, stage progress). The run folder
  ``outputs/<run>/`` is the sampler's run directory; ``camera/`` inside it is explore's folder
  (controls, camera.json, the memory, memory.ply) and ``inputs/`` keeps the photo, the depth map
  and :data:`REQUEST_FILE`, from which Resume and Redo continue it (:func:`continue_explore`).

Camera folders are written only under the app's outputs folder, never to a path from the page.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..camera.paths import DEFAULT_ANGLE_RATE, PRESETS
from ..longvideo.run_state import RedoRequest
from ..media.atomic import atomic_write_json
from .engine import JobCancelled, JobControl, JobEvent, Studio, _slug, sampler_hooks
from .inputs import IMAGE_SUFFIXES, PLACEHOLDER_PREFIX, SETTING_LABELS, AppInputError, check_page_settings
from .runs import INPUTS_DIR

__all__ = ["CameraRequest", "CheckedCamera", "CameraJobs", "CAMERA_DIR", "REQUEST_FILE", "CAMERA_FIELDS",
           "DEPTH_SUFFIXES", "STAGE_LABELS", "camera_fields", "page_words", "clip_count", "continue_explore",
           "is_explore_run", "depth_model_problem"]

logger = logging.getLogger("longvie.app")

CAMERA_DIR = ".camera"  # outputs/.camera/<name>/: the camera folders of "Preview path"
REQUEST_FILE = "camera_request.json"  # in an explore run's inputs/: what Resume and Redo need
EXPLORE_FOLDER = "camera"  # an explore run's controls, camera.json and memory, inside its run folder
DEPTH_SUFFIXES = (".npy", ".npz", ".png")
# What the run's inputs/ keeps of a camera folder besides the controls (eval reads camera.json there).
CAMERA_FILES = ("camera.json", "camera_poses.txt", "path_topdown.png", "preview.mp4", "preview.png")
# Error boxes of the camera tab; settings and LoRA problems go to the main tab's boxes.
CAMERA_FIELDS = ("photo", "geometry", "path", "prompts", "settings", "lora", "camera")
_FIELD_OF = (("photo", "photo"), ("depth map", "geometry"), ("field of view", "geometry"),
             ("camera path", "path"), ("speed", "path"), ("angle", "path"), ("clips", "path"), ("seconds", "path"),
             ("length", "path"), ("prompt", "prompts"), ("lora", "lora"),
             *((label.lower(), "settings") for label in SETTING_LABELS.values()), ("memory mode", "settings"),
             ("run name", "settings"))
STAGE_LABELS = {"depth": "Depth of the photo", "rendering": "Rendering the path", "depth videos": "Depth videos",
                "track videos": "Track videos", "preview": "Preview", "clips": "Clips", "memory": "3D memory"}
# The library speaks in command-line flags; the page names its fields (longest first).
# (flag names without their dashes: these are python -m longvie.camera's flags, not the app's)
_FLAG_WORDS = (("clips/seconds", "Clips or Seconds"), ("speed/angle", "Speed or Angle"), ("image", "Photo"),
               ("depth-scale", "Depth scale"), ("depth", "Depth map"), ("path", "Camera path"), ("speed", "Speed"),
               ("angle", "Angle"), ("fov", "Field of view"), ("clips", "Clips"), ("seconds", "Seconds"),
               ("prompt-file", "Prompt"), ("prompt", "Prompt"), ("intrinsics", "Field of view"),
               ("redo", "Redo clip"))


def page_words(text: str, names: dict[str, str] | None = None) -> str:
    """A library message for the page: flags become field names, server paths of files their names
    (``names``: ``{server path: name shown}``, e.g. an upload's temporary path -> its file name)."""
    text = str(text)
    for path, shown in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        text = text.replace(path, shown)
    for names_, words in _FLAG_WORDS:
        flag = "/".join("-" * 2 + name for name in names_.split("/"))
        text = re.sub(re.escape(flag) + r"(?![\w-])", words, text)
    text = re.sub(r"(?:[A-Za-z]:)?(?:/[^/\s:'\"()]+)+/([^/\s:'\"()]+\.[A-Za-z0-9]{2,12})\b", r"\1", text)
    return text[:1].upper() + text[1:]


def camera_fields(problems: Sequence[str]) -> dict[str, list[str]]:
    """The camera tab's field of each problem (by the field it names first; the rest: ``camera``)."""
    found: dict[str, list[str]] = {name: [] for name in CAMERA_FIELDS}
    for problem in problems:
        lower = problem.lower()
        name = next((box for start, box in _FIELD_OF if lower.startswith(start)), "camera")
        found[name].append(problem)
    return found


def clip_count(clips, seconds, frames_per_clip: int, fps: int) -> int:
    """Clips of a video of ``clips`` clips, or of ``seconds`` (rounded up to whole clips; wins when given)."""
    if seconds is not None:
        return max(1, math.ceil(float(seconds) * fps / (frames_per_clip - 1) - 1e-9))
    return int(clips)


def _sha256(path: str | Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class CameraRequest:
    """The camera tab's fields (None or "" keeps a default) and the page's shared settings.

    ``prompt`` is every clip's prompt; a non-empty ``prompts[i]`` (the per-clip table) replaces it
    for clip i. ``seconds``, when given, sets the length instead of ``clips``.
    """

    photo: str | Path | None
    path: str = "dolly_in"
    speed: float | str | None = None
    angle: float | str | None = DEFAULT_ANGLE_RATE
    clips: int | str | None = 2
    seconds: float | str | None = None
    depth: str | Path | None = None
    fov: float | str | None = None
    prompt: str = ""
    prompts: Sequence[str] = ()
    explore: bool = False
    seed: int | None = 0
    steps: int | None = None
    cfg: float | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    offload: str | None = None
    name: str | None = None
    loras: Sequence[str] = ()
    owner: str | None = None
    names: dict = field(default_factory=dict)  # {server path: name shown} of uploads, for messages


@dataclass
class CheckedCamera:
    """A request whose inputs passed every check that needs no model (:func:`longvie.camera.plan_camera`)."""

    request: CameraRequest
    plan: object  # longvie.camera.folder.CameraPlan
    spec: object  # longvie.camera.PathSpec
    settings: object  # longvie.camera.CameraSettings
    config: dict  # the app's config with the page's settings
    numbers: dict  # the page's settings as numbers
    offload: str
    prompts: list[str]

    @property
    def num_clips(self) -> int:
        return self.plan.num_clips

    def controls_key(self) -> str:
        """What determines the rendered controls (not the prompts): a preview folder of the same key is
        reused by Generate."""
        s = self.settings
        record = {"photo": _sha256(self.plan.image), "depth": _sha256(s.depth), "path": self.spec.preset,
                  "speed": self.spec.speed, "angle": self.spec.angle, "clips": self.plan.num_clips, "fov": s.fov,
                  "frames": s.frames_per_clip, "fps": s.fps, "size": [s.height, s.width],
                  "depth_model": s.depth_model}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def _number(value, label: str, problems: list[str], low: float | None = None, high: float | None = None,
            whole: bool = False, hint: str = ""):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{label} {value!r}: not a number{hint}")
        return None
    if not math.isfinite(number):
        problems.append(f"{label} {value!r}: not a number{hint}")
        return None
    if whole and number != int(number):
        problems.append(f"{label} {value!r}: must be a whole number{hint}")
        return None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}")
        problems.append(f"{label} {value!r}: must be {bounds}{hint}")
        return None
    return int(number) if whole else number


class CameraJobs:
    """The camera tab's work over a :class:`~longvie.app.engine.Studio` (its config, pipeline, job lock)."""

    def __init__(self, studio: Studio):
        self.studio = studio

    # ------------------------------------------------------------------ checks (no model)
    def config_for(self, numbers: dict, offload: str) -> dict:
        """The app's config with the page's settings (what the sampler and the camera library read)."""
        overrides = {k: numbers[k] for k in ("steps", "cfg", "height", "width", "num_frames", "seed")
                     if numbers.get(k) is not None}
        config = dict(self.studio.config)
        config["sampling"] = {**self.studio.sampling, **overrides}
        config["offload"] = offload
        return config

    def check(self, request: CameraRequest) -> CheckedCamera:
        """Check the tab's fields and plan the path (the photo and the depth map are read; no model loads).

        Raises:
            AppInputError: every problem found, in the page's words, each starting with its field's name
                (:func:`camera_fields` sorts them into the tab's boxes).
        """
        from ..camera.folder import PathSpec, plan_camera, settings_from_config
        from ..camera.geometry import CameraInputError
        from ..camera.paths import CameraPathError
        from ..media.video_io import load_image
        from .engine import OFFLOAD_MODES, check_loras

        studio, s = self.studio, self.studio.sampling
        problems = list(studio.weight_problems())
        numbers, settings_problems = check_page_settings(
            {"seed": request.seed, "steps": request.steps, "cfg": request.cfg, "height": request.height,
             "width": request.width, "num_frames": request.num_frames},
            int(s.get("history_frames", 8)), s.get("resize", "auto"))
        problems += settings_problems
        offload = request.offload or studio.config.get("offload") or "none"
        if offload not in OFFLOAD_MODES:
            problems.append(f"Memory mode {offload!r}: pick one of {', '.join(OFFLOAD_MODES)}")
        names = dict(request.names or {})

        photo = request.photo
        if photo is None or not str(photo).strip():
            problems.append("Photo: missing — upload a photo (PNG or JPEG), or give one on the server")
            photo = None
        elif Path(photo).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"Photo {Path(photo).name}: wrong file type — upload a PNG or JPEG photo")
            photo = None
        else:
            try:
                load_image(photo)
            except ValueError:
                problems.append(f"Photo {Path(photo).name}: cannot be read as an image — upload a PNG or JPEG")
                photo = None
        depth = request.depth if request.depth and str(request.depth).strip() else None
        if depth is not None and Path(depth).suffix.lower() not in DEPTH_SUFFIXES:
            problems.append(f"Depth map {Path(depth).name}: wrong file type — give a .npy or .npz depth map in "
                            "metres, or a 16-bit PNG in millimetres")
            depth = None

        preset = (request.path or "").strip()
        if preset not in PRESETS:
            problems.append(f"Camera path {preset!r}: pick one of {', '.join(PRESETS)}")
        speed = _number(request.speed, "Speed", problems, low=0.0,
                        hint=" (metres per second; empty: 5 % of the scene's depth per second)")
        angle = _number(request.angle, "Angle", problems, low=0.0, hint=" (degrees per second)")
        angle = DEFAULT_ANGLE_RATE if angle is None else angle
        seconds = _number(request.seconds, "Seconds", problems, low=1e-3)
        clips = _number(request.clips, "Clips", problems, low=1, whole=True)
        if clips is None and seconds is None and not any("Clips" in p for p in problems):
            problems.append("Clips: missing — give the number of clips (or the length in seconds)")
        fov = _number(request.fov, "Field of view", problems, low=1.0, high=179.0,
                      hint=" (horizontal, in degrees; empty: 60)")

        frames = numbers.get("num_frames") or int(s["num_frames"])
        fps = int(s.get("fps", 16))
        prompts: list[str] = []
        count = clip_count(clips, seconds, frames, fps) if (clips is not None or seconds is not None) and frames >= 2 \
            else 0
        if count:
            common = (request.prompt or "").strip()
            table = [str(t).strip() if t is not None else "" for t in request.prompts or ()]
            prompts = [(table[i] if i < len(table) and table[i] else common) for i in range(count)]
            missing = [i for i, text in enumerate(prompts) if not text]
            if missing:
                where = "every clip" if len(missing) == count else \
                    "clip " + ", ".join(str(i) for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
                problems.append(f"Prompt: none for {where} — write one prompt for all clips, or one per clip in the "
                                "table")
            if any(text.startswith(PLACEHOLDER_PREFIX) for text in prompts):
                problems.append("Prompt: still a placeholder caption — describe the scene and the camera move")
        if request.loras and request.explore:
            problems.append("LoRA: not applied to Explore runs yet — clear the LoRA rows, or untick Explore")
        elif request.loras:
            try:
                check_loras(request.loras, studio.config.get("model"))
            except AppInputError as err:
                problems += err.problems
        if problems:
            raise AppInputError(problems)

        config = self.config_for(numbers, offload)
        settings = settings_from_config(config, clips=count, fov=fov,
                                        depth=str(depth) if depth else None, device=studio.device,
                                        prompts=tuple(prompts))
        spec = PathSpec(preset=preset, speed=speed, angle=angle)
        try:
            plan = plan_camera(photo, spec, settings, explore=request.explore)
        except (CameraInputError, CameraPathError) as err:
            raise AppInputError([page_words(str(err).strip(), names)]) from None
        return CheckedCamera(request, plan, spec, settings, config, numbers, offload, prompts)

    # ------------------------------------------------------------------ jobs
    def new_folder(self, stem: str) -> Path:
        """A new camera folder's path under ``outputs/.camera`` (nothing is created yet)."""
        return self.studio.outputs / CAMERA_DIR / f"{_slug(stem)[:40] or 'camera'}-{uuid.uuid4().hex[:8]}"

    def _render(self, checked: CheckedCamera, folder: Path, emit, control: JobControl) -> Path:
        """make_camera_folder with stage events and cancel; the folder is owned by the request's owner."""
        from ..camera.folder import make_camera_folder

        result = make_camera_folder(checked.plan.image, checked.spec, checked.settings, folder,
                                    progress=_stage_progress(emit, control), log=logger.info, plan=checked.plan)
        if checked.request.owner:
            from .access import write_owner

            write_owner(folder, checked.request.owner)
        return result.out

    def preview(self, checked: CheckedCamera, folder: Path, control: JobControl | None = None) -> Iterator[JobEvent]:
        """"Preview path": render the condition folder ``folder`` (stage progress; cancel stops between frames)."""

        def work(emit, control) -> JobEvent:
            try:
                self._render(checked, folder, emit, control)
            except BaseException:
                if folder.is_dir() and not (folder / "cond.json").is_file():
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            frames = checked.settings.frames_per_clip
            return JobEvent("done", f"Path rendered: {checked.num_clips} clip(s) of {frames} frames. Look at the path "
                                    "and the controls, then Generate.", folder=folder)

        return self.studio._stream(_page_worded(work, checked), control)

    def run_dir(self, name: str | None) -> Path:
        """The run folder of a new camera run (``name``, else ``camera-<time>-<id>``).

        Raises:
            AppInputError: the name is taken.
        """
        import datetime as _dt

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = _slug(name or "") or f"camera-{stamp}-{uuid.uuid4().hex[:4]}"
        run_dir = self.studio.outputs / name
        if run_dir.exists():
            raise AppInputError([f"Run name {name}: already taken — pick another name (or resume or redo that run "
                                 "from Past runs)"])
        return run_dir

    def generate(self, checked: CheckedCamera, run_dir: Path, folder: Path | None = None,
                 control: JobControl | None = None) -> Iterator[JobEvent]:
        """Sample the camera folder ``folder`` (None: render one first) into the new run ``run_dir``."""
        request = checked.request

        def work(emit, control) -> JobEvent:
            source = folder
            if source is None or not (source / "cond.json").is_file():
                source = self.new_folder(f"{Path(checked.plan.image).stem}-{checked.spec.preset}")
                emit(JobEvent("status", "Rendering the camera path ..."))
                self._render(checked, source, emit, control)
            from .engine import GenerationRequest

            count = checked.num_clips
            generation = GenerationRequest(
                image=source / "first.png", depth=[source / f"depth_{i:02d}.mp4" for i in range(count)],
                track=[source / f"track_{i:02d}.mp4" for i in range(count)], texts=checked.prompts,
                seed=checked.numbers.get("seed") or 0, steps=checked.numbers.get("steps"),
                cfg=checked.numbers.get("cfg"), height=checked.numbers.get("height"),
                width=checked.numbers.get("width"), num_frames=checked.numbers.get("num_frames"),
                offload=checked.offload, name=run_dir.name, loras=tuple(request.loras or ()), owner=request.owner)
            prepared = self.studio.prepare_new_run(generation)
            for name in CAMERA_FILES:  # camera.json beside the controls: the run's camera path (eval reads it)
                if (source / name).is_file():
                    shutil.copyfile(source / name, prepared.run_dir / INPUTS_DIR / name)
            return self.studio._run_prepared(prepared, emit, control)

        return self.studio._stream(_page_worded(work, checked), control)

    def explore(self, checked: CheckedCamera, run_dir: Path, control: JobControl | None = None) -> Iterator[JobEvent]:
        """Explore: generate ``run_dir`` with :func:`longvie.camera.explore` (a 3D memory grown clip by clip)."""

        def work(emit, control) -> JobEvent:
            inputs = run_dir / INPUTS_DIR
            inputs.mkdir(parents=True, exist_ok=True)
            try:
                photo = inputs / f"photo{Path(checked.plan.image).suffix.lower()}"
                shutil.copyfile(checked.plan.image, photo)
                depth = None
                if checked.settings.depth:
                    depth = inputs / f"depth{Path(checked.settings.depth).suffix.lower()}"
                    shutil.copyfile(checked.settings.depth, depth)
                record = {"format": "longvie-app-camera/1", "photo": photo.name, "depth": depth and depth.name,
                          "path": checked.spec.preset, "speed": checked.spec.speed, "angle": checked.spec.angle,
                          "clips": checked.num_clips, "fov": checked.settings.fov, "prompts": checked.prompts,
                          "settings": {k: v for k, v in checked.numbers.items() if v is not None},
                          "offload": checked.offload}
                atomic_write_json(inputs / REQUEST_FILE, record)
                if checked.request.owner:
                    from .access import write_owner

                    write_owner(run_dir, checked.request.owner)
            except BaseException:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise
            return continue_explore(self.studio, run_dir, None, None, emit, control)

        return self.studio._stream(_page_worded(work, checked), control)


    def resume(self, run_dir: str | Path, offload: str | None = None,
               control: JobControl | None = None) -> Iterator[JobEvent]:
        """Continue an Explore run after its last finished clip (Past runs' Resume)."""
        return self.studio._stream(lambda emit, control: continue_explore(self.studio, Path(run_dir), offload, None,
                                                                          emit, control), control)

    def redo(self, run_dir: str | Path, clip, seed=None, text: str | None = None, offload: str | None = None,
             control: JobControl | None = None) -> Iterator[JobEvent]:
        """Regenerate clip ``clip`` of an Explore run (new seed and/or prompt) and every clip after it; the
        memory after it is rebuilt from the new clips."""
        return self.studio._stream(lambda emit, control: continue_explore(self.studio, Path(run_dir), offload,
                                                                          (clip, seed, text), emit, control), control)


# ----------------------------------------------------------------------------------------------------
# Explore runs: started, resumed and redone from their recorded request
# ----------------------------------------------------------------------------------------------------


def is_explore_run(run_dir: str | Path) -> bool:
    """True for a run folder made by the camera tab's Explore (continued by :func:`continue_explore`)."""
    return (Path(run_dir) / INPUTS_DIR / REQUEST_FILE).is_file()


def continue_explore(studio: Studio, run_dir: Path, offload: str | None, redo, emit, control: JobControl) -> JobEvent:
    """Start, resume or redo (``redo``: ``(clip, seed, text)`` from the page) the explore run ``run_dir``
    from its recorded request; returns the job's final event."""
    from ..camera.explore import explore
    from ..camera.folder import PathSpec, settings_from_config

    run_dir = Path(run_dir)
    inputs = run_dir / INPUTS_DIR
    try:
        record = json.loads((inputs / REQUEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AppInputError([f"Run {run_dir.name}: its camera request cannot be read ({type(err).__name__}) — "
                             "start a new run from the Camera tab"]) from None
    prompts = list(record["prompts"])
    request = None
    if redo is not None:
        clip, seed, text = redo
        problems = []
        from .engine import _as_int

        clip, seed = _as_int(clip, "clip", problems), _as_int(seed, "seed", problems)
        if clip is None and not problems:
            problems.append("clip: give the number of the clip to regenerate")
        elif clip is not None and not 0 <= clip < len(prompts):
            problems.append(f"clip {clip}: the run has clips 0..{len(prompts) - 1}")
        if problems:
            raise AppInputError(problems)
        text = (text or "").strip() or None
        request = RedoRequest(clip, seed=seed, text=text)
        if text is not None:  # later resumes read the clip's new prompt from the record
            prompts[clip] = text
            atomic_write_json(inputs / REQUEST_FILE, {**record, "prompts": prompts})
    offload = offload or record.get("offload") or studio.config.get("offload") or "none"
    config = CameraJobs(studio).config_for(record.get("settings") or {}, offload)
    settings = settings_from_config(config, clips=int(record["clips"]), fov=record.get("fov"),
                                    depth=str(inputs / record["depth"]) if record.get("depth") else None,
                                    device=studio.device, prompts=tuple(prompts))
    spec = PathSpec(preset=record["path"], speed=record.get("speed"),
                    angle=float(record.get("angle") or DEFAULT_ANGLE_RATE))
    num_clips = int(record["clips"])
    on_step, on_preview, on_clip_done = sampler_hooks(studio, run_dir, num_clips,
                                                       int(config["sampling"]["steps"]), emit, control)
    emit(JobEvent("status", "Loading the model ..." if offload not in studio.pipes else "Starting ...",
                  run_dir=run_dir, num_clips=num_clips))
    started = time.perf_counter()
    from ..camera.depth import DepthModelError
    from ..camera.geometry import CameraInputError
    from ..camera.paths import CameraPathError

    try:
        result = explore(inputs / record["photo"], spec, settings, run_dir / EXPLORE_FOLDER, config,
                         progress=_stage_progress(emit, control, run_dir), log=logger.info, on_step=on_step,
                         on_preview=on_preview if studio.previews else None, on_clip_done=on_clip_done,
                         stop_requested=control.stop_after_clip.is_set, progress_bars=False,
                         command="python -m longvie.app (camera tab, explore)", redo=request, run_dir=run_dir,
                         load_pipe=lambda: studio._load_pipe(offload))
    except (CameraInputError, CameraPathError) as err:
        raise AppInputError([page_words(str(err).strip())]) from None
    except DepthModelError:
        raise AppInputError([depth_model_problem(settings.depth_model, True)]) from None
    from ..longvideo.run_state import RunDir

    records = (RunDir(run_dir).load_manifest() or {}).get("clips") or []
    done = sum(1 for r in records if (r or {}).get("status") == "done")
    sizes = " -> ".join(f"{n:,}" for n in result.points)
    if result.stopped:
        return JobEvent("stopped", f"Stopped after clip {done - 1}, as asked: clips 0..{done - 1} of {num_clips} are "
                                   f"finished. Resume continues with clip {done} (the 3D memory is kept).",
                        run_dir=run_dir, video=result.video, num_clips=num_clips)
    return JobEvent("done", f"Finished: {num_clips} clip(s) explored in {time.perf_counter() - started:.1f} s; the 3D "
                            f"memory grew {sizes} points.", run_dir=run_dir, video=result.video, num_clips=num_clips)


# ----------------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------------


def _stage_progress(emit, control: JobControl, run_dir: Path | None = None) -> Callable[[str, int, int], None]:
    """The camera library's ``progress(stage, done, total)`` as stage events; raises on cancel."""

    def progress(stage: str, done: int, total: int) -> None:
        label = STAGE_LABELS.get(stage, stage)
        emit(JobEvent("step", f"{label}: {done}/{total}", stage=stage, step=done, steps=total, run_dir=run_dir))
        if control.cancel.is_set():
            raise JobCancelled

    return progress


def _page_worded(work, checked: CheckedCamera):
    """``work`` whose camera-library errors (found once the depth is known) read in the page's words."""
    from ..camera.depth import DepthModelError
    from ..camera.geometry import CameraInputError
    from ..camera.paths import CameraPathError

    def wrapped(emit, control):
        try:
            return work(emit, control)
        except (CameraInputError, CameraPathError) as err:
            raise AppInputError([page_words(str(err).strip(), checked.request.names)]) from None
        except DepthModelError:
            raise AppInputError([depth_model_problem(checked.settings.depth_model, checked.request.explore)]) from None

    return wrapped


def depth_model_problem(model: str, explore: bool) -> str:
    """The page's words for a depth model the server cannot load (offline and not in its cache)."""
    if explore:
        return (f"Depth map: Explore estimates the depth of every generated clip with the depth model {model}, "
                "which this server cannot load (not in its Hugging Face cache, no download) — untick Explore, or "
                "ask whoever runs the server to fetch the model once with internet access")
    return (f"Depth map: the depth model {model} cannot be loaded on this server (not in its Hugging Face cache, no "
            "download) — upload a depth map of the photo (.npy/.npz in metres, or a 16-bit PNG in millimetres)")
