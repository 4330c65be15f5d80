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

from .config import load_train_config, parse_assignment

# Flag -> dotted config key (a flag left out keeps the config's value).
FLAG_KEYS = {
    "output": "train.output_dir",
    "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate",
    "seed": "train.seed",
    "save_every": "train.save_every",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "init_from": "model.init_from",
    "base_model": "model.base_model_dir",
    "metadata": "data.metadata",
    "num_workers": "data.num_workers",
    "cache_dir": "data.cache_dir",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that select and override a training config (shared with ``longvie.train.cache``)."""
    parser.add_argument("--config", default=None, help="stage config, e.g. configs/train_stage1.yaml")
    parser.add_argument("--stage", type=int, choices=(1, 2, 3), default=None,
                        help="stage number (selects configs/train_stageN.yaml when --config is not given)")
    parser.add_argument("--preset", choices=("tiny",), default=None,
                        help="tiny: tiny random model + synthetic data, runs on a CPU")
    parser.add_argument("--output", default=None, help="output folder (train.output_dir)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (train.max_steps)")
    parser.add_argument("--learning-rate", "--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=None)
    parser.add_argument("--init-from", default=None,
                        help="previous stage's output folder or checkpoint (stages 2-3), or 'half_copy'")
    parser.add_argument("--base-model", default=None, help="Wan2.1-I2V-14B-480P folder (either layout)")
    parser.add_argument("--metadata", default=None, help="training metadata JSON/CSV")
    parser.add_argument("--num-workers", type=int, default=None, help="data-loader workers per process")
    parser.add_argument("--cache-dir", default=None, help="latent cache folder (see python -m longvie.train.cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set degradation.first_frame_p=0.3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> dict:
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    overrides.update(parse_assignment(text) for text in args.set)
    return load_train_config(args.config, args.stage, args.preset, overrides)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="continue from the output folder's latest checkpoint (none: start fresh), "
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
    from ..checkpoint_keys import CheckpointKeyError
    from ..loading import WeightsError
    from .data import DataError
    from .trainer import train

    try:
        result = train(config, resume=args.resume, build_cache=args.build_cache)
    except (DataError, WeightsError, CheckpointKeyError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)  # a problem with the inputs: the message says what to fix
        return 2
    print(f"done: {result.step} steps; weights in {result.final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
