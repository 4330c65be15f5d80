"""Sequence-parallel (Ulysses) and CFG-parallel sampling over gloo ranks == one process (float32, 1e-5), for
rank counts that do not divide the token counts; encoders, prompt cache and tiled VAE decode split over the
ranks == one process (bit for bit); torchrun -m longvie.sample --sp 3: rank 0 alone writes, nothing crashes
after clip 0. One torchrun start per rank count (each costs seconds on 2 cores)."""
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


def _env(**extra):
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
                **extra)


def run_torchrun(tmp_path, tiny_checkpoints, nproc, items):
    out = tmp_path / f"results_{nproc}.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), *map(str, tiny_checkpoints), str(out), *items]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return torch.load(out)


def assert_same(result, reference, what):
    scale = reference.abs().max()
    error = (result - reference).abs().max()
    assert error <= 1e-5 * scale, f"{what}: max error {error} vs scale {scale}"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_checkpoints):
    return run_torchrun(tmp_path_factory.mktemp("two"), tiny_checkpoints, 2,
                        ["2x1", "1x2", "2x1@odd", "2x1@_native_math", "stages"])


@pytest.mark.slow
def test_two_ranks_sequence_parallel_and_cfg_parallel(two_ranks):
    for layout in ("2x1", "1x2"):
        assert_same(two_ranks[f"{layout}_velocity"], two_ranks["reference_velocity"], f"{layout} velocity")
        assert_same(two_ranks[f"{layout}_latents"], two_ranks["reference_latents"], f"{layout} clip")


@pytest.mark.slow
def test_uneven_shards_and_backends_without_diffusers_context_parallel(two_ranks):
    """63 clip + 42 history tokens on 2 ranks (53/52 main, 32/31 control tokens: LongVie's all-to-all for the
    2 main heads, the key/value gather for the control stream's 1 head), and SDPA's math kernel, which
    diffusers cannot run context-parallel (it used to attend only the local shard, silently)."""
    assert_same(two_ranks["2x1@odd_velocity"], two_ranks["reference_velocity_odd"], "uneven shards")
    assert_same(two_ranks["2x1@_native_math_velocity"], two_ranks["reference_velocity__native_math"], "_native_math")


@pytest.mark.slow
def test_encoders_prompt_cache_and_tiled_decode_over_ranks_equal_one_process(two_ranks):
    names = ["prompt_embeds", "negative_embeds", "image_embeds", "image_latents", "dense", "sparse",
             "history_latents", "cached", "decoded_tiled"]
    for name in names:
        assert torch.equal(two_ranks[f"stages_{name}"], two_ranks[f"stages_reference_{name}"]), name
    assert not two_ranks["stages_text_encoder_after_release"], "umT5 is released after caching"


@pytest.mark.slow
def test_four_ranks_sequence_and_cfg_parallel_together(tmp_path, tiny_checkpoints):
    results = run_torchrun(tmp_path, tiny_checkpoints, 4, ["2x2", "4x1@odd"])
    assert_same(results["2x2_velocity"], results["reference_velocity"], "2x2 velocity")
    assert_same(results["2x2_latents"], results["reference_latents"], "2x2 clip")
    assert_same(results["4x1@odd_velocity"], results["reference_velocity_odd"], "4 ranks, 63 tokens")


def test_config_checks():
    with pytest.raises(ValueError, match="cfg_degree"):
        ParallelConfig(2, 3)
    assert ParallelConfig(4, 2).world_size == 8


@pytest.mark.slow
def test_sample_cli_three_ranks_two_clips_only_rank0_writes(tmp_path):
    """The review's failure: torchrun --nproc_per_node 3 ... --sp 3 wrote clip 0 and crashed on clip 1 (56
    history tokens). Now both clips are made, equal to one process's, one run directory, no per-rank copies,
    the paths printed once."""
    from safetensors.torch import load_file

    env = _env(LONGVIE_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    common = ["--preset", "tiny", "--clips", "2", "--steps", "2", "--no-progress"]
    parallel = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
                               "-m", "longvie.sample", *common, "--sp", "3", "--out", str(tmp_path / "sp")],
                              env=env, capture_output=True, text=True, timeout=600)
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-5000:]
    assert parallel.stdout.count("video: ") == 1, parallel.stdout
    single = subprocess.run([sys.executable, "-m", "longvie.sample", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-5000:]
    assert not list((tmp_path / "scratch").glob("longvie_rank*")), "no per-rank copies of the run folder"
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    for clip in (0, 1):
        a = load_file(str(tmp_path / "sp" / "state" / f"clip_{clip:03d}.safetensors"))
        b = load_file(str(tmp_path / "one" / "state" / f"clip_{clip:03d}.safetensors"))
        assert torch.equal(a["noise"], b["noise"])
        assert (a["frames"].int() - b["frames"].int()).abs().max() <= 1
