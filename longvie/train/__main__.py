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

from .command import run_cli
from .config import add_config_arguments, config_from_args


def main(argv=None) -> int:
    return run_cli(_run, argv)


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
    # Before any model loads: never write into a folder of the user's files (exit 2, one sentence).
    from .outputs import claim_cache_dir, claim_training_output

    claim_training_output(config["train"]["output_dir"], "--output" if args.output else "train.output_dir")
    if args.build_cache:
        claim_cache_dir(config["data"]["cache_dir"])
    output["dir"] = config["train"]["output_dir"]
    from .trainer import train

    result = train(config, resume=args.resume, build_cache=args.build_cache)
    print(f"done: {result.step} steps; weights in {result.final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
