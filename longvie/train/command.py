"""The one top-level error handler of the training command lines (``python -m longvie.train``,
``python -m longvie.train.cache``): one message per known failure, never a raw traceback."""
from __future__ import annotations

import sys


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
