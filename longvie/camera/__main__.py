"""``python -m longvie.camera``: one photo + a camera path -> LongVie's depth and track controls.

    python -m longvie.camera --image photo.jpg --path orbit_left --clips 2 --prompt "..." --out outputs/orbit
    python -m longvie.sample --cond outputs/orbit/cond.json          # the folder runs unchanged
    python -m longvie.camera ... --sample                              # both in one command (run in OUT/run)
    python -m longvie.camera ... --explore                             # generate with a growing 3D memory

See :mod:`longvie.camera` and docs/camera.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import LongVieError, log_unexpected_error

DEFAULT_CONFIG = "longvie2_i2v_14b"


def build_parser() -> argparse.ArgumentParser:
    from .depth import DEFAULT_METRIC_DEPTH_MODEL
    from .geometry import DEFAULT_FOV_DEG
    from .paths import DEFAULT_ANGLE_RATE, DEFAULT_SPEED_FRACTION, PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m longvie.camera",
        description="One photo + a camera path -> a LongVie condition folder (first.png, depth_XX.mp4, track_XX.mp4, "
                    "cond.json, camera.json, previews) rendered from the photo's 3D point cloud; with --explore, "
                    "the whole video, each clip's controls rendered from a 3D memory that grows clip by clip.")
    parser.add_argument("--image", required=True, help="the photo (the video's first frame)")
    path = parser.add_argument_group("camera path (exactly one of --path, --poses, --keyframes)")
    path.add_argument("--path", dest="preset", metavar="PRESET", choices=PRESETS,
                      help=f"a preset move: {', '.join(PRESETS)}")
    path.add_argument("--speed", type=float,
                      help=f"translation speed in metres per second [{DEFAULT_SPEED_FRACTION:g} x the scene's median "
                           "depth per second]")
    path.add_argument("--angle", type=float, default=DEFAULT_ANGLE_RATE,
                      help=f"degrees per second of pans, tilts and orbits [{DEFAULT_ANGLE_RATE:g}]")
    path.add_argument("--poses",
                      help="RealEstate10K / CameraCtrl pose file (optional URL line, then 19 numbers a frame)")
    path.add_argument("--pose-scale", type=float, default=1.0,
                      help="multiply the pose file's translations (SLAM poses have no metric scale) [1]")
    path.add_argument("--keyframes", help="JSON file of keyframes {time, position, look_at} (spline + slerp)")
    length = parser.add_argument_group("length and prompts")
    length.add_argument("--clips", type=int, help="number of clips [the pose/keyframe file's length, else 2]")
    length.add_argument("--seconds", type=float, help="video length in seconds instead of --clips")
    length.add_argument("--prompt", help="prompt for every clip (or the path of a prompt file)")
    length.add_argument("--prompt-file", help="text file with one prompt per clip (or a JSON list)")
    model = parser.add_argument_group("model (frames per clip, size and fps come from it)")
    model.add_argument("--config", dest="config", default=DEFAULT_CONFIG,
                       help=f"YAML config: a path or a name in configs/ [{DEFAULT_CONFIG}]")
    model.add_argument("--preset", dest="config", help="same as --config NAME (tiny: CPU, random weights)")
    parser.add_argument("--out", type=Path, help="output folder [outputs/camera/<photo>_<path>]")
    geometry = parser.add_argument_group("geometry")
    geometry.add_argument("--depth", help="depth map of the photo in metres (.npy, .npz, or 16-bit PNG in mm) "
                                          "instead of the depth model")
    geometry.add_argument("--depth-scale", type=float,
                          help="metres per stored depth unit [1 for .npy/.npz, 0.001 for 16-bit PNG]")
    geometry.add_argument("--depth-model", default=None,
                          help=f"metric Depth Anything V2 hub id or folder [{DEFAULT_METRIC_DEPTH_MODEL}; the tiny "
                               "preset: a tiny random model]")
    geometry.add_argument("--local-files", action="store_true", help="never download the depth model")
    geometry.add_argument("--fov", type=float,
                          help=f"horizontal field of view of the photo in degrees [{DEFAULT_FOV_DEG:g}, or the pose "
                               "file's intrinsics]")
    geometry.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels of the photo (instead of --fov)")
    geometry.add_argument("--grid", type=int, default=None, help="track grid size [50, as the released weights]")
    geometry.add_argument("--hide-occluded", action="store_true",
                          help="leave out hidden track points (the released weights saw them drawn)")
    geometry.add_argument("--device", help="torch device for the depth model, rendering and sampling [cuda if any]")
    run = parser.add_argument_group("generation")
    run.add_argument("--explore", action="store_true",
                     help="generate the video, rendering each clip's controls from a 3D memory grown by the clips "
                          "before it (resumable: run the same command again)")
    run.add_argument("--sample", action="store_true",
                     help="after writing the folder, run python -m longvie.sample on it (into OUT/run); "
                          "--explore always does")
    run.add_argument("--max-points", type=int, default=None, help="--explore: memory size bound [4000000]")
    run.add_argument("--fuse-every", type=int, default=None,
                     help="--explore: fuse every k-th generated frame into the memory [10]")
    run.add_argument("--redo", type=int, metavar="K",
                     help="--explore: generate clip K and every clip after it again (the memory follows)")
    run.add_argument("--seed", type=int, help="sampling seed [the config's]")
    run.add_argument("--steps", type=int, help="denoising steps [the config's]")
    run.add_argument("--offload", choices=("none", "model", "group"), help="GPU memory mode [the config's]")
    run.add_argument("--allow-placeholder-prompts", action="store_true", help="sample without real prompts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _prompts(args) -> tuple[str, ...]:
    from .folder import read_prompt_file
    from .geometry import CameraInputError

    if args.prompt is not None and args.prompt_file is not None:
        raise CameraInputError("give --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        return read_prompt_file(args.prompt_file)
    if args.prompt is None:
        return ()
    candidate = Path(args.prompt)
    if candidate.suffix.lower() in (".txt", ".json") and candidate.is_file():
        return read_prompt_file(candidate)
    if not args.prompt.strip():
        raise CameraInputError("--prompt: the prompt is empty")
    return (args.prompt,)


class _StageBars:
    """One tqdm bar per stage of the library's progress(stage, done, total) callback."""

    def __init__(self, enabled: bool):
        self.enabled, self.bars = enabled, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=False, dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            self.bars.pop(stage)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 for bad input (one message, before any model loads), 1 for a fault, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args, argv)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command to continue (finished clips and the memory are kept)",
              file=sys.stderr)
        return 130
    except LongVieError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or ''} {err.strerror or err}".strip(), file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - one line here, the traceback in a log file
        from ..longvideo.cli import cache_dir
        from ..media.output_dir import is_ours

        ours = args.out is not None and args.out.is_dir() and is_ours(args.out)  # never add files to a user's folder
        log = log_unexpected_error(err, ([args.out / "camera_error.log"] if ours else [])
                                   + [cache_dir() / "logs" / "camera-error.log"])
        print(f"error: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
              + (f" (the traceback is in {log}; please report it)" if log else ""), file=sys.stderr)
        return 1


def _run(args, argv) -> int:
    from ..longvideo.cli import _setup_console_logging
    from ..longvideo.validation import InputValidationError
    from ..presets.config import config_path
    from .explore import command_line, explore, sampling_config
    from .folder import PathSpec, make_camera_folder, settings_from_config
    from .geometry import CameraInputError
    from .memory import MemorySettings

    _setup_console_logging()
    if args.redo is not None and not args.explore:
        raise CameraInputError("--redo K regenerates clips of an --explore run; add --explore")
    for name in ("max_points", "fuse_every", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CameraInputError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if args.seed is not None and not 0 <= args.seed < 2 ** 64:
        raise CameraInputError(f"--seed {args.seed}: must be an integer in [0, 2^64)")
    try:
        config_path(args.config)
        config = sampling_config(args.config, steps=args.steps, seed=args.seed, offload=args.offload)
    except FileNotFoundError as err:
        raise CameraInputError(str(err)) from None
    except InputValidationError:
        raise
    spec = PathSpec(preset=args.preset, speed=args.speed, angle=args.angle, poses=args.poses,
                    pose_scale=args.pose_scale, keyframes=args.keyframes)
    settings = settings_from_config(config, clips=args.clips, seconds=args.seconds, fov=args.fov,
                                    intrinsics=args.intrinsics, depth=args.depth, depth_scale=args.depth_scale,
                                    depth_model=args.depth_model, local_files_only=args.local_files or None,
                                    device=args.device, grid=args.grid, prompts=_prompts(args),
                                    draw_occluded=False if args.hide_occluded else None)
    out = args.out or Path("outputs") / "camera" / f"{Path(args.image).stem}_{_path_name(spec)}"
    bars = _StageBars(not args.no_progress)
    if args.explore:
        memory = MemorySettings(**{k: v for k, v in (("max_points", args.max_points),
                                                      ("fuse_every", args.fuse_every)) if v is not None})
        result = explore(args.image, spec, settings, out, config, memory, progress=bars,
                         allow_placeholder_prompts=args.allow_placeholder_prompts,
                         progress_bars=not args.no_progress, command=command_line(argv), redo=args.redo)
        print(f"video: {result.video.resolve()}")
        print(f"folder: {result.folder.resolve()}  (controls, camera.json, preview.mp4, memory.ply; run in run/)")
        return 0
    folder = make_camera_folder(args.image, spec, settings, out, progress=bars)
    print(f"wrote {folder.cond.resolve()} (+ first.png, {len(folder.depth_videos)} depth and track videos, "
          "camera.json, path_topdown.png, preview.mp4)")
    if folder.placeholder_prompts:
        print(f"NOTE: the prompts in {folder.cond} are placeholders — pass --prompt TEXT, or edit each \"text\" and "
              "delete its \"placeholder\" key; the sampler refuses placeholders unless --allow-placeholder-prompts.")
    if not args.sample:
        print(f"next: python -m longvie.sample --config {args.config} --cond {folder.cond}")
        return 0
    from ..longvideo.cli import main as sample_main

    sample_args = ["--config", args.config, "--cond", str(folder.cond), "--image", str(out / "first.png"),
                   "--out", str(out / "run")]
    for flag, value in (("--seed", args.seed), ("--steps", args.steps), ("--offload", args.offload),
                        ("--device", args.device)):
        if value is not None:
            sample_args += [flag, str(value)]
    sample_args += ["--allow-placeholder-prompts"] if args.allow_placeholder_prompts else []
    sample_args += ["--no-progress"] if args.no_progress else []
    return sample_main(sample_args)


def _path_name(spec) -> str:
    if spec.preset:
        return spec.preset
    return Path(spec.poses or spec.keyframes or "path").stem


if __name__ == "__main__":
    sys.exit(main())
