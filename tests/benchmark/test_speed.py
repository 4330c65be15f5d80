"""The speed benchmark runs the tiny preset on the CPU and reports every column for each mode."""
from __future__ import annotations

import json
import math

import numpy as np

from longvie.benchmark.speed import PeakRSS, frame_difference, main


def test_tiny_benchmark_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--steps", "2", "--cfg-batch", "--no-warmup", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| exact" in table and "| cfg-batch" in table and "PSNR dB" in table
    payload = json.loads(out.read_text())
    assert payload["device"].startswith("CPU") and payload["flops_per_clip"] > 0
    exact, batched = payload["results"]
    assert exact["mode"] == "exact" and exact["max_diff"] == 0 and exact["psnr_db"] is None  # inf -> null
    assert exact["ssim"] == 1.0 and 0.99 < batched["ssim"] <= 1.0  # same math: SSIM against exact
    assert batched["psnr_db"] is None or batched["psnr_db"] > 40, "same math: at most rounding differences"
    for result in payload["results"]:
        assert result["stages"]["denoise"] > 0 and result["stages"]["vae_decode"] > 0
        assert math.isclose(result["seconds_per_step"], result["stages"]["denoise"] / 2)
        assert result["peak_rss_bytes"] > 0 and result["peak_gpu_bytes"] is None
        assert result["tflops"] > 0


def test_frame_difference_and_psnr():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 255
    diff = frame_difference(b, a)
    assert diff["max_diff"] == 255 and math.isclose(diff["mean_diff"], 255 / a.size)
    assert math.isclose(diff["psnr_db"], 10 * math.log10(a.size))  # MSE = 255^2 / size
    assert math.isinf(frame_difference(a, a)["psnr_db"])


def test_peak_rss_sees_a_temporary_allocation():
    """The sampler thread records the high point of a temporary allocation that is gone at exit."""
    import time

    with PeakRSS() as rss:
        block = np.ones(64 * 2 ** 20, np.uint8)  # 64 MiB, touched
        during = rss.process.memory_info().rss
        deadline = time.monotonic() + 10  # the thread polls every 5 ms; a busy machine may delay it
        while rss.peak < during and time.monotonic() < deadline:
            time.sleep(0.01)
        del block
    assert rss.peak >= during


def test_estimates_are_printed_beside_the_measured_peaks(tmp_path, capsys):
    """--with-estimate (always on CUDA) adds the memory estimator's GPU peak of each mode's placement."""
    out = tmp_path / "bench.json"
    assert main(["--steps", "1", "--cfg-batch", "--no-warmup", "--with-estimate", "--json", str(out)]) == 0
    assert "est. GPU GiB" in capsys.readouterr().out
    exact, batched = json.loads(out.read_text())["results"]
    assert 0 < exact["estimated_gpu_bytes"] <= batched["estimated_gpu_bytes"]  # two guidance branches per call


def test_vae_tiling_mode_and_offload_needs_cuda(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--steps", "1", "--no-warmup", "--vae-tiling", "--json", str(out)]) == 0
    exact, tiled = json.loads(out.read_text())["results"]
    assert tiled["mode"] == "vae-tiling" and tiled["stages"]["vae_decode"] > 0
    assert main(["--steps", "1", "--offload", "group", "--device", "cpu"]) == 2
    assert "needs --device cuda" in capsys.readouterr().err
