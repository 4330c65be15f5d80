"""Fault injection on training (CPU, tiny preset): all-bad data stops, damaged checkpoints are
skipped with a warning, partial checkpoints are never complete, bad settings fail before any model
loads, and the command line ends every known failure in one message."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from longvie.train import checkpointing
from longvie.train.data import DataError, SkippedClip, too_many_bad_clips

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("tiny_env")  # tests/train/conftest.py


def run_stage(output: Path, resume=None, **overrides):
    from accelerate.state import AcceleratorState, GradientState

    from longvie.train.config import load_train_config
    from longvie.train.trainer import train

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    overrides = {"train.output_dir": str(output), **overrides}
    return train(load_train_config(stage=1, preset="tiny", overrides=overrides), resume=resume)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A tiny stage-1 run with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    run_stage(out, **{"train.max_steps": 2, "train.save_every": 1})
    assert [c.name for c in checkpointing.list_checkpoints(out)] == ["checkpoint-000001", "checkpoint-000002"]
    return out


# --------------------------------------------------------------------------------------------------
# Data that never loads
# --------------------------------------------------------------------------------------------------


def test_all_bad_data_stops_with_examples(tiny_env, tmp_path):
    rows = json.loads(Path(tiny_env["metadata"]).read_text())
    broken = [{**row, "video": str(tmp_path / f"missing_{i}.mp4")} for i, row in enumerate(rows)]
    metadata = tmp_path / "broken.json"
    metadata.write_text(json.dumps(broken))
    with pytest.raises(DataError, match="every clip of the training data failed to load") as info:
        run_stage(tmp_path / "out", **{"data.metadata": str(metadata), "data.skip_bad": True,
                                       "train.max_steps": 3})
    assert "missing_" in str(info.value)


def test_too_many_bad_in_a_row():
    bad = [SkippedClip(i, f"clip{i}.mp4 [start 0]", "not found") for i in range(5)]
    assert too_many_bad_clips(bad[:4], dataset_size=1000, limit=5) is None
    error = too_many_bad_clips(bad, dataset_size=1000, limit=5)
    assert "5 clips in a row" in str(error) and "clip0.mp4" in str(error) and "clip3.mp4" not in str(error)
    assert "every clip" in str(too_many_bad_clips(bad[:3], dataset_size=3))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _damage(checkpoint: Path, how: str) -> None:
    if how == "weights":
        path = checkpoint / "state" / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "optimizer":
        path = checkpoint / "state" / "optimizer.bin"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "trainer_state":
        (checkpoint / "trainer_state.json").write_text('{"step": 2, "positions": [[0, ')
    elif how == "missing_file":
        (checkpoint / "control.safetensors").unlink()


@pytest.mark.parametrize("how", ["weights", "optimizer", "trainer_state", "missing_file"])
def test_damaged_latest_checkpoint_falls_back_to_previous(two_checkpoints, tmp_path, caplog, how):
    out = Path(shutil.copytree(two_checkpoints, tmp_path / "run"))
    assert checkpointing.checkpoint_problems(out / "checkpoint-000002") == []
    _damage(out / "checkpoint-000002", how)
    assert checkpointing.checkpoint_problems(out / "checkpoint-000002")
    with caplog.at_level(logging.WARNING):
        assert checkpointing.resolve_resume("auto", out) == out / "checkpoint-000001"
    assert "checkpoint-000002 is damaged" in caplog.text
    with pytest.raises(checkpointing.CheckpointError, match="damaged checkpoint"):
        checkpointing.resolve_resume(str(out / "checkpoint-000002"), out)


def test_resume_past_a_damaged_checkpoint_trains_on(two_checkpoints, tmp_path, caplog):
    out = Path(shutil.copytree(two_checkpoints, tmp_path / "run"))
    _damage(out / "checkpoint-000002", "weights")
    with caplog.at_level(logging.WARNING):
        result = run_stage(out, resume="auto", **{"train.max_steps": 3, "train.save_every": 1})
    assert result.step == 3 and "checkpoint-000002 is damaged" in caplog.text
    assert checkpointing.checkpoint_problems(out / "checkpoint-000003") == []


def test_partial_checkpoints_are_never_complete(two_checkpoints, tmp_path):
    out = Path(shutil.copytree(two_checkpoints, tmp_path / "run"))
    # A save interrupted before the rename: the temporary folder is not a checkpoint.
    shutil.copytree(out / "checkpoint-000002", out / ".checkpoint-000003.tmp")
    # A folder without trainer_state.json (e.g. copied by hand, half-way) is not one either.
    partial = Path(shutil.copytree(out / "checkpoint-000002", out / "checkpoint-000004"))
    (partial / "trainer_state.json").unlink()
    assert [c.name for c in checkpointing.list_checkpoints(out)] == ["checkpoint-000001", "checkpoint-000002"]
    assert checkpointing.resolve_resume("auto", out) == out / "checkpoint-000002"
    record = json.loads((out / "checkpoint-000002" / "checkpoint.json").read_text())
    assert "state/optimizer.bin" in record["files"] and "trainer_state.json" in record["files"]


# --------------------------------------------------------------------------------------------------
# Settings and the command line
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["--lr", "nan"], "train.learning_rate=nan"),
    (["--lr", "-1"], "train.learning_rate=-1.0"),
    (["--max-steps", "0"], "train.max_steps=0"),
    (["--set", "train.adam_betas=[1.5, 0.9]"], "train.adam_betas"),
    (["--set", "train.shift=.inf"], "train.shift=inf"),
    (["--set", "data.num_frames=10"], "data.num_frames=10"),
])
def test_bad_settings_fail_before_any_model_loads(monkeypatch, capsys, args, expected):
    from longvie.train import __main__ as cli
    from longvie.train import trainer

    monkeypatch.setattr(trainer, "build_denoiser", lambda config: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--preset", "tiny", "--stage", "1", "--output", "/nonexistent/never", *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_cli_known_errors_and_interrupt(monkeypatch, capsys, tmp_path):
    from longvie.train import __main__ as cli
    from longvie.train import trainer

    def raise_(error):
        def train(config, resume=None, build_cache=False):
            raise error
        return train

    base = ["--preset", "tiny", "--stage", "1", "--output", str(tmp_path / "out")]
    monkeypatch.setattr(trainer, "train", raise_(DataError("every clip of the training data failed to load")))
    assert cli.main(base) == 2 and "every clip" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "train", raise_(KeyboardInterrupt()))
    assert cli.main(base) == 130 and "--resume to continue" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "train", raise_(ZeroDivisionError("boom")))
    assert cli.main(base) == 1
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError: boom" in err and "Traceback" not in err
    log = next((tmp_path / "out" / "logs").glob("error-*.log"))
    assert "Traceback" in log.read_text()


def test_train_sh_reports_missing_deepspeed_and_failed_launch(tmp_path):
    env = {"PATH": f"{Path(os.sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    ds = subprocess.run(["bash", str(REPO / "train.sh")], capture_output=True, text=True, timeout=120,
                        env={**env, "ACCELERATE_CONFIG": "configs/accelerate/deepspeed_zero2_8gpu.yaml"})
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        assert ds.returncode == 2 and "DeepSpeed, which is not installed" in ds.stderr
    failed = subprocess.run(["bash", str(REPO / "train.sh"), "--set", "train.learning_rate=nan"],
                            capture_output=True, text=True, timeout=300,
                            env={**env, "ACCELERATE_CONFIG": "none", "PRESET": "tiny", "STAGES": "1",
                                 "OUT": str(tmp_path / "out"), "LONGVIE_TINY_DIR": os.environ["LONGVIE_TINY_DIR"]})
    assert failed.returncode == 2 and "stage 1 failed (exit code 2" in failed.stderr
    assert "train.learning_rate=" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.slow
def test_bad_data_on_one_rank_stops_every_rank_without_hanging(tiny_env, tmp_path):
    """Rank 0's whole first share of the data is unusable, rank 1's is fine: rank 0 stops on it and rank 1
    must stop with it in the same micro-batch instead of waiting in the next collective (a hang until the
    process-group timeout)."""
    import sys

    from longvie.train.data import ShardedEpochSampler

    rows = json.loads(Path(tiny_env["metadata"]).read_text())
    rows = [rows[i % len(rows)] for i in range(4)]
    rank0_first = {index for _, index in ShardedEpochSampler(4, seed=0, epoch=0, rank=0, world=2)}
    broken = [{**row, "video": str(tmp_path / f"missing_{i}.mp4")} if i in rank0_first else row
              for i, row in enumerate(rows)]
    metadata = Path(tiny_env["metadata"]).with_name("rank0_broken.json")  # beside the rows' relative paths
    metadata.write_text(json.dumps(broken))
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "longvie.train",
               "--preset", "tiny", "--stage", "1", "--max-steps", "4", "--save-every", "100", "--seed", "0",
               "--gradient-accumulation-steps", "1", "--metadata", str(metadata), "--set", "data.skip_bad=true",
               "--set", f"data.max_consecutive_bad={len(rank0_first)}", "--output", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "LONGVIE_TINY_DIR": str(tiny_env["root"])})
    assert done.returncode != 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "missing_" in done.stderr, done.stderr[-3000:]  # rank 0 names the clips
    assert "other process(es) stopped on unusable training data" in done.stderr, done.stderr[-3000:]  # rank 1
