"""Which rank writes what when several processes (torchrun) work on long videos.

* One video over N ranks (sequence/CFG parallel): every rank must make the same pipeline calls, but
  only rank 0 writes the run directory. The other ranks work on a private copy of it taken before
  rank 0 changes anything (:func:`follower_run_dir`), so they read the same manifest and resume
  state, make the same decisions, and their copy is deleted at the end.
* Many videos over N ranks (:mod:`longvie.longvideo.batch`): run ``i`` belongs to rank ``i mod N``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed when initialised, else of torchrun's environment, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def follower_run_dir(run_dir: Path, rank: int) -> Path:
    """A private copy of ``run_dir`` for rank ``rank`` > 0 (empty if ``run_dir`` does not exist yet).

    Call it on every rank > 0 between two barriers, before rank 0 starts writing. The lock file is
    not copied."""
    scratch = Path(tempfile.mkdtemp(prefix=f"longvie_rank{rank}_"))
    copy = scratch / Path(run_dir).name
    if Path(run_dir).is_dir():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("run.lock"))
    return copy


def remove_follower_run_dir(copy: Path) -> None:
    shutil.rmtree(Path(copy).parent, ignore_errors=True)


def shard(items: list, rank: int, world: int) -> list:
    """The items of rank ``rank``: every ``world``-th one starting at ``rank`` (disjoint, together complete)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return items[rank::world]
