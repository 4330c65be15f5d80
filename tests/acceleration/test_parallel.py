"""Sequence-parallel (Ulysses) and CFG-parallel sampling over gloo ranks == one process (float32, 1e-5)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longvie.acceleration.parallel import ParallelConfig

WORKER = Path(__file__).with_name("parallel_worker.py")
REPO = Path(__file__).resolve().parents[2]


def run_torchrun(tmp_path, tiny_checkpoints, nproc, layouts):
    out = tmp_path / f"results_{nproc}.pt"
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), *map(str, tiny_checkpoints), str(out), *layouts]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return torch.load(out)


def assert_same(result, reference, what):
    scale = reference.abs().max()
    error = (result - reference).abs().max()
    assert error <= 1e-5 * scale, f"{what}: max error {error} vs scale {scale}"


@pytest.mark.slow
def test_two_ranks_sequence_parallel_and_cfg_parallel(tmp_path, tiny_checkpoints):
    results = run_torchrun(tmp_path, tiny_checkpoints, 2, ["2x1", "1x2"])
    for layout in ("2x1", "1x2"):
        assert_same(results[f"{layout}_velocity"], results["reference_velocity"], f"{layout} velocity")
        assert_same(results[f"{layout}_latents"], results["reference_latents"], f"{layout} clip")


@pytest.mark.slow
def test_four_ranks_sequence_and_cfg_parallel_together(tmp_path, tiny_checkpoints):
    results = run_torchrun(tmp_path, tiny_checkpoints, 4, ["2x2"])
    assert_same(results["2x2_velocity"], results["reference_velocity"], "2x2 velocity")
    assert_same(results["2x2_latents"], results["reference_latents"], "2x2 clip")


def test_config_checks():
    with pytest.raises(ValueError, match="cfg_degree"):
        ParallelConfig(2, 3)
    assert ParallelConfig(4, 2).world_size == 8


@pytest.mark.slow
def test_sample_cli_under_torchrun_only_rank0_writes(tmp_path):
    """torchrun -m longvie.sample --sp 2: one run directory (rank 0's), the same clip as one process."""
    from safetensors.torch import load_file

    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
               LONGVIE_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    common = ["--preset", "tiny", "--clips", "1", "--steps", "2", "--no-progress"]
    parallel = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "longvie.sample", *common, "--sp", "2", "--out", str(tmp_path / "sp")],
                              env=env, capture_output=True, text=True, timeout=600)
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-5000:]
    single = subprocess.run([sys.executable, "-m", "longvie.sample", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-5000:]
    assert not list((tmp_path / "scratch").glob("longvie_rank*")), "the other rank's private copy is removed"
    a = load_file(str(tmp_path / "sp" / "state" / "clip_000.safetensors"))
    b = load_file(str(tmp_path / "one" / "state" / "clip_000.safetensors"))
    assert torch.equal(a["noise"], b["noise"])
    assert (a["frames"].int() - b["frames"].int()).abs().max() <= 1
