"""``python -m longvie.benchmark``: ``--estimate-memory [--config ...] [--max-vram GiB]`` estimates GPU and
host memory per mode without a GPU (:mod:`longvie.acceleration.memory`); ``--amdahl`` measures the
serial fraction of a clip and the expected speed-up on several GPUs (:mod:`longvie.benchmark.amdahl`);
``--mode-matrix`` runs every combination of offload, FP8, compile and step cache against the exact path
(:mod:`longvie.benchmark.matrix`);
anything else runs the speed benchmark (:mod:`longvie.benchmark.speed`)."""
from __future__ import annotations

import sys

ESTIMATE_FLAG = "--estimate-memory"
AMDAHL_FLAG = "--amdahl"
MATRIX_FLAG = "--mode-matrix"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if ESTIMATE_FLAG in argv:
        from ..acceleration.memory import main as estimate_main

        argv.remove(ESTIMATE_FLAG)
        return estimate_main(argv)
    if AMDAHL_FLAG in argv:
        from .amdahl import main as amdahl_main

        argv.remove(AMDAHL_FLAG)
        return amdahl_main(argv)
    if MATRIX_FLAG in argv:
        from .matrix import main as matrix_main

        argv.remove(MATRIX_FLAG)
        return matrix_main(argv)
    try:
        from .speed import main as speed_main
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.speed":
            raise
        print("the speed benchmark (longvie.benchmark.speed) is not part of this installation yet; "
              f"`python -m longvie.benchmark {ESTIMATE_FLAG}` estimates memory without a GPU", file=sys.stderr)
        return 2
    return speed_main(argv)


if __name__ == "__main__":
    sys.exit(main())
