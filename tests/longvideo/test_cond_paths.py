"""cond.json path resolution: JSON folder, working directory (upstream's style), file name in the JSON folder."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from longvie.longvideo.validation import (
    PATH_RULES,
    InputValidationError,
    load_conditions,
    resolve_condition_path,
    validate_inputs,
)
from longvie.media.video_io import write_video


def write_example(root, entries):
    """first.png, depth/track videos named in ``entries`` under root, and cond.json in root/example/x."""
    folder = root / "example" / "x"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(folder / "first.png")
    for name in ("depth_00.mp4", "track_00.mp4"):
        write_video(folder / name, rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8))
    (folder / "cond.json").write_text(json.dumps(entries))
    return folder


def test_each_rule(tmp_path, monkeypatch):
    folder = write_example(tmp_path, [])
    monkeypatch.chdir(tmp_path)
    assert resolve_condition_path("depth_00.mp4", folder)[1] == "relative to cond.json"
    path, rule, _ = resolve_condition_path("./example/x/depth_00.mp4", folder)
    assert rule == "relative to the working directory" and path == (folder / "depth_00.mp4").resolve()
    path, rule, tried = resolve_condition_path("./somewhere/else/track_00.mp4", folder)
    assert rule == "file name in cond.json's folder" and path == (folder / "track_00.mp4").resolve()
    assert len(tried) == 3
    absolute = str((folder / "depth_00.mp4").resolve())
    assert resolve_condition_path(absolute, folder)[1] == "absolute"
    assert set(PATH_RULES) >= {"absolute", "relative to cond.json"}


def test_upstream_style_cond_json_runs_unchanged(tmp_path, monkeypatch):
    """Paths written relative to the working directory, as in upstream's example folders."""
    entries = [{"text": "t", "depth": "./example/x/depth_00.mp4", "track": "./example/x/track_00.mp4"}]
    folder = write_example(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    clips, problems = load_conditions(folder / "cond.json")
    assert not problems
    assert clips[0].depth == (folder / "depth_00.mp4").resolve()
    assert clips[0].found_by == {"depth": "relative to the working directory",
                                 "track": "relative to the working directory"}
    inputs = validate_inputs(folder / "first.png", folder / "cond.json", num_frames=9, height=32, width=48)
    assert any("found relative to the working directory" in note for note in inputs.notes), inputs.notes
    # Run from elsewhere: the file name inside the JSON's folder still finds them.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    clips, problems = load_conditions(folder / "cond.json")
    assert not problems and clips[0].found_by["track"] == "file name in cond.json's folder"
    assert clips[0].track == (folder / "track_00.mp4").resolve()


def test_not_found_lists_every_place_tried(tmp_path, monkeypatch):
    entries = [{"text": "t", "depth": "./example/x/missing_depth.mp4", "track": "track_00.mp4"}]
    folder = write_example(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputValidationError) as err:
        validate_inputs(folder / "first.png", folder / "cond.json", num_frames=9, height=32, width=48)
    (problem,) = err.value.problems
    for place in (folder / "example" / "x" / "missing_depth.mp4", tmp_path / "example" / "x" / "missing_depth.mp4",
                  folder / "missing_depth.mp4"):
        assert str(place.resolve()) in problem, problem
    assert "file not found" in problem


def test_manifest_records_rule(tmp_path, monkeypatch):
    import torch

    from longvie.longvideo.sampler import LongVideoSampler, LongVideoSettings

    entries = [{"text": "t", "depth": "./example/x/depth_00.mp4", "track": "track_00.mp4"}]
    folder = write_example(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    inputs = validate_inputs(folder / "first.png", folder / "cond.json", num_frames=9, height=32, width=48)

    def pipe(image, prompt, dense, sparse, history=None, noise=None, num_frames=9, height=32, width=48, **_):
        noise = torch.zeros(1, 16, 3, height // 8, width // 8) if noise is None else noise
        return np.repeat(np.asarray(image)[None], num_frames, axis=0), noise

    settings = LongVideoSettings(num_frames=9, height=32, width=48, steps=1, model="tiny", dtype="float32")
    result = LongVideoSampler(settings, pipe=pipe, progress=False)(tmp_path / "run", inputs.image, inputs.clips)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    recorded = manifest["clips"][0]["inputs"]
    assert recorded["depth"]["found_by"] == "relative to the working directory"
    assert recorded["track"]["found_by"] == "relative to cond.json"
    shutil.rmtree(result.run_dir)


def test_placeholder_prompts_are_flagged(tmp_path):
    entries = [{"text": "PLACEHOLDER for clip 0: replace this text", "depth": "depth_00.mp4",
                "track": "track_00.mp4", "placeholder": True},
               {"text": "edited caption", "depth": "depth_00.mp4", "track": "track_00.mp4", "placeholder": True},
               {"text": "A rider in the snow.", "depth": "depth_00.mp4", "track": "track_00.mp4"}]
    folder = write_example(tmp_path, entries)
    clips, problems = load_conditions(folder / "cond.json")
    assert not problems and [c.placeholder for c in clips] == [True, True, False]
