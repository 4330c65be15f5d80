"""One photo + a camera path -> a LongVie condition folder (the library behind ``python -m longvie.camera``).

    from longvie.camera import CameraSettings, PathSpec, make_camera_folder

    folder = make_camera_folder("photo.jpg", PathSpec(preset="orbit_left"), CameraSettings(clips=2,
                                prompts=("a quiet harbour at dusk",)), "outputs/harbour_orbit",
                                progress=lambda stage, done, total: print(stage, done, total))

writes into ``out`` (built in a hidden folder next to it and moved into place when complete)::

    first.png              the photo at the control size (scaled to cover, centre-cropped)
    depth_XX.mp4           rendered depth, normalised once over the whole path (near = dark), per clip
    track_XX.mp4           rendered point tracks (50x50 grid of each clip's first frame), per clip
    cond.json              [{"text", "depth", "track"}, ...]: python -m longvie.sample --cond runs it unchanged
    camera.json            intrinsics and per-frame world-to-camera matrices (OpenCV axes), clip ranges, ...
    camera_poses.txt       the same path in the RealEstate10K / CameraCtrl text format
    path_topdown.png       the path seen from above, over the point cloud
    preview.mp4            side by side: the photo re-projected along the path, the depth, the tracks
    preview.png            the same at the first, middle and last frame

Every input is checked before any model loads (:func:`plan_camera`); problems raise
:class:`~longvie.camera.geometry.CameraInputError` or :class:`~longvie.camera.paths.CameraPathError`.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..controls.primitives import DEFAULT_GRID, clip_ranges
from ..media.output_dir import claim_output_dir
from .depth import DEFAULT_METRIC_DEPTH_MODEL, TINY_DEPTH_MODEL
from .geometry import (
    DEFAULT_FOV_DEG,
    NEAR,
    CameraInputError,
    Intrinsics,
    PointCloud,
    cloud_from_depth,
    fit_depth,
    fit_photo,
    parse_intrinsics,
    read_depth_file,
)
from .paths import (
    DEFAULT_ANGLE_RATE,
    DEFAULT_SPEED_FRACTION,
    PRESETS,
    CameraPath,
    CameraPathError,
    keyframe_path,
    poses_path,
    preset_path,
    read_keyframes,
    write_realestate10k,
)

__all__ = ["PathSpec", "CameraSettings", "CameraPlan", "CameraScene", "CameraFolder", "STAGES", "CAMERA_FORMAT",
           "DEFAULT_CLIPS", "plan_camera", "build_scene", "make_camera_folder", "control_size", "StageProgress"]

CAMERA_FORMAT = "longvie-camera/1"
OUTPUT_KIND = "camera"
DEFAULT_CLIPS = 2
STAGES = ("depth", "rendering", "depth videos", "track videos", "preview")
# progress(stage, done, total): a call when a stage starts (done 0) and after each unit of work (as the app's
# extraction stages)
StageProgress = Callable[[str, int, int], None]
# Upstream extracts controls at 832x480 and the sampler brings them to 640x352 (SPEC §4, §5): a 352x640
# model gets its controls drawn at 832x480, so that track marks have the size the released weights saw.
EXTRACTION_SIZE = (480, 832)
_CONTROL_FILE = re.compile(r"^(depth|track)_\d{2,}\.mp4$")


def control_size(height: int, width: int) -> tuple[int, int]:
    """The size the controls are drawn at for a model sampling at ``height`` x ``width``."""
    return EXTRACTION_SIZE if (height, width) == (352, 640) else (height, width)


@dataclass(frozen=True)
class PathSpec:
    """Which camera path: exactly one of ``preset``, ``poses`` (RealEstate10K file), ``keyframes`` (JSON).

    ``speed``: scene units (metres) per second of translations; None = 5 % of the scene's median depth
    per second. ``angle``: degrees per second of pans, tilts and orbits. ``pose_scale`` multiplies the
    translations of a pose file.
    """

    preset: str | None = None
    speed: float | None = None
    angle: float = DEFAULT_ANGLE_RATE
    poses: str | None = None
    pose_scale: float = 1.0
    keyframes: str | None = None

    def problems(self) -> list[str]:
        given = [name for name, value in (("--path", self.preset), ("--poses", self.poses),
                                          ("--keyframes", self.keyframes)) if value]
        if len(given) != 1:
            return [f"give exactly one camera path: --path PRESET ({', '.join(PRESETS)}), --poses FILE or "
                    f"--keyframes FILE.json (got {', '.join(given) if given else 'none'})"]
        problems = []
        if self.preset and self.preset not in PRESETS:
            problems.append(f"--path {self.preset!r}: unknown preset; choose one of {', '.join(PRESETS)}")
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed >= 0):
            problems.append(f"--speed {self.speed}: must be a finite number >= 0 (metres per second)")
        if not (math.isfinite(self.angle) and self.angle >= 0):
            problems.append(f"--angle {self.angle}: must be a finite number >= 0 (degrees per second)")
        if not (math.isfinite(self.pose_scale) and self.pose_scale > 0):
            problems.append(f"--pose-scale {self.pose_scale}: must be a positive number")
        return problems


@dataclass(frozen=True)
class CameraSettings:
    """How the controls are made. ``frames_per_clip``, ``fps`` and the sampling size come from the model
    config (:func:`settings_from_config`); ``height`` x ``width`` is the control size.

    ``clips`` / ``seconds``: the video's length (default: the pose or keyframe file's length, else 2 clips).
    ``fov`` / ``intrinsics`` ("fx,fy,cx,cy" in pixels of the photo): the photo's camera (default: the
    pose file's intrinsics, else a 60 degree horizontal field of view). ``depth``: a depth map file of the
    photo in metres instead of the depth model ``depth_model`` ("tiny" = the tiny preset's random model).
    ``prompts``: one for every clip, or one per clip (none: placeholders that the sampler refuses until
    they are replaced).
    """

    frames_per_clip: int = 81
    fps: int = 16
    height: int = 480
    width: int = 832
    clips: int | None = None
    seconds: float | None = None
    fov: float | None = None
    intrinsics: str | None = None
    depth: str | None = None
    depth_scale: float | None = None
    depth_model: str = DEFAULT_METRIC_DEPTH_MODEL
    local_files_only: bool = False
    device: str | None = None
    grid: int = DEFAULT_GRID
    prompts: tuple[str, ...] = ()
    draw_occluded: bool = True

    def problems(self) -> list[str]:
        problems = []
        if not isinstance(self.frames_per_clip, int) or self.frames_per_clip < 2:
            problems.append(f"frames per clip {self.frames_per_clip}: must be an integer >= 2")
        if self.height % 2 or self.width % 2 or self.height < 16 or self.width < 16:
            problems.append(f"control size {self.width}x{self.height}: must be even and at least 16 (H.264)")
        if self.fps <= 0:
            problems.append(f"fps {self.fps}: must be positive")
        if self.clips is not None and self.seconds is not None:
            problems.append("give --clips or --seconds, not both")
        if self.clips is not None and self.clips < 1:
            problems.append(f"--clips {self.clips}: must be at least 1")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            problems.append(f"--seconds {self.seconds}: must be a positive number")
        if self.fov is not None and self.intrinsics is not None:
            problems.append("give --fov or --intrinsics, not both")
        if self.fov is not None and not (math.isfinite(self.fov) and 1 <= self.fov <= 179):
            problems.append(f"--fov {self.fov}: must be a horizontal field of view in degrees between 1 and 179")
        if self.depth_scale is not None and not (math.isfinite(self.depth_scale) and self.depth_scale > 0):
            problems.append(f"--depth-scale {self.depth_scale}: must be a positive number (metres per stored unit)")
        if self.grid < 1:
            problems.append(f"--grid {self.grid}: must be at least 1")
        return problems


@dataclass
class CameraPlan:
    """Checked inputs, before any model: the photo at the control size, its camera, the path."""

    image: Path
    photo: np.ndarray  # (H, W, 3) uint8 at the control size
    photo_size: tuple[int, int]  # (height, width) as given
    intrinsics: Intrinsics  # at the control size
    intrinsics_source: str
    path: PathSpec
    settings: CameraSettings
    num_clips: int
    depth: np.ndarray | None  # (H, W) metres at the control size when --depth was given
    prompts: list[str]
    placeholder_prompts: bool
    keyframe_end: float | None = None
    notes: list[str] = field(default_factory=list)
    must_see: int | None = None  # frames that must see the photo's points (None: all; --explore: the first clip)

    @property
    def num_frames(self) -> int:
        return self.num_clips * (self.settings.frames_per_clip - 1) + 1

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.num_frames) / self.settings.fps

    def clip_ranges(self) -> list[tuple[int, int]]:
        return clip_ranges(self.num_frames, self.settings.frames_per_clip, overlap=1)


@dataclass
class CameraScene:
    """The plan plus its geometry: depth of the photo, the point cloud and the camera path."""

    plan: CameraPlan
    depth: np.ndarray  # (H, W) metres
    depth_source: str
    cloud: PointCloud
    camera: CameraPath

    @property
    def median_depth(self) -> float:
        return float(np.median(self.depth))


@dataclass
class CameraFolder:
    """What :func:`make_camera_folder` wrote."""

    out: Path
    cond: Path
    camera_json: Path
    depth_videos: list[Path]
    track_videos: list[Path]
    preview_video: Path
    preview_image: Path
    path_plot: Path
    placeholder_prompts: bool
    bounds: tuple[float, float]


# --------------------------------------------------------------------------------------------------
# 1. Inputs (no model)
# --------------------------------------------------------------------------------------------------


def read_prompt_file(path: str | Path) -> tuple[str, ...]:
    """One prompt per non-empty line of a text file (a .json file: a list of strings)."""
    path = Path(path)
    if not path.is_file():
        raise CameraInputError(f"--prompt-file {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CameraInputError(f"--prompt-file {path}: cannot read it as UTF-8 text ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as err:
            raise CameraInputError(f"--prompt-file {path}: not valid JSON ({err})") from None
        if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise CameraInputError(f"--prompt-file {path}: must be a JSON list of non-empty strings, one per clip")
        return tuple(p.strip() for p in prompts)
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise CameraInputError(f"--prompt-file {path}: holds no prompt (one prompt per line, one line per clip)")
    return prompts


def _load_photo(image) -> tuple[np.ndarray, Path]:
    from ..media.video_io import load_image

    try:
        photo = np.array(load_image(image, name="--image"))  # a writable copy
    except ValueError as err:
        raise CameraInputError(f"--image: {err}") from None
    if min(photo.shape[:2]) < 8:
        raise CameraInputError(f"--image {image}: {photo.shape[1]}x{photo.shape[0]} is too small for a photo")
    return photo, Path(image) if isinstance(image, (str, Path)) else Path("image")


def _count_clips(path: PathSpec, settings: CameraSettings, keyframe_end: float | None) -> int:
    step = settings.frames_per_clip - 1
    if settings.clips is not None:
        return settings.clips
    if settings.seconds is not None:
        return max(1, math.ceil(settings.seconds * settings.fps / step - 1e-9))
    if path.poses:
        return -1  # from the file, once it is read
    if keyframe_end is not None:
        return max(1, math.ceil(keyframe_end * settings.fps / step - 1e-9))
    return DEFAULT_CLIPS


def plan_camera(image, path: PathSpec, settings: CameraSettings, explore: bool = False) -> CameraPlan:
    """Check every input and resolve the photo, its camera and the video length; loads no model.

    With ``explore`` only the first clip must see the photo (later clips see the memory grown by the
    clips before them).

    Raises:
        CameraInputError / CameraPathError: the first problem found, naming the input and the fix.
    """
    problems = path.problems() + settings.problems()
    if problems:
        raise CameraInputError("; ".join(problems))
    photo_full, image_path = _load_photo(image)
    photo_h, photo_w = photo_full.shape[:2]
    height, width = settings.height, settings.width
    notes = []

    keyframe_end = None
    if path.keyframes:
        keyframe_end = float(read_keyframes(path.keyframes)[0][-1])
    num_clips = _count_clips(path, settings, keyframe_end)
    file_intrinsics = None
    if path.poses:
        probe = poses_path(path.poses, None, settings.fps, path.pose_scale)
        available = len(probe)
        step = settings.frames_per_clip - 1
        if num_clips == -1:
            num_clips = (available - 1) // step
            if num_clips < 1:
                raise CameraPathError(f"--poses {path.poses}: covers {available} frame(s) at {settings.fps} fps; "
                                      f"one clip needs {settings.frames_per_clip} — give a longer pose file")
            if available > num_clips * step + 1:
                notes.append(f"--poses {path.poses}: {available} frames at {settings.fps} fps -> {num_clips} "
                             f"clip(s); the last {available - num_clips * step - 1} frame(s) do not fill a clip and "
                             "are dropped")
        file_intrinsics = probe.intrinsics

    if settings.intrinsics is not None:
        intrinsics = parse_intrinsics(settings.intrinsics, photo_w, photo_h)
        source = f"--intrinsics {settings.intrinsics}"
    elif settings.fov is not None:
        intrinsics = Intrinsics.from_fov(settings.fov, photo_w, photo_h)
        source = f"--fov {settings.fov:g}"
    elif file_intrinsics is not None:
        intrinsics = Intrinsics.from_normalised(file_intrinsics, photo_w, photo_h)
        source = f"first line of --poses {path.poses}"
    else:
        intrinsics = Intrinsics.from_fov(DEFAULT_FOV_DEG, photo_w, photo_h)
        source = f"default horizontal field of view {DEFAULT_FOV_DEG:g} degrees"
    intrinsics = intrinsics.covered_and_cropped(width, height)

    depth = None
    if settings.depth:
        depth = fit_depth(read_depth_file(settings.depth, settings.depth_scale), photo_h, photo_w, height, width,
                          source=f"--depth {settings.depth}")

    prompts = list(settings.prompts)
    placeholder = not prompts
    if placeholder:
        from ..controls.condition_folder import placeholder_captions

        prompts = placeholder_captions(num_clips)
    elif len(prompts) == 1:
        prompts = prompts * num_clips
    elif len(prompts) != num_clips:
        raise CameraInputError(f"{len(prompts)} prompts for {num_clips} clip(s): give one prompt for all clips or "
                               "exactly one per clip")
    if any(not p.strip() for p in prompts):
        raise CameraInputError("--prompt: a prompt is empty; describe the scene (and the camera move)")

    plan = CameraPlan(image_path, fit_photo(photo_full, height, width), (photo_h, photo_w), intrinsics, source,
                      path, settings, num_clips, depth, prompts, placeholder, keyframe_end, notes,
                      settings.frames_per_clip if explore else None)
    _check_path_in_view_before_depth(plan)
    return plan


def camera_path_for(plan: CameraPlan, median_depth: float) -> CameraPath:
    """The camera path of ``plan`` for a scene of ``median_depth`` (presets scale with it)."""
    spec = plan.path
    if spec.preset:
        speed = DEFAULT_SPEED_FRACTION * median_depth if spec.speed is None else spec.speed
        return preset_path(spec.preset, plan.times, speed, spec.angle, pivot_depth=median_depth)
    if spec.poses:
        return poses_path(spec.poses, plan.num_frames, plan.settings.fps, spec.pose_scale)
    return keyframe_path(spec.keyframes, plan.times, plan.settings.fps)


def _first_blind_frame(points: np.ndarray, camera: CameraPath, intrinsics: Intrinsics,
                       frames: int | None = None) -> int | None:
    """The first of the first ``frames`` frames in which none of ``points`` (N, 3) is in front of the camera
    and inside the image."""
    from .render import project_points

    xy, z = project_points(points, camera.w2c[:frames], intrinsics)
    with np.errstate(invalid="ignore"):
        seen = (z > NEAR) & (xy[..., 0] >= -0.5) & (xy[..., 0] <= intrinsics.width - 0.5) & \
            (xy[..., 1] >= -0.5) & (xy[..., 1] <= intrinsics.height - 0.5)
    blind = np.flatnonzero(~seen.any(axis=1))
    return int(blind[0]) if len(blind) else None


def _blind_error(plan: CameraPlan, frame: int) -> CameraPathError:
    what = (f"--path {plan.path.preset}" if plan.path.preset else f"--poses {plan.path.poses}" if plan.path.poses
            else f"--keyframes {plan.path.keyframes}")
    return CameraPathError(f"{what}: at frame {frame} ({frame / plan.settings.fps:.2f} s) every point of the photo is "
                           "behind the camera or out of view, so there is nothing to render — shorten the path "
                           "(--clips/--seconds), slow it down (--speed/--angle) or keep the camera facing the scene")


def _frustum_samples(intrinsics: Intrinsics, depths: np.ndarray) -> np.ndarray:
    """Points of the first camera's view: a 9x9 grid of rays at each of ``depths`` (camera 0 = world)."""
    us = np.linspace(0, intrinsics.width - 1, 9)
    vs = np.linspace(0, intrinsics.height - 1, 9)
    u, v = np.meshgrid(us, vs)
    rays = np.stack([(u.ravel() - intrinsics.cx) / intrinsics.fx, (v.ravel() - intrinsics.cy) / intrinsics.fy,
                     np.ones(u.size)], axis=1)
    return (rays[None] * depths[:, None, None]).reshape(-1, 3)


def _check_path_in_view_before_depth(plan: CameraPlan) -> None:
    """Before any model: refuse a path that sees none of the photo's plausible points in some frame.

    With ``--depth`` the real cloud is known; otherwise the photo's view is sampled from 5 % to 20x a
    unit median depth, and paths that scale with the scene (presets without --speed) are built for it.
    Paths that do not scale (poses, keyframes, --speed) are checked once the depth is known.
    """
    if plan.depth is not None:
        median = float(np.median(plan.depth))
        ys, xs = np.mgrid[0:plan.intrinsics.height:4, 0:plan.intrinsics.width:4]
        z = plan.depth[ys, xs].ravel().astype(np.float64)
        points = np.stack([(xs.ravel() - plan.intrinsics.cx) / plan.intrinsics.fx * z,
                           (ys.ravel() - plan.intrinsics.cy) / plan.intrinsics.fy * z, z], axis=1)
        camera = camera_path_for(plan, median)
        first_pose = np.linalg.inv(camera.w2c[0])  # the photo is taken from the path's first pose
        points = points @ first_pose[:3, :3].T + first_pose[:3, 3]
    elif plan.path.preset and plan.path.speed is None:
        camera = camera_path_for(plan, 1.0)
        points = _frustum_samples(plan.intrinsics, np.geomspace(0.05, 20.0, 8))
    else:
        return
    frame = _first_blind_frame(points, camera, plan.intrinsics, plan.must_see)
    if frame is not None:
        raise _blind_error(plan, frame)


# --------------------------------------------------------------------------------------------------
# 2. Geometry (the depth model, when needed)
# --------------------------------------------------------------------------------------------------


def build_scene(plan: CameraPlan, estimator=None, progress: StageProgress | None = None,
                log: Callable[[str], None] = print) -> CameraScene:
    """Depth of the photo (``plan.depth`` or ``estimator``), the point cloud and the camera path.

    Raises:
        CameraPathError: the path sees no point of the cloud in some frame.
    """
    if progress:
        progress(STAGES[0], 0, 1)
    if plan.depth is not None:
        depth, source = plan.depth, f"file {plan.settings.depth}"
    else:
        if estimator is None:
            from .depth import load_depth_estimator

            estimator = load_depth_estimator(plan.settings.depth_model, plan.settings.local_files_only,
                                             plan.settings.device)
        depth, source = estimator(plan.photo), f"model {estimator.name}"
    if progress:
        progress(STAGES[0], 1, 1)
    median = float(np.median(depth))
    camera = camera_path_for(plan, median)
    cloud = cloud_from_depth(plan.photo, depth, plan.intrinsics, camera.w2c[0])
    log(f"{plan.image}: depth from {source} (median {median:.2f} m, range {depth.min():.2f}-{depth.max():.2f} m); "
        f"{len(cloud):,} points; camera {plan.intrinsics_source} (horizontal field of view "
        f"{plan.intrinsics.fov_deg():.1f} degrees)")
    frame = _first_blind_frame(cloud.positions[::7].astype(np.float64), camera, plan.intrinsics, plan.must_see)
    if frame is not None:
        raise _blind_error(plan, frame)
    return CameraScene(plan, depth.astype(np.float32), source, cloud, camera)


# --------------------------------------------------------------------------------------------------
# 3. Writing the folder
# --------------------------------------------------------------------------------------------------


def camera_record(scene: CameraScene, bounds: tuple[float, float], explore: bool = False) -> dict:
    """What camera.json holds (also what the explore loop's resume check compares)."""
    plan = scene.plan
    s = plan.settings
    return {
        "format": CAMERA_FORMAT,
        "convention": "OpenCV camera axes (x right, y down, z forward); w2c = 4x4 world-to-camera matrix, row major; "
                      "pixel (0, 0) = centre of the top-left pixel; units of the depth map (metres)",
        "image": str(plan.image), "photo_size": {"height": plan.photo_size[0], "width": plan.photo_size[1]},
        "width": s.width, "height": s.height, "fps": s.fps, "frames_per_clip": s.frames_per_clip,
        "clips": plan.num_clips, "frames": plan.num_frames,
        "clip_ranges": [[a, b] for a, b in plan.clip_ranges()],
        "intrinsics": plan.intrinsics.as_dict(), "intrinsics_source": plan.intrinsics_source,
        "K": plan.intrinsics.matrix().tolist(),
        "path": {**{k: v for k, v in asdict(plan.path).items() if v is not None}, **scene.camera.source},
        "depth": {"source": scene.depth_source, "median": scene.median_depth, "min": float(scene.depth.min()),
                  "max": float(scene.depth.max())},
        "scene_depth_median": scene.median_depth,
        "normalisation": {"rule": "disparity 1/z; one p5/p95 pair over the whole path (SPEC §5)",
                          "p5": bounds[0], "p95": bounds[1]},
        "grid": s.grid, "draw_occluded": s.draw_occluded, "explore": explore,
        "frames_w2c": [pose.tolist() for pose in scene.camera.w2c],
        "times": scene.camera.times.tolist(),
    }


def write_cond_json(work: Path, prompts: list[str], count: int, placeholder: bool) -> Path:
    from ..controls.condition_folder import write_cond

    return write_cond(work, prompts[:count], [Path(f"depth_{i:02d}.mp4") for i in range(count)],
                      [Path(f"track_{i:02d}.mp4") for i in range(count)], placeholder=placeholder)


def write_clip_controls(work: Path, index: int, depth: np.ndarray, grey: np.ndarray, w2c: np.ndarray,
                        scene: CameraScene) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """depth_XX.mp4 and track_XX.mp4 of one clip; returns their paths and the (T, H, W, 3) frames."""
    from ..media.video_io import write_video
    from .render import grey_video, render_track_clip

    s = scene.plan.settings
    depth_frames = grey_video(grey)
    track_frames = render_track_clip(depth[0], w2c, depth, grey, scene.plan.intrinsics, s.grid, s.draw_occluded)
    depth_path = write_video(work / f"depth_{index:02d}.mp4", depth_frames, fps=s.fps)
    track_path = write_video(work / f"track_{index:02d}.mp4", track_frames, fps=s.fps)
    return depth_path, track_path, depth_frames, track_frames


def make_camera_folder(image, path: PathSpec, settings: CameraSettings, out, progress: StageProgress | None = None,
                       log: Callable[[str], None] = print, estimator=None,
                       plan: CameraPlan | None = None) -> CameraFolder:
    """Write the condition folder of ``image`` seen along ``path`` into ``out`` (see the module docstring).

    Args:
        image: the photo (a path, a PIL image or an (H, W, 3) array).
        path, settings: the camera path and how the controls are made.
        out: the folder to write (new, empty, or one this function wrote before; a folder holding other
            files is refused with :class:`longvie.media.output_dir.OutputDirError`).
        progress: ``progress(stage, done, total)`` for each stage of :data:`STAGES`.
        estimator: a depth estimator to use instead of loading ``settings.depth_model``.
        plan: an already checked plan of the same inputs (:func:`plan_camera`).
    """
    from ..controls.condition_folder import publish, save_png, staging_folder
    from .preview import PreviewWriter, write_path_plot

    out = claim_output_dir(out, "camera folder", kind=OUTPUT_KIND)
    plan = plan or plan_camera(image, path, settings)
    for note in plan.notes:
        log(note)
    scene = build_scene(plan, estimator, progress, log)
    s = plan.settings
    ranges = plan.clip_ranges()

    work = staging_folder(out, kind=OUTPUT_KIND, what="camera folder")
    try:
        # the whole path first: the depth is normalised once over every frame, as extraction does
        from .render import normalise_path_depth, render_path_depth

        def frame_done(done, total):
            if progress:
                progress(STAGES[1], done, total)

        if progress:
            progress(STAGES[1], 0, plan.num_frames)
        depth, colors = render_path_depth(scene.cloud, scene.camera.w2c, plan.intrinsics, s.device, frame_done,
                                          with_colors=True, log=log)
        grey, bounds = normalise_path_depth(depth)
        save_png(work / "first.png", plan.photo)
        preview = PreviewWriter(work, s.fps, plan.num_frames)
        depth_paths, track_paths = [], []
        for index, (start, end) in enumerate(ranges):
            if progress:
                progress(STAGES[2], index, len(ranges))
                progress(STAGES[3], index, len(ranges))
            d_path, t_path, d_frames, t_frames = write_clip_controls(work, index, depth[start:end], grey[start:end],
                                                                     scene.camera.w2c[start:end], scene)
            depth_paths.append(d_path)
            track_paths.append(t_path)
            preview.add(colors[start:end], d_frames, t_frames, skip_first=index > 0)
            if progress:
                progress(STAGES[2], index + 1, len(ranges))
                progress(STAGES[3], index + 1, len(ranges))
        if progress:
            progress(STAGES[4], 0, 1)
        preview.close()
        record = camera_record(scene, bounds)
        from ..media.atomic import atomic_write_json

        atomic_write_json(work / "camera.json", record)
        write_realestate10k(work / "camera_poses.txt", scene.camera, plan.intrinsics.normalised())
        write_path_plot(work / "path_topdown.png", scene.camera, scene.cloud, ranges,
                        title=f"{record['path'].get('preset') or record['path'].get('kind')} seen from above")
        write_cond_json(work, plan.prompts, len(ranges), plan.placeholder_prompts)
        if progress:
            progress(STAGES[4], 1, 1)
        _remove_stale_controls(out, len(ranges))
        publish(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out / 'cond.json'}: {len(ranges)} clip(s) of {s.frames_per_clip} frames at {s.width}x{s.height}, "
        f"depth p5/p95 disparity {bounds[0]:.4g}/{bounds[1]:.4g}")
    return CameraFolder(out, out / "cond.json", out / "camera.json", [out / p.name for p in depth_paths],
                        [out / p.name for p in track_paths], out / "preview.mp4", out / "preview.png",
                        out / "path_topdown.png", plan.placeholder_prompts, bounds)


def _remove_stale_controls(out: Path, count: int) -> None:
    """In a folder of ours written before, drop control videos of clips this run does not have."""
    if not out.is_dir():
        return
    for item in out.iterdir():
        if _CONTROL_FILE.match(item.name) and int(item.stem.split("_")[1]) >= count:
            item.unlink()


def settings_from_config(config: dict, **overrides) -> CameraSettings:
    """:class:`CameraSettings` for a model config (``longvie.presets.config.load_config``): frames per clip,
    fps and the control size from its sampling section; the tiny preset's random depth model for ``tiny``."""
    sampling = config.get("sampling") or {}
    height, width = control_size(int(sampling.get("height", 352)), int(sampling.get("width", 640)))
    base = {"frames_per_clip": int(sampling.get("num_frames", 81)), "fps": int(sampling.get("fps", 16)),
            "height": height, "width": width}
    if config.get("preset") == "tiny":
        base["depth_model"] = TINY_DEPTH_MODEL
    base.update({k: v for k, v in overrides.items() if v is not None})
    return CameraSettings(**base)
