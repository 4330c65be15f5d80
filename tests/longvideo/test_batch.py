"""Many videos over ranks: each run belongs to exactly one rank, runs are resumable, run lists are checked."""
from __future__ import annotations

import json

import pytest

from longvie.longvideo.batch import main, read_run_list
from longvie.longvideo.ranks import shard


def test_shard_is_disjoint_and_complete():
    items = list(range(11))
    parts = [shard(items, rank, 4) for rank in range(4)]
    assert sorted(sum(parts, [])) == items and sum(map(len, parts)) == len(items)
    with pytest.raises(ValueError):
        shard(items, 4, 4)


def test_run_list_errors_name_the_line(tmp_path):
    cond = tmp_path / "a" / "cond.json"
    cond.parent.mkdir()
    cond.write_text("[]")
    runs = tmp_path / "runs.txt"
    runs.write_text("# comment\na/cond.json\n\na/cond.json out_b\n")
    parsed = read_run_list(runs, tmp_path / "out")
    assert [r.out.name for r in parsed] == ["0002_a", "out_b"]
    runs.write_text("a/cond.json x\na/cond.json x\n")
    with pytest.raises(ValueError, match="runs.txt:2: run directory .* line 1"):
        read_run_list(runs, tmp_path)
    runs.write_text("missing/cond.json\n")
    with pytest.raises(ValueError, match="runs.txt:1: .*does not exist"):
        read_run_list(runs, tmp_path)


@pytest.mark.slow
def test_two_ranks_make_disjoint_resumable_runs(tmp_path, monkeypatch):
    from longvie.examples.synthetic import make_synthetic_example

    example = tmp_path / "example"
    make_synthetic_example(example, clips=1, height=64, width=112, frames_per_clip=9)
    runs = tmp_path / "runs.txt"
    runs.write_text("".join(f"example/cond.json run_{i}\n" for i in range(3)))
    monkeypatch.chdir(tmp_path)
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main([str(runs), "--preset", "tiny", "--clips", "1", "--no-progress", "--steps", "1"]) == 0
        if rank == 0:
            assert (tmp_path / "run_0").is_dir() and (tmp_path / "run_2").is_dir()
            assert not (tmp_path / "run_1").exists(), "run 1 belongs to rank 1"
    done = {}
    for i in range(3):
        manifest = json.loads((tmp_path / f"run_{i}" / "manifest.json").read_text())
        done[i] = manifest["clips"][0]["status"]
    assert done == {0: "done", 1: "done", 2: "done"}
    # rank 0 owns runs 0 and 2, rank 1 run 1: re-running rank 1 resumes (nothing left to generate)
    stamp = (tmp_path / "run_1" / "state" / "clip_000.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("RANK", "1")
    assert main([str(runs), "--preset", "tiny", "--clips", "1", "--no-progress", "--steps", "1"]) == 0
    assert (tmp_path / "run_1" / "state" / "clip_000.safetensors").stat().st_mtime_ns == stamp
