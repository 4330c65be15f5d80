"""Command line of LongVie 2 training.

    python -m longvie.train --config configs/train_stage1.yaml [--output DIR] [--set KEY=VALUE ...]
    python -m longvie.train --config configs/train_stage2.yaml --init-from outputs/train/stage1
    python -m longvie.train --preset tiny --stage 1 --max-steps 30 --output /tmp/tiny1   # CPU, seconds
    python -m longvie.train --config configs/train_stage1.yaml --resume                  # continue a run

Multi-GPU: ``accelerate launch --config_file configs/accelerate/deepspeed_zero2_8gpu.yaml -m longvie.train ...``;
CPU processes: ``torchrun --nproc_per_node 2 -m longvie.train ...``.
"""
from __future__ import annotations

import argparse
import sys

from .config import add_config_arguments, config_from_args


def main(argv=None) -> int:
    return run_cli(_run, argv)


def run_cli(run, argv=None) -> int:
    """One handler for a whole command (``run(argv, output)``; ``output["dir"]`` names the folder
    for the error log once known): known errors print their message (exit 2 for bad input, 1 for a
    fault), Ctrl-C exits 130, anything else prints one line naming the log file with the traceback."""
    from .. import LongVieError

    output = {}
    try:
        return run(argv, output)
    except KeyboardInterrupt:
        print("\ninterrupted; the checkpoints saved so far are kept — run the same command with --resume to "
              "continue", file=sys.stderr)
        return 130
    except (LongVieError, FileNotFoundError) as err:  # a problem with the inputs: the message says what to fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or 'the output folder'}: {err.strerror or err} — free space or choose a "
              "writable --output, then run the same command with --resume", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err):
            print("error: out of memory — train with DeepSpeed ZeRO-2 + CPU offload (ACCELERATE_CONFIG="
                  "configs/accelerate/deepspeed_zero2_8gpu.yaml), keep train.gradient_checkpointing true, or "
                  "precompute the latent cache (--build-cache --cache-dir DIR)", file=sys.stderr)
            return 1
        return _unexpected(err, output)
    except Exception as err:  # noqa: BLE001 - one line here, the traceback in the log
        return _unexpected(err, output)


def _unexpected(err: BaseException, output: dict) -> int:
    import datetime
    import os
    from pathlib import Path

    from .. import log_unexpected_error

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"error-{stamp}-{os.getpid()}.log"
    candidates = [Path(output["dir"]) / "logs" / name] if output.get("dir") else []
    candidates.append(Path.cwd() / name)
    log = log_unexpected_error(err, candidates)
    if log is None:
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)
    first_line = str(err).splitlines()[0] if str(err) else ""
    print(f"error: unexpected {type(err).__name__}: {first_line}"
          + (f" (the traceback is in {log}; please report it)" if log else ""), file=sys.stderr)
    return 1


def _run(argv, output: dict) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="continue from the output folder's newest intact checkpoint (none: start fresh), "
                             "or from the given checkpoint folder")
    parser.add_argument("--build-cache", action="store_true",
                        help="encode the data into --cache-dir first, then train from the cache")
    args = parser.parse_args(argv)
    if args.build_cache and not args.cache_dir:
        parser.error("--build-cache needs --cache-dir")
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    output["dir"] = config["train"]["output_dir"]
    from .trainer import train

    result = train(config, resume=args.resume, build_cache=args.build_cache)
    print(f"done: {result.step} steps; weights in {result.final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
