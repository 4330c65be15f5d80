"""What a newcomer meets first with `python -m longvie.sample` (issue 19), in the style of the fault
tests: exit code, one message, nothing written, the user's files unchanged, no model loaded.

The user's folder as --out; a condition list of 100,000 clips naming the same two videos (each
distinct file probed and hashed once; a run that cannot start is refused before any video is
probed); a 0-byte video (our message, no FFmpeg noise before it); sizes in messages; unknown config
keys with the file, the line and the closest key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from longvie.longvideo import preflight, validation

FRAMES, HEIGHT, WIDTH = 9, 32, 48
BIG = 100_000


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A 1-clip synthetic example (cond.json, first.png, depth_00.mp4, track_00.mp4)."""
    from longvie.examples.synthetic import make_synthetic_example

    return make_synthetic_example(tmp_path_factory.mktemp("first_contact") / "example", clips=1, height=HEIGHT,
                                  width=WIDTH, frames_per_clip=FRAMES, reference=False)


@pytest.fixture(scope="module")
def big_cond(example) -> Path:
    """cond.json of 100,000 clips that all name the example's two control videos."""
    cond = example.parent / "cond_100k.json"
    cond.write_text(json.dumps([{"text": f"clip {i}: a ball rolls over a chequered floor", "depth": "depth_00.mp4",
                                 "track": "track_00.mp4"} for i in range(BIG)]))
    return cond


def args_for(cond: Path, out: Path, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--cond", str(cond), "--out", str(out), "--height", str(HEIGHT), "--width",
            str(WIDTH), "--num-frames", str(FRAMES), "--steps", "1", "--no-progress", *extra]


class ModelLoaded(Exception):
    pass


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """A spy on the pipeline loader: calls are recorded and stop the run (nothing is generated)."""
    from longvie.longvideo import cli

    calls = []

    def spy(config, device, *parallel_degrees):
        def load():
            calls.append("pipeline_loader")
            raise ModelLoaded()
        return load

    monkeypatch.setattr(cli, "pipeline_loader", spy)
    monkeypatch.setenv("LONGVIE_CACHE", str(tmp_path / "cache"))
    return calls


def run(args) -> int:
    from longvie.longvideo.cli import main

    return main(args)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith(("[longvie]", "W1", "Unable"))]


# --------------------------------------------------------------------------------------------------
# 1. The user's folder as --out
# --------------------------------------------------------------------------------------------------


def test_out_holding_the_users_files_is_refused_and_left_unchanged(example, tmp_path, capsys, no_model):
    mine = tmp_path / "mine"
    (mine / "clips").mkdir(parents=True)
    (mine / "video.mp4").write_bytes(b"my own video")
    (mine / "clips" / "a.mp4").write_bytes(b"my clip")
    before = {p.relative_to(mine): (p.read_bytes() if p.is_file() else None) for p in mine.rglob("*")}

    assert run(args_for(example, mine)) == 2
    err = capsys.readouterr().err
    problems = [line for line in error_lines(err) if line.startswith("  - ")]
    assert len(problems) == 1, err  # one sentence: the folder, why, what to do
    assert str(mine) in problems[0] and "video.mp4" in problems[0] and "new or empty folder" in problems[0]
    assert "Traceback" not in err and no_model == []
    assert {p.relative_to(mine): (p.read_bytes() if p.is_file() else None) for p in mine.rglob("*")} == before


def test_new_empty_and_own_run_folders_are_accepted(example, tmp_path):
    assert preflight.check_output_dir(tmp_path / "new") == []
    (tmp_path / "empty").mkdir()
    assert preflight.check_output_dir(tmp_path / "empty") == []
    run_dir = tmp_path / "run"  # a run of ours: its manifest
    (run_dir / "clips").mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "video.mp4").write_bytes(b"")
    assert preflight.check_output_dir(run_dir) == []
    started = tmp_path / "started"  # killed after taking the lock, before its first manifest
    started.mkdir()
    (started / "run.lock").write_text("123\n")
    (started / "run.log").write_text("2026-01-01 INFO longvie.longvideo.sampler: === session started: x (3 clips) ===\n")
    assert preflight.check_output_dir(started) == []
    (started / "run.log").write_text("my own notes\n")  # a run.log that is not ours
    assert "already holds files" in preflight.check_output_dir(started)[0]


# --------------------------------------------------------------------------------------------------
# 2. 100,000 clips naming the same two videos
# --------------------------------------------------------------------------------------------------


def test_big_list_probes_and_resolves_each_distinct_file_once(example, big_cond, monkeypatch, capsys):
    probes, lookups = [], []
    real_probe, real_resolve = validation.probe_video, validation.resolve_condition_path
    monkeypatch.setattr(validation, "probe_video", lambda path: probes.append(path) or real_probe(path))
    monkeypatch.setattr(validation, "resolve_condition_path",
                        lambda *a, **k: lookups.append(a[0]) or real_resolve(*a, **k))
    monkeypatch.setattr(validation, "_PROBES", {})
    monkeypatch.setattr(validation, "PROGRESS_DELAY_S", 0)  # show the bars however fast this machine is
    inputs = validation.validate_inputs(example.parent / "first.png", big_cond, num_frames=FRAMES, height=HEIGHT,
                                        width=WIDTH)
    assert len(inputs.clips) == BIG and inputs.clips[-1].index == BIG - 1
    assert sorted(p.name for p in probes) == ["depth_00.mp4", "track_00.mp4"]
    assert sorted(lookups) == ["depth_00.mp4", "track_00.mp4"]
    err = capsys.readouterr().err
    assert "reading cond_100k.json" in err and "checking control videos" in err  # progress on stderr

    # A file named by every clip that is missing: one problem naming it and the clips, not 100,000.
    entries = json.loads(big_cond.read_text())
    for entry in entries:
        entry["track"] = "missing.mp4"
    broken = big_cond.with_name("cond_100k_missing.json")
    broken.write_text(json.dumps(entries))
    with pytest.raises(validation.InputValidationError) as caught:
        validation.validate_inputs(example.parent / "first.png", broken, num_frames=FRAMES, height=HEIGHT,
                                   width=WIDTH, progress=False)
    assert len(caught.value.problems) == 1
    assert "clips 0, 1, 2 and 99,997 more track video" in caught.value.problems[0]
    assert "missing.mp4: file not found" in caught.value.problems[0]


def test_big_list_without_disk_space_is_refused_before_any_video_is_read(example, big_cond, tmp_path, monkeypatch,
                                                                         capsys, no_model):
    probes = []
    monkeypatch.setattr(validation, "probe_video", lambda path: probes.append(path))
    monkeypatch.setattr(validation, "_PROBES", {})
    monkeypatch.setattr("longvie.longvideo.preflight.shutil.disk_usage",
                        lambda path: type("Usage", (), {"free": 10 * 2**20})())
    out = tmp_path / "run"
    assert run(args_for(big_cond, out)) == 2
    err = capsys.readouterr().err
    assert "the run needs about" in err and "10.0 MiB free" in err and "0.0 GiB" not in err, err
    assert probes == [] and no_model == [] and not out.exists()


def test_big_list_starts_with_each_input_hashed_once(example, big_cond, tmp_path, monkeypatch, capsys, no_model):
    from longvie.longvideo import run_state, sampler

    hashed = []
    real_hash = run_state.sha256_file
    monkeypatch.setattr(sampler, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or real_hash(path, *a))
    out = tmp_path / "run"
    assert run(args_for(big_cond, out)) == 1  # the spy stops it where the model would load
    assert no_model == ["pipeline_loader"]
    assert sorted(hashed) == ["depth_00.mp4", "first.png", "track_00.mp4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["clips"]) == BIG and manifest["inputs"]["num_clips"] == BIG
    capsys.readouterr()


# --------------------------------------------------------------------------------------------------
# 5. Papercuts: an empty video, sizes in messages
# --------------------------------------------------------------------------------------------------


def test_empty_and_damaged_videos_get_our_message_without_ffmpeg_noise(example, tmp_path, capfd, no_model):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("first.png", "track_00.mp4"):
        (folder / name).write_bytes((example.parent / name).read_bytes())
    (folder / "depth_00.mp4").write_bytes(b"")
    (folder / "depth_01.mp4").write_bytes(os.urandom(4000))
    cond = folder / "cond.json"
    cond.write_text(json.dumps([{"text": "clip 0", "depth": "depth_00.mp4", "track": "track_00.mp4"},
                                {"text": "clip 1", "depth": "depth_01.mp4", "track": "track_00.mp4"}]))
    capfd.readouterr()
    assert run(args_for(cond, tmp_path / "run")) == 2
    err = capfd.readouterr().err  # file descriptor 2: what decord's FFmpeg would print lands here too
    lines = error_lines(err)
    assert lines[0].startswith("error: 2 problem(s)"), err  # our message comes first
    assert "depth_00.mp4 is empty (0 bytes)" in err and "cannot read video" in err
    assert "moov atom" not in err and "video_reader.cc" not in err and "Traceback" not in err
    assert no_model == [] and not (tmp_path / "run").exists()


def test_sizes_in_messages_are_readable():
    assert preflight._gib(1000) == "1000 bytes"
    assert preflight._gib(10 * 2**20) == "10.0 MiB" and preflight._gib(1.5 * 2**30) == "1.50 GiB"
    assert preflight._gib(3 * 2**40) == "3.00 TiB" and preflight._gib(512 * 2**20) == "512 MiB"
    s = {"num_frames": FRAMES, "height": HEIGHT, "width": WIDTH}
    config = {"preset": "tiny", "model": {"transformer": {"num_attention_heads": 2, "attention_head_dim": 32,
                                                          "ffn_dim": 128}}}
    need = preflight.estimate_clip_memory_bytes(config, s)
    assert need < 2**30 and preflight._gib(need) != "0.0 GiB"


# --------------------------------------------------------------------------------------------------
# 4. Configs checked by name
# --------------------------------------------------------------------------------------------------

CONFIG_TYPOS = {  # line replaced in configs/tiny.yaml -> (line number, expected message part)
    "nested": (("    num_layers: 4", "    num_layerz: 4"), "did you mean 'model.transformer.num_layers'?"),
    "section": (("  control_layers: 2", "  control_layerz: 2"), "did you mean 'model.control_layers'?"),
    "sampling": (("  steps: 4", "  stpes: 4"), "did you mean 'sampling.steps'?"),
    "top": (("offload: none", "ofload: none"), "did you mean 'offload'?"),
    "wrong-section": (("  steps: 4", "  num_layers: 4"), "'model.transformer'"),  # "... belongs under ..."
}


@pytest.mark.parametrize("case", sorted(CONFIG_TYPOS))
def test_unknown_config_keys_name_file_line_and_closest_key(example, tmp_path, capsys, no_model, case):
    (old, new), expected = CONFIG_TYPOS[case]
    lines = (Path(preflight.__file__).parents[2] / "configs" / "tiny.yaml").read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith(old + " ") or line == old)
    lines[number - 1] = new + lines[number - 1][len(old):]  # the comment after the value stays
    config = tmp_path / "my_tiny.yaml"
    config.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert run([*args_for(example, out), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:{number}: unknown key" in err and expected in err, err
    assert "unexpected" not in err and "Traceback" not in err and no_model == [] and not out.exists()


def test_memory_estimator_names_a_misspelt_model_size(tmp_path, capsys):
    from longvie.acceleration.memory import main as estimate_main

    text = (Path(preflight.__file__).parents[2] / "configs" / "tiny.yaml").read_text()
    config = tmp_path / "my_tiny.yaml"
    config.write_text(text.replace("    ffn_dim: 128", "    ffn_dimm: 128"))
    assert estimate_main(["--config", str(config), "--no-training"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.transformer.ffn_dimm' — did you mean 'model.transformer.ffn_dim'?" in err
    assert "Traceback" not in err and "TypeError" not in err
