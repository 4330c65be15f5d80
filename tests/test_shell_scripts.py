"""The shell entry points parse their own options (issue 19, item 3): a bad value ends with a usage
line, one error line and exit 2 before any Python starts; --help/-h shows the script's usage, then the
Python command's options."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, args: list[str], tmp_path: Path, python: str | None = None,
               **env) -> subprocess.CompletedProcess:
    """Run a script with PYTHON set to a stand-in that records every start, unless ``python`` is given."""
    if python is None:
        python = tmp_path / "python"
        python.write_text(f"#!/bin/sh\necho started >> {tmp_path / 'python_started'}\nexit 0\n")
        python.chmod(0o755)
    return subprocess.run(["bash", str(REPO / script), *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHON": str(python), **env})


@pytest.mark.parametrize("args, expected", [
    (["--gpus", "banana"], "--gpus 'banana': must be a whole number of GPUs"),
    (["--preset", "tiny", "--gpus"], "--gpus needs a number of GPUs"),
    (["--gpus", "0"], "--gpus '0': must be a whole number of GPUs, 1 or more"),
    (["--gpus=-2"], "--gpus '-2'"),
    (["--gpus", ""], "--gpus '':"),
], ids=["banana", "no-value", "zero", "negative", "empty"])
def test_sample_script_checks_its_options(tmp_path, args, expected):
    result = run_script("sample_longvideo.sh", args, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: bash sample_longvideo.sh"), result.stderr
    assert lines[1].startswith("sample_longvideo.sh: error: ") and expected in lines[1]
    assert "unbound variable" not in result.stderr and not (tmp_path / "python_started").exists()


@pytest.mark.parametrize("env, expected", [
    ({"STAGES": "4"}, "'4' is not a stage"),
    ({"STAGES": "1 two"}, "'two' is not a stage"),
    ({"PRESET": "huge"}, "PRESET=huge: the only training preset is tiny"),
    ({"MAX_STEPS": "ten"}, "MAX_STEPS=ten: must be a whole number of steps"),
    ({"MAX_STEPS": "0"}, "MAX_STEPS=0"),
], ids=["stage", "stage-word", "preset", "max-steps", "max-steps-zero"])
def test_train_script_checks_its_settings(tmp_path, env, expected):
    result = run_script("train.sh", [], tmp_path, ACCELERATE_CONFIG="none", **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: ") and "bash train.sh" in lines[0], result.stderr
    assert lines[1].startswith("train.sh: error: ") and expected in lines[1]
    assert not (tmp_path / "python_started").exists()


def test_train_script_refuses_a_file_as_out(tmp_path):
    (tmp_path / "results").write_text("mine")
    result = run_script("train.sh", [], tmp_path, ACCELERATE_CONFIG="none", OUT=str(tmp_path / "results"))
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr
    assert (tmp_path / "results").read_text() == "mine" and not (tmp_path / "python_started").exists()


@pytest.mark.parametrize("script, flag, python_usage", [
    ("sample_longvideo.sh", "--help", "usage: python -m longvie.sample"),
    ("train.sh", "-h", "usage: python -m longvie.train"),
])
def test_help_shows_the_script_then_the_python_command(tmp_path, script, flag, python_usage):
    result = run_script(script, ["--preset", "tiny", flag], tmp_path, python=sys.executable,
                        PYTHONPATH=str(REPO))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: ") and python_usage in out and out.index(python_usage) > 0
    assert "Traceback" not in result.stderr
