"""Benchmark: a row per cache kind and published threshold, the fast mode against the exact clip, and
MagCache calibration into a ratios file that the cache then reads."""
from __future__ import annotations

import json

from longvie.benchmark.speed import main

SMALL = ["--no-warmup", "--frames", "5", "--height", "32", "--width", "48"]


def test_calibrate_then_cache_rows_and_fast_mode(tmp_path, capsys):
    ratios = tmp_path / "ratios.json"
    assert main(["--steps", "3", *SMALL, "--calibrate-magcache", str(ratios)]) == 0
    data = json.loads(ratios.read_text())
    assert data["steps"] == 3 and len(data["cond"]) == 3 and len(data["uncond"]) == 3 and data["cond"][0] == 1.0
    assert all(r > 0 for r in data["cond"] + data["uncond"]) and data["preset"] == "tiny"
    assert main(["--steps", "3", *SMALL, "--calibrate-magcache", str(ratios)]) == 2  # never overwritten
    capsys.readouterr()

    out = tmp_path / "bench.json"
    assert main(["--steps", "3", *SMALL, "--cache", "teacache", "--cache", "magcache", "--cache-ratios",
                 str(ratios), "--fast", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    assert {"cache-teacache-0.13", "cache-teacache-0.19", "cache-teacache-0.26", "cache-magcache-0.12",
            "cache-magcache-0.24", "fast"} <= set(results)
    for name, result in results.items():
        if name.startswith("cache-"):
            assert set(result["skipped_steps"]) == {"cond", "uncond"} and "speed_up" in result and "ssim" in result
    # TeaCache retains its first 5 steps: nothing to skip in 3; the fast mode runs 4 steps without guidance
    assert results["cache-teacache-0.19"]["skipped_steps"] == {"cond": 0, "uncond": 0}
    assert results["cache-teacache-0.19"]["max_diff"] == 0
    fast = results["fast"]
    assert fast["max_diff"] > 0 and fast["psnr_db"] is not None
    assert "quality numbers mean nothing here" in printed and "| fast" in printed
