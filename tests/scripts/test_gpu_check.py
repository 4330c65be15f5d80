"""`bash scripts/gpu_check.sh` without CUDA runs its tiny CPU twin (issue 21, 7): every row kind of the GPU check
(exact, FP8, each step cache, the fast mode, each attention backend usable here, the 24 rows of the mode matrix,
the memory estimator beside the measured peaks), device named "CPU", nothing crashed, docs/performance.md left
alone. The run itself is the session fixture ``gpu_check_twin`` (tests/conftest.py; the mode matrix's tests read
the same run). The budget, the docs section and the hard stop are checked here on their own."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from longvie.benchmark import gpu_check
from longvie.benchmark.matrix import all_combinations

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _table_rows(table: str) -> dict[str, list[list[str]]]:
    """First cell -> the cells of every markdown table row that starts with it."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).append(cells)
    return rows


def test_the_cpu_twin_runs_every_row_kind(gpu_check_twin):
    result, out = gpu_check_twin["result"], gpu_check_twin["out"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    print(f"\nCPU twin: {gpu_check_twin['seconds']:.0f} s (bash scripts/gpu_check.sh, prerequisites included)")
    assert "no CUDA device: the tiny CPU twin runs" in result.stdout
    table = (out / "table.md").read_text()
    assert table in result.stdout  # the table is printed as well as written
    assert "crashed" not in table and not (out / "crashes.txt").exists()
    assert "### GPU check on CPU (" in table and "the tiny CPU twin of the GPU check, not a GPU measurement" in table
    assert "Command: `bash scripts/gpu_check.sh --out " in table

    records = gpu_check.read_results(out)
    facts = records[0]
    assert facts["part"] == "facts" and facts["device"] == "CPU" and facts["preset"] == "tiny"
    speed = {r["name"]: r for r in records if r["part"] == "speed"}
    assert list(speed) == ["exact", "fast", "cache-firstblock-0.05", "cache-teacache-0.2", "cache-magcache-0.24",
                           "fp8"]
    for name, r in speed.items():
        assert r["status"] == "ok", r
        assert r["seconds_per_step"] > 0 and r["peak_rss_bytes"] > 0 and r["peak_gpu_bytes"] is None
    assert speed["exact"]["max_diff"] == 0 and speed["fp8"]["fp8_kind"] == "weight-only"
    assert speed["fast"]["steps"] == 4 and speed["fp8"]["max_diff"] > 0
    assert all("skipped_steps" in speed[name] for name in speed if name.startswith("cache-"))

    attention = {r["name"]: r for r in records if r["part"] == "attention"}
    assert attention["native"]["status"] == "ok" and attention["native"]["max_abs_diff"] == 0
    for backend in ("_native_cudnn", "_native_flash", "flash", "_flash_3"):  # named, with the reason
        assert attention[backend]["status"].startswith("not measured: "), attention[backend]
    for r in attention.values():
        if r["status"] == "ok":
            assert r["seconds_per_call"] > 0 and r["max_abs_diff"] < 1e-4  # the same attention, other kernels

    matrix = {r["name"]: r for r in records if r["part"] == "matrix"}
    assert set(matrix) == {"/".join(c) for c in all_combinations()}
    assert all(r["status"] == "ok" for r in matrix.values())
    cells_of = _table_rows(table)
    matrix_rows = cells_of["none"] + cells_of["model"] + cells_of["group"]
    assert len(matrix_rows) == 24 and all(cells[4] == "ok" for cells in matrix_rows)

    estimates = next(r for r in records if r["part"] == "estimate")
    assert estimates["status"] == "ok", estimates
    assert set(estimates["speed"]) >= {"exact", "fp8", "fast", "cache-firstblock"}
    assert all(v["gpu_bytes"] > 0 for v in estimates["speed"].values())
    assert len(estimates["matrix"]) == 24 and all(v > 0 for v in estimates["matrix"].values())
    # the estimator's column is filled in every table of the twin
    assert all(re.fullmatch(r"\d+\.\d\d", cells_of[name][0][8]) for name in speed), cells_of["exact"]
    assert all(re.fullmatch(r"\d+\.\d\d", cells[-1]) for cells in matrix_rows)
    assert records[-1]["part"] == "end"


def test_the_twin_leaves_docs_alone(gpu_check_twin):
    assert gpu_check_twin["docs_unchanged"]
    assert "wrote this device's section" not in gpu_check_twin["result"].stdout


def test_render_only_writes_the_device_section_and_replaces_it(gpu_check_twin, tmp_path):
    """--render-only --write-docs: the section between this device's markers, replaced on a re-run; the rest of
    the page untouched; a GPU's section beside it stays."""
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nintro\n\n<!-- gpu_check: NVIDIA H100 80GB HBM3 begin -->\nH100 rows\n"
                    "<!-- gpu_check: NVIDIA H100 80GB HBM3 end -->\n\n## After\n\nkept\n")
    command = ["bash", str(SCRIPT), "--out", str(gpu_check_twin["out"]), "--render-only", "--write-docs",
               "--docs", str(page)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.count("<!-- gpu_check: CPU begin -->") == 1 and text.count("<!-- gpu_check: CPU end -->") == 1
    assert "H100 rows" in text and "## After\n\nkept" in text and text.startswith("# Performance\n\nintro\n")
    section = text.split("<!-- gpu_check: CPU begin -->")[1].split("<!-- gpu_check: CPU end -->")[0]
    assert section.strip() == (gpu_check_twin["out"] / "table.md").read_text().strip()


def test_the_budget_leaves_rows_out_with_the_reason():
    recorder = gpu_check.Recorder(None, started=0.0)
    recorder.elapsed = lambda: 100.0
    budget = gpu_check.Budget(recorder, 120.0)
    assert budget.refusal(15.0) is None
    why = budget.refusal(15.0, reserve=10.0)
    assert why.startswith("not measured: time budget --budget-s 120 spent") and "10 s kept for later rows" in why
    assert budget.refusal(10.0, share=0.5).startswith("not measured")  # the part's share (60 s) is spent
    done = [{"offload": "none", "compile": "off", "seconds": 4.0}, {"offload": "group", "compile": "off",
                                                                   "seconds": 9.0}]
    assert gpu_check.predict_matrix_row(("group", "on", "off", "off"), done, 30.0, 90.0) == 9.0
    assert gpu_check.predict_matrix_row(("model", "off", "off", "off"), done, 30.0, 90.0) == 9.0
    assert gpu_check.predict_matrix_row(("none", "off", "on", "off"), done, 30.0, 90.0) == 99.0  # + first compile
    assert gpu_check.predict_matrix_row(("none", "off", "on", "off"), [], 30.0, 90.0) == 120.0
    order = gpu_check.MATRIX_ORDER
    assert len(order) == len(set(order)) == 24 and set(order) == set(all_combinations())


def test_a_killed_run_keeps_its_rows(tmp_path):
    """The hard stop ends the measuring process; the table is made from what results.jsonl holds."""
    out = tmp_path / "stopped"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    result = subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--timeout-s", "15"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 124, result.stdout[-2000:] + result.stderr[-2000:]
    assert "passed the hard stop (--timeout-s 15)" in result.stdout
    table = (out / "table.md").read_text()
    assert "The run was stopped after" in table and "### GPU check on CPU" in table
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["part"] == "facts"


@pytest.mark.parametrize("args, expected", [
    (["--timeout-s", "soon"], "--timeout-s 'soon': must be a whole number of seconds"),
    (["--out"], "--out needs a folder"),
])
def test_the_script_checks_its_own_options(tmp_path, args, expected):
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho started >> {tmp_path / 'python_started'}\nexit 0\n")
    python.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHON": str(python)})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: bash scripts/gpu_check.sh") and expected in lines[1]
    assert not (tmp_path / "python_started").exists()


def test_refuses_a_folder_of_someone_else(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert gpu_check.main(["--out", str(out), "--device", "cpu"]) == 2
    assert (out / "notes.txt").read_text() == "mine" and not (out / "results.jsonl").exists()
