"""What a newcomer meets first with `python -m longvie.train` (issue 19), in the style of the fault
tests: exit code 2, one message, nothing written, the user's files unchanged, no model built.

The user's folder as --output (or as the --cache-dir a --build-cache would write); training outputs
of earlier versions still resume; unknown keys in a stage config or --set name the file, the line
and the closest key; a bad enumerated value is refused before any model loads.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from longvie.media.output_dir import OutputDirError
from longvie.train import outputs
from longvie.train.config import load_train_config, stage_config_path


@pytest.fixture
def no_model(monkeypatch):
    """Training stops where it would build a model (and says so)."""
    from longvie.train import trainer

    calls = []

    def spy(*args, **kwargs):
        calls.append("train")
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "train", spy)
    monkeypatch.setattr(trainer, "build_denoiser", lambda config: pytest.fail("a model was built"))
    return calls


def train_main(args) -> tuple[int, str]:
    from longvie.train import __main__ as cli

    try:
        return cli.main(args), ""
    except SystemExit as stop:  # argparse's parser.error (usage line + message)
        return stop.code, ""


def user_folder(root: Path) -> tuple[Path, dict]:
    folder = root / "mine"
    (folder / "notes").mkdir(parents=True)
    (folder / "config.yaml").write_text("my: own settings\n")
    (folder / "notes" / "todo.txt").write_text("buy milk")
    return folder, snapshot(folder)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# 1. Output folders
# --------------------------------------------------------------------------------------------------


def test_output_holding_the_users_files_is_refused(tmp_path, capsys, no_model):
    folder, before = user_folder(tmp_path)
    code, _ = train_main(["--preset", "tiny", "--stage", "1", "--output", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and no_model == []
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and str(folder) in lines[0] and "config.yaml" in lines[0], err
    assert "--output" in lines[0] and "new or empty folder" in lines[0] and "Traceback" not in err
    assert snapshot(folder) == before


def test_cache_dir_holding_the_users_files_is_refused_for_build_cache(tmp_path, capsys, no_model):
    folder, before = user_folder(tmp_path)
    code, _ = train_main(["--preset", "tiny", "--stage", "1", "--output", str(tmp_path / "out"),
                          "--build-cache", "--cache-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and no_model == [] and "--cache-dir" in err and "latent cache" in err, err
    assert snapshot(folder) == before and not (tmp_path / "out").exists()


def test_training_outputs_of_this_code_are_accepted(tmp_path, capsys, no_model):
    marked = outputs.mark_training_output(tmp_path / "marked")  # written first by train()
    (marked / "checkpoint-000010").mkdir()
    earlier = tmp_path / "earlier"  # an output of an earlier version: no marker, its config.yaml
    earlier.mkdir()
    shipped = yaml.safe_load(stage_config_path(1).read_text())
    (earlier / "config.yaml").write_text(yaml.safe_dump(shipped))
    (earlier / "logs").mkdir()
    checkpointed = tmp_path / "checkpointed"  # only a checkpoint folder survived
    (checkpointed / "checkpoint-000100").mkdir(parents=True)
    (checkpointed / "checkpoint-000100" / "trainer_state.json").write_text("{}")
    for folder in (marked, earlier, checkpointed, tmp_path / "new"):
        assert outputs.claim_training_output(folder) == folder
    code, _ = train_main(["--preset", "tiny", "--stage", "1", "--output", str(earlier), "--resume"])
    assert code == 1 and no_model == ["train"]  # got past the guard to training (stopped by the spy)
    capsys.readouterr()
    with pytest.raises(OutputDirError):  # another command's output is not a training output
        (tmp_path / "cam").mkdir()
        (tmp_path / "cam" / "longvie_output.json").write_text(json.dumps({"kind": "camera"}))
        (tmp_path / "cam" / "depth_00.mp4").write_bytes(b"")
        outputs.claim_training_output(tmp_path / "cam")
    cache = tmp_path / "cache"  # a cache of an earlier version, stopped before its manifest
    cache.mkdir()
    (cache / "00000000.safetensors").write_bytes(b"")
    assert outputs.claim_cache_dir(cache) == cache


# --------------------------------------------------------------------------------------------------
# 4. Configs checked by name
# --------------------------------------------------------------------------------------------------


def stage_config_with(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    lines = stage_config_path(1).read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith(old))
    lines[number - 1] = new + lines[number - 1][len(old):]
    path = tmp_path / "my_stage1.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, number


@pytest.mark.parametrize("old, new, expected", [
    ("stage: 1", "stage: 1\nlearning_rat: 1.0e-4", "unknown key 'learning_rat' — did you mean 'train.learning_rate'?"),
    ("  depth_p:", "  depth_pp:", "unknown key 'degradation.depth_pp' — did you mean 'degradation.depth_p'?"),
    ("  resize:", "  resiz:", "unknown key 'data.resiz' — did you mean 'data.resize'?"),
    ("loss:", "los:", "unknown key 'los' — did you mean 'loss'?"),
], ids=["top", "nested", "data", "section"])
def test_unknown_keys_in_a_stage_config_name_file_line_and_closest_key(tmp_path, capsys, no_model, old, new,
                                                                       expected):
    config, number = stage_config_with(tmp_path, old, new)
    number += old == "stage: 1"  # the new key is on the line after "stage: 1"
    code, _ = train_main(["--config", str(config), "--preset", "tiny", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{config}:{number}: {expected}" in err, err
    assert "unexpected" not in err and no_model == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("assignment, expected", [
    ("train.learning_rat=1e-4", "unknown key 'train.learning_rat' — did you mean 'train.learning_rate'?"),
    ("trian.learning_rate=1e-4", "unknown config section 'trian' — did you mean 'train'?"),
    ("train.depth_p=0.1", "'depth_p' belongs under 'degradation'"),
    ("data.resize=cropp", "data.resize='cropp': must be one of auto, crop, stretch"),
    ("model.vae_dtype=bf16x", "model.vae_dtype='bf16x': must be one of"),
    ("degradation.dense_weakening_position=middle", "degradation.dense_weakening_position must be 'after' or"),
    ("degradation.depth_p=2", "(--set degradation.depth_p=...)"),
])
def test_bad_overrides_fail_before_any_model_loads(tmp_path, capsys, no_model, assignment, expected):
    code, _ = train_main(["--preset", "tiny", "--stage", "1", "--output", str(tmp_path / "out"), "--set", assignment])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "unexpected" not in err and no_model == [] and not (tmp_path / "out").exists()


def test_a_config_may_leave_keys_out(tmp_path):
    """Keys left out of a --config file keep the shipped stage config's values; null stays null."""
    path = tmp_path / "short.yaml"
    path.write_text("stage: 2\ntrain:\n  learning_rate: 2.0e-5\nmodel:\n  init_from: null\n")
    config = load_train_config(path)
    shipped = load_train_config(stage=2)
    assert config["train"]["learning_rate"] == 2.0e-5 and config["model"]["init_from"] is None
    assert config["data"] == shipped["data"] and config["degradation"] == shipped["degradation"]
    assert config["train"]["max_steps"] == shipped["train"]["max_steps"]
