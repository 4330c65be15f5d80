"""Command line for ultra-long video generation (``python -m longvie.sample``, ``sample_longvideo.sh``).

    python -m longvie.sample --config configs/longvie2_i2v_14b.yaml \\
        --image first.png --cond cond.json --out outputs/my_run
    python -m longvie.sample --preset tiny          # random tiny weights, synthetic example, CPU

Every input is validated before any model is loaded (:mod:`longvie.longvideo.preflight`), all
problems reported at once. The run directory (``--out``) is resumable:
re-running the same command continues after the last finished clip; ``--redo K`` regenerates clip
K and everything after it (with ``--seed``/``--prompt``, a new seed/prompt for clip K). See
:mod:`longvie.longvideo.sampler` and :mod:`longvie.longvideo.run_state`.

Defaults: without ``--cond`` the synthetic example (:mod:`longvie.examples.synthetic`) is rendered
at the run's resolution into the cache (``$LONGVIE_CACHE``, else ``~/.cache/longvie``); without
``--image`` the ``first.png`` next to cond.json is used; ``--out`` defaults to
``outputs/<preset>_<example folder>``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from pathlib import Path

from .. import LongVieError, log_unexpected_error
from ..media.video_io import RESIZE_MODES
from ..presets.config import config_path, load_config, merge
from .preflight import (
    DTYPES,
    SEED_LIMIT,
    check_config_file,
    check_device,
    check_output_dir,
    check_redo,
    check_sampling_settings,
    check_weight_headers,
    estimate_run_bytes,
)
from .run_state import RedoRequest, RunDir, RunLockedError, RunManifestError, RunMismatchError
from .sampler import LongVideoSampler, LongVideoSettings, NonFiniteOutputError, placeholder_problems
from .validation import InputValidationError, check_clip_settings, validate_inputs

logger = logging.getLogger("longvie.sample")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "longvie2_i2v_14b"
SYNTHETIC_CLIPS = 3  # clips of the default synthetic example
SAMPLING_DEFAULTS = {"num_frames": 81, "height": 352, "width": 640, "steps": 50, "cfg": 5.0, "shift": 5.0,
                     "seed": 0, "history_frames": 8, "resize": "auto", "negative_prompt": None, "fps": 16,
                     "vae_tiling": False, "fp8": False, "step_cache": None, "step_cache_threshold": None,
                     "timesteps": None, "step_cache_ratios": None}


def cache_dir() -> Path:
    """Where tiny checkpoints and generated examples go: $LONGVIE_CACHE, else ~/.cache/longvie."""
    root = os.environ.get("LONGVIE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longvie"
    return Path(root)


def build_parser() -> argparse.ArgumentParser:
    # Defaults are written once, in the help texts (a setting left out keeps the config file's value).
    parser = argparse.ArgumentParser(
        prog="python -m longvie.sample",
        description="LongVie 2 ultra-long video generation: clip by clip, resumable. Settings left out keep "
                    "the config file's value (the released model's defaults are shown in brackets).")
    parser.add_argument("--config", dest="config", default=DEFAULT_CONFIG,
                        help=f"YAML config: a path or a name in configs/ (longvie2_i2v_14b, tiny) [{DEFAULT_CONFIG}]")
    parser.add_argument("--preset", dest="config", help="same as --config NAME (the last one given wins)")
    parser.add_argument("--image", type=Path, help="first frame [first.png next to cond.json]")
    parser.add_argument("--cond", type=Path, help="condition list cond.json [the synthetic example]")
    parser.add_argument("--out", type=Path, help="run directory [outputs/<preset>_<example folder>]")
    parser.add_argument("--seed", type=int, help="run seed, 0 <= seed < 2^64 [0]; with --redo K, a new seed for clip K")
    parser.add_argument("--prompt", help="with --redo K: a new prompt for clip K (kept for later re-runs)")
    parser.add_argument("--redo", type=int, metavar="K", help="regenerate clip K (0-based) and every clip after it")
    parser.add_argument("--clips", type=int, help="generate only the first N clips of the condition list [all]")
    parser.add_argument("--steps", type=int, help="denoising steps [50]")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance scale [5.0]")
    parser.add_argument("--shift", type=float, help="flow-matching shift [5.0]")
    parser.add_argument("--height", type=int, help="frame height, multiple of 16 [352]")
    parser.add_argument("--width", type=int, help="frame width, multiple of 16 [640]")
    parser.add_argument("--num-frames", type=int, help="frames per clip, 4k+1 [81]")
    parser.add_argument("--resize", choices=RESIZE_MODES,
                        help="inputs of another size: auto = stretch within 10%% of the target aspect ratio, else crop; "
                             "crop = resize short side + centre crop (upstream training); "
                             "stretch = plain resize (upstream inference) [auto]")
    parser.add_argument("--offload", choices=("none", "model", "group"),
                        help="GPU memory mode: none, model (one 80 GB GPU) or group (24-48 GB GPUs, slower) "
                             "[the config's offload]")
    parser.add_argument("--device", help="cuda, cuda:1, cpu [cuda when available; cpu for tiny]")
    parser.add_argument("--allow-placeholder-prompts", action="store_true",
                        help="sample clips whose prompt is empty or the placeholder utils/prepare_controls.py "
                             "writes (refused otherwise)")
    parser.add_argument("--vae-tiling", dest="vae_tiling", action=argparse.BooleanOptionalAction, default=None,
                        help="tiled VAE encode/decode (lower peak memory; recorded in the run) [off]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--sp", type=int, default=1, metavar="N",
                        help="sequence parallelism over N ranks (start with torchrun --nproc_per_node N[*2])")
    parser.add_argument("--cfg-parallel", action="store_true",
                        help="guidance branches on different ranks (doubles the ranks: torchrun ... 2*N)")
    parser.add_argument("--split-gpus", action="store_true",
                        help="under torchrun: split the ranks by themselves - CFG-parallel x sequence parallel N/2 "
                             "when guidance is on and N is even, else sequence parallel N (sample_longvideo.sh --gpus "
                             "N passes it)")
    parser.add_argument("--cfg-batch", action="store_true", help="guidance as one batch of 2 (faster, more memory)")
    speed = parser.add_argument_group("speed and memory (see docs/speed-and-memory.md)")
    speed.add_argument("--fp8", dest="fp8", action=argparse.BooleanOptionalAction, default=None,
                       help="FP8 weights (per-row scales) in the DiT and control blocks: about half the weight "
                            "memory, FP8 matmuls where the GPU has them; pixels differ slightly; recorded in the "
                            "run [off]")
    speed.add_argument("--fp8-kind", choices=("auto", "gemm", "weight-only"),
                       help="with FP8: gemm = FP8 matmuls (sm89+/sm90 GPUs, faster), weight-only = FP8 storage "
                            "with bf16 matmuls (any device); auto picks gemm where the GPU runs it [auto]")
    speed.add_argument("--cache", dest="step_cache", choices=("firstblock", "teacache", "magcache"),
                       help="skip redundant denoising steps (faster; pixels differ; recorded in the run): firstblock, "
                            "teacache (TeaCache4Wan2.1, I2V-480P coefficients) or magcache (MagCache) [off]")
    speed.add_argument("--cache-threshold", dest="step_cache_threshold", type=float,
                       help="step-cache threshold [firstblock 0.05, teacache 0.20 (published: 0.13 0.19 0.26 / "
                            "0.20 0.30), magcache 0.24]")
    speed.add_argument("--cache-ratios", dest="step_cache_ratios", metavar="FILE",
                       help="magcache: magnitude ratios recorded by `python -m longvie.benchmark --calibrate-magcache "
                            "FILE` [the published Wan2.1-I2V-14B-480P ratios]")
    speed.add_argument("--lora", dest="loras", action="append", metavar="PATH[:SCALE]",
                       help="a LoRA (.safetensors: diffusers/PEFT, kohya/ComfyUI, LightX2V, DiffSynth layouts) fused "
                            "into the DiT (and the control branch where it has keys for it); repeatable; recorded in "
                            "the run [none]")
    speed.add_argument("--fast", action="store_true",
                       help="4-step distilled mode (configs/longvie2_i2v_14b_fast.yaml): timesteps 1000 750 500 250, "
                            "no guidance, LightX2V's distill LoRA (python download_wan2.1.py --fast-lora); trained on "
                            "plain Wan, so its agreement with the control branch is measured, not promised")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the repeated blocks (same math; the first clip pays the compile time)")
    speed.add_argument("--max-vram", type=float, metavar="GiB",
                       help="pick the fastest --offload/--fp8 mode whose estimated GPU peak fits this many GiB "
                            "(runs the memory estimator first; overrides --offload and --fp8)")
    return parser


def resolve_config(args: argparse.Namespace) -> dict:
    """The config file merged with the command-line overrides, sampling settings flattened."""
    config = load_config(args.config)
    sampling = {**SAMPLING_DEFAULTS, **{k: config[k] for k in SAMPLING_DEFAULTS if k in config},
                **(config.get("sampling") or {})}
    overrides = {"num_frames": args.num_frames, "height": args.height, "width": args.width, "steps": args.steps,
                 "cfg": args.cfg, "shift": args.shift, "resize": args.resize,
                 "vae_tiling": getattr(args, "vae_tiling", None), "fp8": getattr(args, "fp8", None),
                 "step_cache": getattr(args, "step_cache", None),
                 "step_cache_threshold": getattr(args, "step_cache_threshold", None),
                 "step_cache_ratios": getattr(args, "step_cache_ratios", None)}
    if getattr(args, "fp8_kind", None) and getattr(args, "fp8", None) is not False:
        overrides["fp8"] = args.fp8_kind
    if args.seed is not None and args.redo is None:
        overrides["seed"] = args.seed
    config = merge(config, {"offload": args.offload})
    config["sampling"] = merge(sampling, overrides)  # assigned, not merged: None values are meaningful
    config["config_file"] = str(config_path(args.config))
    config.setdefault("preset", Path(config["config_file"]).stem)
    config.setdefault("dtype", "bfloat16")
    config.setdefault("offload", "none")
    config["compile"] = bool(getattr(args, "compile", False))
    if getattr(args, "fast", False):  # the fast config's schedule (+ its LoRA), then the command line's overrides
        from .loras import apply_fast

        config["fast_note"] = apply_fast(config, is_tiny(config))
        config["sampling"] = merge(config["sampling"], overrides)
    from .loras import add_cli_loras

    add_cli_loras(config, getattr(args, "loras", None))
    return config


def apply_max_vram(config: dict, max_vram_gib: float, cfg: str | None = None) -> str:
    """Set ``offload`` and ``sampling.fp8`` to the fastest mode whose estimated GPU peak fits
    ``max_vram_gib`` at this run's clip shape, guidance mode (``cfg``: "batch", "parallel" or None),
    step cache, compile and VAE tiling (:mod:`longvie.acceleration.memory`). Returns a one-line
    report. Raises ValueError when no mode fits."""
    from ..acceleration.memory import architecture, estimate_memory, lightest_mode

    s = config["sampling"]
    preset = config.get("config_file") or config.get("preset")
    arch = architecture(preset, num_frames=s["num_frames"], height=s["height"], width=s["width"])
    report = estimate_memory(arch, training=False, vae_tiling=bool(s.get("vae_tiling")), cfg=cfg,
                             step_cache=s.get("step_cache"), compile=bool(config.get("compile")))
    row = lightest_mode(report.inference, max_vram_gib)
    fp8, _, offload = row.mode.rpartition("+")
    kind = s.get("fp8") if isinstance(s.get("fp8"), str) and s.get("fp8") != "off" else True  # keep --fp8-kind
    config["offload"], s["fp8"] = offload, kind if fp8 else False
    return (f"--max-vram {max_vram_gib:g}: --offload {offload}{' --fp8' if fp8 else ''} (estimated GPU peak "
            f"{row.gpu_gib:.1f} GiB, host RAM {row.host_gib:.1f} GiB)")


def is_tiny(config: dict) -> bool:
    return config.get("preset") == "tiny"


def _resolve_dir(value) -> Path | None:
    """A model folder from the config: relative to the working directory, else to the repository."""
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path


def check_model_dirs(config: dict) -> list[str]:
    """Problems with the weights folders of a released-weights config (none for the tiny preset).

    Existing folders get the header-only completeness checks of :mod:`longvie.weights.files`
    (seconds, no tensor data read), so a truncated download is reported before any model loads.
    """
    if is_tiny(config):
        return []
    where = config["config_file"]
    download = "run `python download_wan2.1.py` (see models/README.md)"
    base, longvie = _resolve_dir(config.get("base_model_dir")), _resolve_dir(config.get("longvie_dir"))
    problems = []
    if base is None or not base.is_dir():
        problems.append(f"base model folder {base}: not found — {download}, or set base_model_dir in {where}")
    if longvie is None or not longvie.is_dir():
        problems.append(f"LongVie 2 weights folder {longvie}: not found — {download}, or set longvie_dir in "
                        f"{where}; to try the pipeline without weights use --preset tiny")
    if problems:
        return problems

    from ..weights.files import diffusers_layout_problems, longvie_folder_problems, original_layout_problems

    layout_problems = diffusers_layout_problems if (base / "model_index.json").is_file() else original_layout_problems
    names = ["control.safetensors"] + (["dit.safetensors"] if (longvie / "dit.safetensors").exists() else [])
    found = layout_problems(base) + longvie_folder_problems(longvie, names)
    return [f"{p} — {download} to complete the download" for p in found]


def default_example(config: dict, clips: int | None) -> Path:
    """cond.json of the synthetic example at the run's resolution, rendered once into the cache."""
    from ..examples.synthetic import make_synthetic_example

    s = config["sampling"]
    num_clips = max(SYNTHETIC_CLIPS, clips or 0)
    folder = cache_dir() / "examples" / f"synthetic_{num_clips}x{s['num_frames']}_{s['height']}x{s['width']}"
    cond = folder / "cond.json"
    if not cond.is_file():  # cond.json is written last: its presence means the example is complete
        logger.info("rendering the synthetic example into %s", folder)
        make_synthetic_example(folder, clips=num_clips, height=s["height"], width=s["width"],
                               frames_per_clip=s["num_frames"])
    return cond


_LOADED_PIPELINES: dict = {}  # the last loaded pipeline, reused by later runs of the same process


def run_device(config: dict, device: str | None) -> str:
    """Where the pipeline runs: ``--device``, else the CPU for the tiny preset or without CUDA, else "cuda"."""
    import torch

    return device or ("cpu" if is_tiny(config) or not torch.cuda.is_available() else "cuda")


def mode_request(config: dict, sequence_degree: int = 1):
    """The :class:`~longvie.acceleration.modes.ModeRequest` of a resolved config (offload, FP8, compile,
    step cache, attention, LoRAs)."""
    from ..acceleration.modes import ModeRequest
    from .loras import lora_specs

    s = config["sampling"]
    return ModeRequest(offload=config.get("offload") or "none", fp8=s.get("fp8") or False,
                       compile=bool(config.get("compile")), step_cache=s.get("step_cache"),
                       step_cache_threshold=s.get("step_cache_threshold"),
                       step_cache_ratios=s.get("step_cache_ratios"), attention=config.get("attention") or "auto",
                       loras=tuple(lora_specs(config)[0]), sequence_parallel=sequence_degree)


def plan_run_modes(config: dict, device: str | None, sequence_degree: int = 1):
    """Plan the run's modes before any model loads (raises ``acceleration.modes.ModeError``)."""
    from ..acceleration.modes import DeviceInfo, plan_modes
    from ..presets.config import torch_dtype

    info = DeviceInfo.probe(run_device(config, device), torch_dtype(config["dtype"]))
    return plan_modes(mode_request(config, sequence_degree), info)


def run_settings(config: dict, plan, seed: int | None = None, loras: list | None = None) -> LongVideoSettings:
    """The :class:`LongVideoSettings` of a resolved config (:func:`resolve_config`), for the sample CLI and the app
    (``longvie.app.engine.Studio.settings``) alike: the sampling section, the model identity and dtype, and the
    settings that change pixels as the run will apply them - FP8 and its kind from ``plan`` (the run's
    ``ModePlan``, :func:`plan_run_modes`: "auto" resolved for the device, as the loaded pipeline does), the step
    cache, VAE tiling, the schedule and the LoRAs (``loras``: their settings entries when already computed;
    None computes them from the config's ``loras``). ``seed``: None takes the sampling section's."""
    s = config["sampling"]
    if loras is None:
        from .loras import lora_records, lora_specs

        loras = lora_records(lora_specs(config)[0])[0]
    return LongVideoSettings(
        num_frames=int(s["num_frames"]), height=int(s["height"]), width=int(s["width"]), steps=int(s["steps"]),
        cfg=float(s["cfg"]), shift=float(s["shift"]), history_frames=int(s["history_frames"]), resize=s["resize"],
        negative_prompt=s["negative_prompt"], fps=int(s["fps"]), model=model_identity(config), dtype=config["dtype"],
        seed=int(s["seed"] if seed is None else seed), vae_tiling=bool(s.get("vae_tiling", False)),
        fp8=plan.fp8 is not None, fp8_kind=plan.fp8, step_cache=s.get("step_cache"),
        step_cache_threshold=s.get("step_cache_threshold"), loras=loras, timesteps=s.get("timesteps"),
        step_cache_ratios=s.get("step_cache_ratios"))


def pipeline_loader(config: dict, device: str | None, sequence_degree: int = 1, cfg_degree: int = 1,
                    text_encoder: bool = True):
    """A function that loads the pipeline of ``config`` (called only when a clip must be made).
    ``text_encoder=False`` leaves umT5 on disk (the ranks that never encode text under torchrun)."""

    def load():
        import torch

        key = (repr(sorted(config.items(), key=str)), device, sequence_degree, cfg_degree, text_encoder)
        if key in _LOADED_PIPELINES:
            return _LOADED_PIPELINES[key]
        from ..presets.config import torch_dtype
        from ..sampling.pipeline import LongViePipeline

        ranks = sequence_degree * cfg_degree
        if ranks > 1 and torch.distributed.get_rank() != 0:
            torch.distributed.barrier()  # rank 0 first: it writes the tiny checkpoints; staggers host RAM
        if is_tiny(config):
            from ..presets.tiny import write_tiny_checkpoints

            base, longvie = write_tiny_checkpoints(cache_dir() / "tiny_checkpoints")
        else:
            base, longvie = _resolve_dir(config["base_model_dir"]), _resolve_dir(config["longvie_dir"])
        pipe = LongViePipeline.from_pretrained(base, longvie, torch_dtype=torch_dtype(config["dtype"]),
                                               device=run_device(config, device),
                                               modes=mode_request(config, sequence_degree),
                                               vae_tiling=bool(config["sampling"].get("vae_tiling", False)),
                                               load_text_encoder=text_encoder)
        if ranks > 1 and torch.distributed.get_rank() == 0:
            torch.distributed.barrier()
        if ranks > 1:
            pipe.enable_parallelism(sequence_degree, cfg_degree)
        _LOADED_PIPELINES.clear()  # one model in memory at a time
        _LOADED_PIPELINES[key] = pipe
        return pipe

    return load


def model_identity(config: dict) -> str:
    if is_tiny(config):
        return "tiny (random weights from longvie.presets.tiny.write_tiny_checkpoints)"
    base, longvie = _resolve_dir(config.get("base_model_dir")), _resolve_dir(config.get("longvie_dir"))
    return f"{base.resolve() if base else None} + {longvie.resolve() if longvie else None}"


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_console_logging() -> None:
    package_logger = logging.getLogger("longvie")
    if not any(isinstance(h, _TqdmHandler) for h in package_logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("[longvie] %(message)s"))
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


class _Session:
    """What the top-level handler needs to word its message: the run directory and the sampler."""

    def __init__(self):
        self.out: Path | None = None
        self.sampler: LongVideoSampler | None = None

    def finished_clips(self) -> int | None:
        return None if self.sampler is None else self.sampler.finished_clips


def main(argv: list[str] | None = None, single_process: bool = False) -> int:
    """``python -m longvie.sample``: known errors print their message (exit 2 for bad input, 1 for a
    fault), Ctrl-C exits 130, anything else prints one line naming the log file with the traceback.

    ``single_process``: ignore torchrun's WORLD_SIZE (each rank makes its own videos: longvideo.batch).
    """
    session = _Session()
    global _QUIET
    _QUIET = _is_follower(single_process)
    try:
        return _run(argv, session, single_process)
    except KeyboardInterrupt:
        done = session.finished_clips()
        if done:
            print(f"\ninterrupted after clip {done - 1}; run the same command to continue", file=sys.stderr)
        else:
            print("\ninterrupted before the first clip finished; run the same command to continue", file=sys.stderr)
        return 130
    except (InputValidationError, RunMismatchError, RunManifestError, RunLockedError) as err:
        _error(f"error: {err}")
        return 2
    except NonFiniteOutputError as err:
        _error(f"error: {err}")
        return 1
    except LongVieError as err:  # weights, checkpoint keys: what is wrong with which file
        _error(f"error: {err}")
        return 2
    except OSError as err:
        print(f"error: {_os_error_message(err, session)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            return _unexpected(err, session)
        print(f"error: {_out_of_memory_message(err, session)}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - one line here, the traceback in the log
        return _unexpected(err, session)


_QUIET = False  # a torchrun rank other than 0 on one video: rank 0 reports the (identical) input errors


def _is_follower(single_process: bool) -> bool:
    return not single_process and int(os.environ.get("WORLD_SIZE", 1)) > 1 and int(os.environ.get("RANK", 0)) > 0


def _error(message: str) -> None:
    if not _QUIET:
        print(message, file=sys.stderr)


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err)


def _continue_hint(session: _Session) -> str:
    done = session.finished_clips()
    return f"clips 0..{done - 1} are finished and kept; " if done else ""


def _out_of_memory_message(err: BaseException, session: _Session) -> str:
    return (f"out of memory ({str(err).splitlines()[0] if str(err) else type(err).__name__}). "
            f"{_continue_hint(session)}re-run the same command with a lower-memory mode: --offload model "
            "(one model on the GPU at a time; fits one 80 GB GPU) or --offload group (24-48 GB GPUs, slower), "
            "or lower --height/--width/--num-frames")


def _os_error_message(err: OSError, session: _Session) -> str:
    import errno

    where = err.filename or session.out or "the output folder"
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {where}. {_continue_hint(session)}free space (or "
                "choose another --out) and run the same command to continue")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where}: {err.strerror} (read-only file system or permissions) — choose a writable --out"
    if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return f"{where}: {err.strerror} — a file stands where a folder is needed (or the reverse); choose another --out"
    return f"{where}: {err.strerror or err}"


def _unexpected(err: BaseException, session: _Session) -> int:
    import datetime

    candidates = []
    if session.out is not None and session.out.is_dir():
        candidates.append(RunDir(session.out).log_path)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidates.append(cache_dir() / "logs" / f"sample-{stamp}-{os.getpid()}.log")
    log = log_unexpected_error(err, candidates)
    first_line = str(err).splitlines()[0] if str(err) else ""
    if log is None:
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)
    print(f"error: unexpected {type(err).__name__}: {first_line}"
          + (f" (the traceback is in {log}; please report it)" if log else ""), file=sys.stderr)
    return 1


def _run(argv: list[str] | None, session: _Session, single_process: bool = False) -> int:
    args = build_parser().parse_args(argv)
    _setup_console_logging()
    try:
        config_file = config_path(args.config)
    except FileNotFoundError as err:
        raise InputValidationError([str(err)]) from None
    problems = check_config_file(config_file)
    if problems:
        raise InputValidationError(problems)
    config = resolve_config(args)
    s = config["sampling"]
    if args.prompt is not None and args.redo is None:
        raise InputValidationError(["--prompt sets a new prompt for the clip given with --redo K; add --redo K"])

    # Settings, device and weights: all known without any input file.
    problems = check_sampling_settings(s) + check_clip_settings(s["num_frames"], s["height"], s["width"],
                                                                s["history_frames"], s["resize"])
    if args.redo is not None and args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        problems.append(f"--seed {args.seed}: must be an integer in [0, 2^64)")
    if args.max_vram is not None and not (math.isfinite(args.max_vram) and args.max_vram > 0):
        problems.append(f"--max-vram {args.max_vram}: must be a positive number of GiB")
    threshold = s.get("step_cache_threshold")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        problems.append(f"--cache-threshold {threshold}: must be a finite number >= 0")
    timesteps = s.get("timesteps")
    if timesteps is not None:
        from ..sampling.scheduling import check_timesteps

        try:
            if len(check_timesteps(timesteps)) != s["steps"]:
                problems.append(f"--steps {s['steps']}: the schedule names {len(timesteps)} timesteps {timesteps} "
                                "(sampling.timesteps); drop one of them")
        except ValueError as err:
            problems.append(f"sampling.timesteps in {config['config_file']}: {err}")
    if s.get("step_cache_ratios") is not None and s.get("step_cache") != "magcache":
        problems.append("--cache-ratios: the magnitude ratios are for --cache magcache")
    elif s.get("step_cache_ratios") is not None:
        from ..acceleration.step_cache import load_mag_ratios

        try:
            load_mag_ratios(s["step_cache_ratios"])
        except ValueError as err:
            problems.append(f"--cache-ratios: {err}")
    from .loras import check_loras, lora_specs

    specs, lora_problems = lora_specs(config)
    problems += lora_problems
    if config.get("dtype") not in DTYPES:
        problems.append(f"dtype {config.get('dtype')!r} in {config['config_file']}: must be one of {', '.join(DTYPES)}")
    shape_ok = not problems
    world = 1 if single_process else int(os.environ.get("WORLD_SIZE", 1))
    if args.split_gpus:
        if args.sp != 1 or args.cfg_parallel:
            problems.append("--split-gpus chooses --sp and --cfg-parallel itself: drop them (or drop --split-gpus)")
        else:  # guidance off (cfg 1, e.g. --fast) has one branch: every rank shares its tokens
            args.cfg_parallel = world > 1 and world % 2 == 0 and float(s.get("cfg", 1.0)) != 1.0
            args.sp = world // (2 if args.cfg_parallel else 1)
    cfg_degree = 2 if args.cfg_parallel else 1
    if args.sp * cfg_degree > 1 or world > 1:  # several ranks on one video: all checked before loading
        from .ranks import parallel_run_problems

        problems += parallel_run_problems(args.sp, cfg_degree, world, s if shape_ok else None,
                                          run_device(config, args.device), config.get("attention"))
    problems += check_device(args.device, config if shape_ok else None, s if shape_ok else None)
    weights_problems = check_model_dirs(config)
    if not weights_problems and not is_tiny(config):
        weights_problems = check_weight_headers(_resolve_dir(config["base_model_dir"]),
                                                _resolve_dir(config["longvie_dir"]))
    problems += weights_problems
    problems += check_loras(config, specs, _resolve_dir(config.get("base_model_dir")),
                            _resolve_dir(config.get("longvie_dir")), tiny=is_tiny(config),
                            model_known=is_tiny(config) or not weights_problems)
    if problems and args.cond is None:  # no point rendering the default example
        if args.out is not None:
            problems += check_output_dir(args.out)
        raise InputValidationError(problems)

    cond = args.cond or default_example(config, args.clips)
    image = args.image or cond.parent / "first.png"
    out = args.out or Path("outputs") / f"{config['preset']}_{cond.resolve().parent.name}"
    out_checked = []

    def check_count(num_clips: int) -> list[str]:  # the folder and disk space once the clip count is known
        out_checked.append(num_clips)
        return check_output_dir(out, estimate_run_bytes(s, num_clips) if shape_ok else 0)

    try:
        inputs = validate_inputs(image, cond, num_frames=s["num_frames"], height=s["height"], width=s["width"],
                                 resize=s["resize"], num_clips=args.clips, history_frames=s["history_frames"],
                                 progress=not args.no_progress, check_count=check_count)
    except InputValidationError as err:
        problems += [p for p in err.problems if p not in problems]
        inputs = None
    if inputs is not None:
        if not args.allow_placeholder_prompts:
            problems += placeholder_problems(inputs.clips)
        if args.redo is not None and not 0 <= args.redo < len(inputs.clips):
            problems.append(f"--redo {args.redo}: the run has clips 0..{len(inputs.clips) - 1}")
    if not out_checked:
        problems += check_output_dir(out)
    if not any(p.startswith(f"--out {out}") for p in problems):
        problems += check_redo(out, args.redo)
    if problems:
        raise InputValidationError(problems)
    if args.max_vram is not None:  # before any model loads: the estimate runs on fake tensors
        try:
            guidance = "batch" if args.cfg_batch else "parallel" if args.cfg_parallel else None
            logger.info("%s", apply_max_vram(config, args.max_vram, guidance))
        except ValueError as err:
            raise InputValidationError([str(err)]) from None

    from ..acceleration.modes import ModeError

    try:  # every mode combination is checked against the device before any model loads
        plan = plan_run_modes(config, args.device, args.sp)
    except ModeError as err:
        raise InputValidationError([str(err)]) from None
    logger.info("%s", plan.describe())

    session.out = out
    if config.get("fast_note"):
        logger.info("%s", config.pop("fast_note"))
    from .loras import lora_records

    lora_settings, config["loras"] = lora_records(specs)  # sha256 of each LoRA: compared on resume
    settings = run_settings(config, plan, loras=lora_settings)
    if args.redo is not None and not 0 <= args.redo < len(inputs.clips):
        print(f"error: --redo {args.redo}: the run has clips 0..{len(inputs.clips) - 1}", file=sys.stderr)
        return 2
    redo = None if args.redo is None else RedoRequest(args.redo, seed=args.seed, text=args.prompt)
    load_pipe, leader = pipeline_loader(config, args.device, args.sp, cfg_degree), None
    if args.sp * cfg_degree > 1:
        # several ranks, one video: rank 0 runs the sampler and owns --out; the others make its pipeline calls
        from ..acceleration.parallel import init_distributed
        from .ranks import Leader, end_distributed, follow

        try:
            rank, _ = init_distributed(run_device(config, args.device))
        except ValueError as err:  # LOCAL_RANK beyond the visible GPUs (also checked above)
            raise InputValidationError([str(err)]) from None
        if rank:
            follow(pipeline_loader(config, args.device, args.sp, cfg_degree, text_encoder=False))
            end_distributed()
            return 0
        leader = Leader(load_pipe)
        load_pipe = leader.load
    sampler = LongVideoSampler(settings, load_pipe=load_pipe, progress=not args.no_progress)
    sampler.release_text_encoder = True  # one run per process: umT5 leaves memory once its prompts are cached
    session.sampler = sampler
    if args.cfg_batch:
        sampler.pipe_kwargs = {"cfg_batch": True}
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "longvie.sample", *given])
    try:
        last = len(inputs.clips) - 1  # the other ranks are released before rank 0 stitches the video
        result = sampler(out, inputs.image, inputs.clips, seed=args.seed if args.redo is None else None,
                         redo=redo, config={**config, "image": str(inputs.image), "cond": str(inputs.cond)},
                         command=command, notes=inputs.notes,
                         allow_placeholder_prompts=args.allow_placeholder_prompts,
                         on_clip_done=None if leader is None else (lambda i: leader.stop() if i == last else None))
    finally:
        if leader is not None:
            leader.stop()
            if leader.stopped:
                from .ranks import end_distributed

                end_distributed()
    run_dir = result.run_dir.resolve()
    print(f"video: {result.video_path.resolve()} ({result.num_frames} frames, {len(result.clip_paths)} clips "
          f"at {settings.fps} fps)")
    print(f"clips: {run_dir / 'clips'}/  manifest: {run_dir / 'manifest.json'}  log: {run_dir / 'run.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
