"""``--explore``: generate the video clip by clip, rendering each clip's controls from a 3D memory that
grows with every generated clip (:mod:`longvie.camera.memory`).

The long-video sampler (:class:`longvie.longvideo.sampler.LongVideoSampler`) drives the loop through
its per-clip control provider (:mod:`longvie.longvideo.provider`): before clip k it calls
:class:`ExploreControls` with clips 0..k-1, which fuses the clips not yet in the memory, renders clip
k's depth and tracks from the fused cloud along the path, writes them as depth_KK.mp4/track_KK.mp4 and
hands them to the sampler. Folder layout (``out``)::

    first.png camera.json camera_poses.txt path_topdown.png      as without --explore
    depth_XX.mp4 track_XX.mp4 cond.json                           the controls each clip was generated with
    memory/memory_KKK.npz                                         the memory after clips 0..K-1 (atomic)
    memory.ply                                                    the fused cloud after the last clip
    run/                                                          the sampler's run directory (video.mp4, clips/)
    preview.mp4 preview.png                                       generated video | depth | tracks

The depth grey scale is fixed once, from the photo's cloud rendered along the whole path (the same
p5/p95 as without --explore, so clip 0's controls are identical), and kept for every later clip. Re-running
the same command resumes: finished clips are kept and the memory is reloaded (or re-fused from the
finished clips' lossless frames), so a killed run ends with the same video as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..longvideo.provider import FinishedClips
from ..media.atomic import atomic_write_json
from ..media.output_dir import claim_output_dir, mark_output_dir
from .folder import (
    OUTPUT_KIND,
    STAGES,
    CameraScene,
    CameraSettings,
    PathSpec,
    StageProgress,
    build_scene,
    camera_record,
    plan_camera,
    write_clip_controls,
    write_cond_json,
)
from .geometry import CameraInputError
from .memory import MemorySettings, WorldMemory, write_ply
from .paths import write_realestate10k

__all__ = ["ExploreControls", "ExploreResult", "explore", "EXPLORE_STAGES", "sampling_config"]

logger = logging.getLogger("longvie.camera")
EXPLORE_STAGES = (*STAGES[:2], "clips", "memory")


def _memory_path(folder: Path, fused: int) -> Path:
    return folder / "memory" / f"memory_{fused:03d}.npz"


class ExploreControls:
    """The control provider of ``--explore`` (see the module docstring)."""

    name = "longvie.camera.explore"

    def __init__(self, scene: CameraScene, folder: Path, estimator, bounds: tuple[float, float],
                 settings: MemorySettings = MemorySettings(), device=None, log: Callable[[str], None] | None = None):
        self.scene, self.folder, self.estimator, self.bounds = scene, Path(folder), estimator, bounds
        self.settings, self.device, self.log = settings, device, log or logger.info
        record = camera_record(scene, bounds, explore=True)
        record.pop("image")  # where the photo was read from does not change the controls
        identity = json.dumps({"camera": record, "memory": asdict(settings), "depth_model": estimator.name},
                              sort_keys=True)
        self.identity = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        self.ranges = scene.plan.clip_ranges()
        self.history: list[dict] = []

    def fingerprint(self, index: int) -> str:
        """What determines clip ``index``'s controls besides the clips before it (recorded by the sampler)."""
        return hashlib.sha256(f"{self.identity}:{index}".encode()).hexdigest()

    # -- memory --------------------------------------------------------------------------------------
    def save_initial(self) -> None:
        path = _memory_path(self.folder, 0)
        memory = self._load(path)
        if memory is None or memory.fused:
            WorldMemory(self.scene.cloud).save(path, {"identity": self.identity})

    def _load(self, path: Path) -> WorldMemory | None:
        if not path.is_file():
            return None
        try:
            memory, header = WorldMemory.load(path)
        except (OSError, ValueError, KeyError):
            self.log(f"warning: {path} is unreadable; the memory is rebuilt from the finished clips")
            return None
        return memory if header.get("identity") == self.identity else None

    def memory_for(self, count: int, finished: FinishedClips) -> WorldMemory:
        """The memory with clips 0..count-1 fused: the latest matching saved memory, plus the clips after it."""
        wanted = [finished.sha256(i) for i in range(count)]
        memory, start = None, 0
        for m in range(count, -1, -1):
            candidate = self._load(_memory_path(self.folder, m))
            if candidate is not None and candidate.fused == wanted[:m]:
                memory, start = candidate, m
                break
        if memory is None:
            memory = WorldMemory(self.scene.cloud)
        for j in range(start, count):
            self._fuse_clip(memory, j, finished[j])
            memory.fused.append(wanted[j])
            memory.save(_memory_path(self.folder, j + 1), {"identity": self.identity})
        return memory

    def _fuse_clip(self, memory: WorldMemory, index: int, frames: np.ndarray) -> None:
        from ..media.video_io import resize_stretch

        plan = self.scene.plan
        height, width = plan.intrinsics.height, plan.intrinsics.width
        if frames.shape[1:3] != (height, width):  # the sampler stretched the controls to its size: undo it
            frames = np.asarray(resize_stretch(frames, height, width))
        start, end = self.ranges[index]
        count = end - start
        picks = sorted(set(range(self.settings.fuse_every, count, self.settings.fuse_every)) | {count - 1})
        started = time.perf_counter()
        estimates = self.estimator(frames[picks])
        before = len(memory.cloud)
        for pick, estimate in zip(picks, estimates):
            stats = memory.fuse_frame(frames[pick], estimate, self.scene.camera.w2c[start + pick], plan.intrinsics,
                                      self.settings, self.device)
            memory.stats.append({"clip": index, "frame": start + pick, **stats})
            if "skipped" in stats:
                self.log(f"memory: clip {index} frame {pick}: {stats['skipped']}")
        self.log(f"memory: clip {index} fused ({len(picks)} frame(s), {time.perf_counter() - started:.1f} s): "
                 f"{before:,} -> {len(memory.cloud):,} points")

    # -- the provider ------------------------------------------------------------------------------
    def __call__(self, index: int, finished: FinishedClips) -> tuple[np.ndarray, np.ndarray]:
        from .render import normalise_path_depth, render_path_depth

        memory = self.memory_for(index, finished)
        start, end = self.ranges[index]
        w2c = self.scene.camera.w2c[start:end]
        started = time.perf_counter()
        depth = render_path_depth(memory.cloud, w2c, self.scene.plan.intrinsics, self.device)
        per_frame_ms = 1000.0 * (time.perf_counter() - started) / len(w2c)
        grey, _ = normalise_path_depth(depth, self.bounds)
        _, _, depth_frames, track_frames = write_clip_controls(self.folder, index, depth, grey, w2c, self.scene)
        self.history.append({"clip": index, "points": len(memory.cloud),
                             "render_ms_per_frame": round(per_frame_ms, 1)})
        self.log(f"clip {index}: controls rendered from a memory of {len(memory.cloud):,} points "
                 f"({per_frame_ms:.0f} ms per frame)")
        return depth_frames, track_frames


@dataclass
class ExploreResult:
    folder: Path
    run_dir: Path
    video: Path
    ply: Path
    points: list[int]  # cloud size before each clip and after the last
    stopped: bool = False  # stopped after a clip on request: ``ply`` is not written yet, the rest is pending


def sampling_config(config_name: str, **overrides) -> dict:
    """The sampler's resolved config for ``config_name`` (exactly as ``python -m longvie.sample`` resolves it)."""
    from ..longvideo.cli import build_parser, resolve_config

    argv = ["--config", config_name]
    for key, value in overrides.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return resolve_config(build_parser().parse_args(argv))


def sampler_settings(config: dict):
    """:class:`~longvie.longvideo.sampler.LongVideoSettings` of a resolved config, as the sampler's CLI builds them."""
    from ..longvideo.cli import model_identity
    from ..longvideo.sampler import LongVideoSettings

    s = config["sampling"]
    return LongVideoSettings(
        num_frames=s["num_frames"], height=s["height"], width=s["width"], steps=s["steps"], cfg=float(s["cfg"]),
        shift=float(s["shift"]), history_frames=s["history_frames"], resize=s["resize"],
        negative_prompt=s["negative_prompt"], fps=s["fps"], model=model_identity(config), dtype=config["dtype"],
        seed=s["seed"], vae_tiling=bool(s.get("vae_tiling", False)), fp8=bool(s.get("fp8", False)),
        step_cache=s.get("step_cache"), step_cache_threshold=s.get("step_cache_threshold"))


def explore(image, path: PathSpec, settings: CameraSettings, out, config: dict,
            memory_settings: MemorySettings = MemorySettings(), progress: StageProgress | None = None,
            log: Callable[[str], None] | None = None, on_step: Callable[[int, int, int], None] | None = None,
            on_clip_done: Callable[[int], None] | None = None, allow_placeholder_prompts: bool = False,
            progress_bars: bool = True, command: str | None = None, estimator=None,
            redo=None, run_dir=None, load_pipe: Callable | None = None,
            on_preview: Callable | None = None, stop_requested: Callable[[], bool] | None = None) -> ExploreResult:
    """Generate the video of ``image`` along ``path`` with a growing 3D memory (see the module docstring).

    Args:
        config: the model config resolved as the sampler resolves it (:func:`sampling_config`).
        log: where progress lines go (default: the ``longvie.camera`` logger, which the run's run.log records).
        on_step, on_clip_done: passed to the sampler (the app's progress and cancel hooks).
        redo: generate clip ``redo`` and every clip after it again (memories after it are rebuilt); an int,
            or a :class:`~longvie.longvideo.run_state.RedoRequest` (a new seed or prompt for that clip).
        run_dir: the sampler's run directory (default ``out/run``; the app keeps its runs elsewhere).
        load_pipe: returns the loaded pipeline (default: loaded from ``config``; the app passes the one it holds).
        on_preview, stop_requested: passed to the sampler (the app's live preview and "stop after this clip");
            a run stopped after a clip returns with ``stopped`` set, before the memory takes the last clip in.

    Raises:
        CameraInputError / CameraPathError: bad input (before any model loads).
        The sampler's errors (weights, resume mismatches, ...).
    """
    from ..longvideo.cli import check_model_dirs, pipeline_loader
    from ..longvideo.sampler import LongVideoSampler
    from ..longvideo.validation import ClipCondition, check_clip_settings
    from .depth import load_depth_estimator
    from .preview import write_path_plot
    from .render import normalise_path_depth, render_path_depth

    # 1. everything that can be checked without a model
    log = log or logger.info
    out = claim_output_dir(out, "camera folder", kind=OUTPUT_KIND)
    plan = plan_camera(image, path, settings, explore=True)
    s = config["sampling"]
    problems = check_clip_settings(s["num_frames"], s["height"], s["width"], s["history_frames"], s["resize"])
    problems += check_model_dirs(config)
    if s["num_frames"] != settings.frames_per_clip:
        problems.append(f"frames per clip {settings.frames_per_clip} differ from the model's {s['num_frames']}")
    from ..longvideo.run_state import RedoRequest

    redo = None if redo is None else redo if isinstance(redo, RedoRequest) else RedoRequest(int(redo))
    if redo is not None and not 0 <= redo.clip < plan.num_clips:
        problems.append(f"--redo {redo.clip}: the video has clips 0..{plan.num_clips - 1}")
    if plan.placeholder_prompts and not allow_placeholder_prompts:
        problems.append("--explore generates the video: give --prompt TEXT (or --prompt-file, one prompt per clip)")
    if problems:
        raise CameraInputError("; ".join(problems))
    for note in plan.notes:
        log(note)

    # 2. geometry, the grey scale of the whole path, the initial memory
    mark_output_dir(out, OUTPUT_KIND)
    if estimator is None:
        estimator = load_depth_estimator(settings.depth_model, settings.local_files_only, settings.device)
    scene = build_scene(plan, estimator, progress, log)
    if progress:
        progress(EXPLORE_STAGES[1], 0, plan.num_frames)
    depth = render_path_depth(scene.cloud, scene.camera.w2c, plan.intrinsics, settings.device,
                              (lambda d, t: progress(EXPLORE_STAGES[1], d, t)) if progress else None, log=log)
    _, bounds = normalise_path_depth(depth)
    del depth
    from ..controls.condition_folder import save_png

    save_png(out / "first.png", plan.photo)
    atomic_write_json(out / "camera.json", camera_record(scene, bounds, explore=True))
    write_realestate10k(out / "camera_poses.txt", scene.camera, plan.intrinsics.normalised())
    write_path_plot(out / "path_topdown.png", scene.camera, scene.cloud, plan.clip_ranges(),
                    title="camera path seen from above (photo's cloud)")
    provider = ExploreControls(scene, out, estimator, bounds, memory_settings, settings.device, log)
    provider.save_initial()

    # 3. the sampler, with the provider instead of control files
    clips = [ClipCondition(index=i, text=plan.prompts[i], depth=out / f"depth_{i:02d}.mp4",
                           track=out / f"track_{i:02d}.mp4", placeholder=plan.placeholder_prompts)
             for i in range(plan.num_clips)]
    run_dir = out / "run" if run_dir is None else Path(run_dir)
    sampler = LongVideoSampler(sampler_settings(config), progress=progress_bars,
                               load_pipe=load_pipe or pipeline_loader(config, settings.device))

    def clip_done(index: int) -> None:
        if progress:
            progress(EXPLORE_STAGES[2], index + 1, plan.num_clips)
        if on_clip_done is not None:
            on_clip_done(index)

    if progress:
        progress(EXPLORE_STAGES[2], 0, plan.num_clips)
    result = sampler(run_dir, out / "first.png", clips, config={**config, "camera": str(out / "camera.json")},
                     command=command, on_step=on_step, on_clip_done=clip_done,
                     allow_placeholder_prompts=allow_placeholder_prompts, controls=provider, redo=redo,
                     on_preview=on_preview, stop_requested=stop_requested)
    if result.stopped:  # the rest stays pending: the same call later resumes (and finishes the memory)
        sizes = [len(WorldMemory.load(_memory_path(out, k))[0].cloud) for k in range(sampler.finished_clips)]
        return ExploreResult(out, result.run_dir, result.video_path, out / "memory.ply", sizes, stopped=True)

    # 4. the last clip into the memory, the fused cloud, cond.json and the preview
    if progress:
        progress(EXPLORE_STAGES[3], 0, 1)
    finished = _finished_clips(run_dir, plan.num_clips)
    memory = provider.memory_for(plan.num_clips, finished)
    ply = write_ply(out / "memory.ply", memory.cloud)
    write_cond_json(out, plan.prompts, plan.num_clips, plan.placeholder_prompts)
    _explore_preview(out, finished, plan)
    sizes = [len(WorldMemory.load(_memory_path(out, k))[0].cloud) for k in range(plan.num_clips + 1)]
    log(f"memory: {' -> '.join(f'{n:,}' for n in sizes)} points over {plan.num_clips} clip(s); fused cloud {ply}")
    if progress:
        progress(EXPLORE_STAGES[3], 1, 1)
    return ExploreResult(out, result.run_dir, result.video_path, ply, sizes)


def _finished_clips(run_dir: Path, count: int) -> FinishedClips:
    from ..longvideo.run_state import RunDir

    run = RunDir(run_dir)
    records = run.load_manifest()["clips"][:count]
    hashes = [r["state_sha256"] for r in records]
    return FinishedClips(lambda i: run.load_clip_state(i, hashes[i]).frames, hashes)


def _explore_preview(out: Path, finished: FinishedClips, plan) -> None:
    """preview.mp4 / .png: the generated video beside the controls it was generated with."""
    from ..media.video_io import read_video, resize_stretch
    from .preview import PreviewWriter

    preview = PreviewWriter(out, plan.settings.fps, plan.num_frames,
                            labels=("generated video", "depth control", "track control"))
    height, width = plan.intrinsics.height, plan.intrinsics.width
    for index in range(len(finished)):
        frames = np.asarray(resize_stretch(finished[index], height, width))
        depth = read_video(out / f"depth_{index:02d}.mp4")
        tracks = read_video(out / f"track_{index:02d}.mp4")
        preview.add(frames, depth, tracks, skip_first=index > 0)
    preview.close()


def command_line(argv) -> str:
    given = sys.argv[1:] if argv is None else argv
    return " ".join(shlex.quote(a) for a in ["python", "-m", "longvie.camera", *given])
