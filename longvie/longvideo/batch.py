"""Many long videos across GPUs and nodes: a list of runs sharded over torchrun's ranks.

    torchrun --nproc_per_node 8 -m longvie.longvideo.batch runs.txt --out-root outputs/batch [sample options]
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m longvie.longvideo.batch runs.txt --out-root /shared/outputs

``runs.txt``: one run per line, ``path/to/cond.json`` optionally followed by a run directory
(otherwise ``<out-root>/<line number>_<folder of cond.json>``); blank lines and ``#`` comments are
skipped; relative paths are relative to the list file. The first frame is the ``first.png`` next to
each cond.json. Run ``i`` (0-based over the kept lines) belongs to rank ``i mod world size``, so no
two ranks ever write the same run directory, and each run is an ordinary resumable run of
``python -m longvie.sample``: re-running the same command resumes every unfinished video. Every rank
uses its own GPU (``cuda:LOCAL_RANK``) and keeps its pipeline loaded across its runs. No process
group is needed (ranks never communicate); torchrun only provides RANK/WORLD_SIZE/LOCAL_RANK.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .ranks import rank_and_world, shard


@dataclass(frozen=True)
class BatchRun:
    cond: Path
    out: Path


def read_run_list(path: Path, out_root: Path) -> list[BatchRun]:
    """Parse ``runs.txt`` (see the module docstring); errors name the file and line."""
    runs, seen = [], {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{path}:{number}: expected 'cond.json [run_dir]', got {line!r}")
        cond = (Path(path).parent / parts[0]).resolve()
        if not cond.is_file():
            raise ValueError(f"{path}:{number}: {cond} does not exist")
        out = Path(path).parent / parts[1] if len(parts) == 2 else out_root / f"{number:04d}_{cond.parent.name}"
        out = out.resolve()
        if out in seen:
            raise ValueError(f"{path}:{number}: run directory {out} is also used on line {seen[out]}")
        seen[out] = number
        runs.append(BatchRun(cond, out))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.longvideo.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="text file, one cond.json (and optional run directory) per line")
    parser.add_argument("--out-root", type=Path, default=Path("outputs/batch"))
    args, sample_args = parser.parse_known_args(argv)
    try:
        runs = read_run_list(args.runs, args.out_root)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rank, world = rank_and_world()
    mine = shard(runs, rank, world)
    if "--device" not in sample_args and world > 1:
        import torch

        if torch.cuda.is_available():
            sample_args += ["--device", f"cuda:{os.environ.get('LOCAL_RANK', 0)}"]
    from .cli import main as sample_main

    failures = 0
    for run in mine:
        print(f"[rank {rank}/{world}] {run.cond} -> {run.out}", flush=True)
        code = sample_main(["--cond", str(run.cond), "--out", str(run.out), *sample_args], single_process=True)
        failures += code != 0
    print(f"[rank {rank}/{world}] {len(mine) - failures}/{len(mine)} runs finished", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
