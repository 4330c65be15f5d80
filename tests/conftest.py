"""Shared fixtures: tiny checkpoints in the released layouts, and the upstream example when present."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_EXAMPLE = REPO.parent / "shared" / "examples" / "ride_horse"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads thrash
    (measured 5-10x slower with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """(base_dir, longvie_dir): a tiny diffusers-layout Wan2.1-I2V folder + control/dit safetensors."""
    from longvie.presets.tiny import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("tiny_ckpt"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_checkpoints):
    from longvie.sampling.pipeline import LongViePipeline

    return LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.float32, device="cpu")


@pytest.fixture
def ride_horse():
    if not SHARED_EXAMPLE.is_dir():
        pytest.skip("../shared/examples/ride_horse is not present")
    return SHARED_EXAMPLE


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-step training or multi-process runs (still part of the default run)")


@pytest.fixture(scope="session")
def gpu_check_twin(tmp_path_factory):
    """One run of `bash scripts/gpu_check.sh` without CUDA (its tiny CPU twin), shared by the tests of the
    script (tests/scripts/test_gpu_check.py) and of the mode matrix (tests/benchmark/test_matrix.py reads its
    24 rows). Returns (out folder, completed process, seconds). The budget is large so that no row is left
    out on a slow CI machine (the budget logic has its own test)."""
    import os
    import subprocess
    import time

    out = tmp_path_factory.mktemp("gpu_check") / "run"
    docs = REPO / "docs" / "performance.md"
    before = docs.read_bytes() if docs.is_file() else None
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(out), "--budget-s", "1800"],
                            capture_output=True, text=True, timeout=1500, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    after = docs.read_bytes() if docs.is_file() else None
    return {"out": out, "result": result, "seconds": seconds, "docs_unchanged": before == after}
