"""The app without a browser: prompt table, inputs, run listing, jobs (generate, cancel, resume, redo,
extraction) and the messages bad inputs get. The tiny pipeline runs on the CPU."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("gradio")

from longvie.app.engine import GenerationRequest, JobEvent, Studio, describe_error  # noqa: E402
from longvie.app.extraction import STAGES, ExtractionOptions  # noqa: E402
from longvie.app.inputs import AppInputError, parse_prompt_table, prompt_rows, stage_condition_folder  # noqa: E402
from longvie.app.runs import list_runs, run_inputs, zip_run  # noqa: E402
from longvie.app.ui import render_clips, render_stages, resize_table  # noqa: E402
from longvie.longvideo import load_run_frames  # noqa: E402

HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 9, 2


# ------------------------------------------------------------------------------------------------
# Prompt table and inputs
# ------------------------------------------------------------------------------------------------


def test_prompt_table_rows_and_trailing_blanks():
    assert parse_prompt_table([[0, " a "], [1, "b"], [None, ""], ["", None]]) == ["a", "b"]
    assert parse_prompt_table([["0", "a"], [1.0, "b"]], num_controls=3) == ["a", "b"]  # fewer clips than controls
    assert prompt_rows(["x", "y"]) == [[0, "x"], [1, "y"]]


@pytest.mark.parametrize("rows, num_controls, expected", [
    ([], None, "no prompt"),
    ([[0, "a"], [1, ""], [2, "c"]], None, "row 2 (clip 1): empty prompt"),
    ([[0, "a"], [5, "b"]], None, "clip number '5', expected 1"),
    ([[0, "PLACEHOLDER for clip 0: replace this"]], None, "placeholder caption"),
    ([[0, "a"], [1, "b"], [2, "c"]], 2, "3 prompts but only 2 depth/track pair(s)"),
])
def test_prompt_table_problems_are_named(rows, num_controls, expected):
    with pytest.raises(AppInputError) as err:
        parse_prompt_table(rows, num_controls)
    assert expected in str(err.value)


def test_prompt_table_from_pandas():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"clip": [0, 1], "prompt": ["a", float("nan")]})
    assert parse_prompt_table(frame.iloc[:1]) == ["a"]
    with pytest.raises(AppInputError, match="empty prompt"):
        parse_prompt_table(frame)


def test_resize_table_keeps_typed_prompts():
    assert resize_table([[0, "a"], [1, "b"]], 3) == [[0, "a"], [1, "b"], [2, ""]]
    assert resize_table([[0, "a"], [1, "b"]], 1) == [[0, "a"]]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The synthetic example at the test size: 2 clips of 9 frames, 32x48."""
    from longvie.examples.synthetic import make_synthetic_example

    cond = make_synthetic_example(tmp_path_factory.mktemp("example"), clips=2, height=HEIGHT, width=WIDTH,
                                  frames_per_clip=FRAMES, reference=False)
    entries = json.loads(cond.read_text())
    folder = cond.parent
    return {"image": folder / "first.png", "depth": [folder / e["depth"] for e in entries],
            "track": [folder / e["track"] for e in entries], "texts": [e["text"] for e in entries], "cond": cond}


def test_stage_condition_folder_checks_kinds_and_counts(tmp_path, example):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppInputError) as err:
        stage_condition_folder(tmp_path / "a", text, example["depth"], example["track"][:1], example["texts"])
    message = str(err.value)
    assert "first frame notes.txt: wrong file type" in message
    assert "2 depth but 1 track video(s)" in message
    with pytest.raises(AppInputError, match="depth video notes.txt: wrong file type"):
        stage_condition_folder(tmp_path / "b", example["image"], [text, example["depth"][1]], example["track"],
                               example["texts"])
    cond = stage_condition_folder(tmp_path / "c", example["image"], example["depth"], example["track"],
                                  example["texts"][:1])
    assert json.loads(cond.read_text()) == [{"text": example["texts"][0], "depth": "depth_00.mp4",
                                             "track": "track_00.mp4"}]
    assert (tmp_path / "c" / "first.png").read_bytes() == example["image"].read_bytes()


# ------------------------------------------------------------------------------------------------
# Jobs on the tiny pipeline
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def studio(tmp_path, tiny_pipeline):
    studio = Studio("tiny", tmp_path / "outputs")
    studio.pipes["none"] = tiny_pipeline  # the session's tiny pipeline: no second model load
    return studio


def request_for(example, **overrides) -> GenerationRequest:
    fields = dict(image=example["image"], depth=example["depth"], track=example["track"], texts=example["texts"],
                  seed=0, steps=STEPS, height=HEIGHT, width=WIDTH, num_frames=FRAMES, offload="none")
    return GenerationRequest(**{**fields, **overrides})


def run_events(events) -> list[JobEvent]:
    collected = list(events)
    assert collected[-1].final and sum(e.final for e in collected) == 1
    return collected


def test_generate_streams_steps_and_clips_then_lists_and_zips(studio, example, tmp_path):
    events = run_events(studio.new_run(request_for(example, name="first run")))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done", events[-1].message
    steps = [(e.clip, e.step) for e in events if e.kind == "step"]
    assert steps == [(0, 1), (0, 2), (1, 1), (1, 2)]
    # each clip is announced once it is written, before the next clip's first step
    assert kinds.index("clip") < kinds.index("step", kinds.index("step") + STEPS)
    run_dir = events[-1].run_dir
    assert run_dir == studio.outputs / "first-run" and events[-1].video == run_dir / "video.mp4"
    views = studio.clip_views(run_dir)
    assert [v.video.name for v in views] == ["clip_000.mp4", "clip_001.mp4"]
    assert views[0].depth == (run_dir / "inputs" / "depth_00.mp4").resolve()

    [summary] = list_runs(studio.outputs)
    assert (summary.done, summary.num_clips, summary.finished) == (2, 2, True)
    assert "2/2 clips, finished" in summary.label
    image, clips = run_inputs(run_dir)
    assert image.name == "first.png" and [c.text for c in clips] == example["texts"]

    archive = zip_run(run_dir, tmp_path / "zips")
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"first-run/manifest.json", "first-run/video.mp4", "first-run/clips/clip_001.mp4",
            "first-run/inputs/cond.json", "first-run/state/clip_000.safetensors"} <= names
    assert "first-run/run.lock" not in names

    html = render_clips(views)
    assert html.count("<video") == 6 and 'id="clip-1-generated"' in html
    again = run_events(studio.new_run(request_for(example, name="first run")))
    assert again[-1].kind == "error" and "already exists" in again[-1].message


def test_cancel_stops_after_a_step_and_resume_equals_uninterrupted(studio, example):
    studio.step_delay = 0.2  # time for the cancel to arrive during clip 1
    whole = run_events(studio.new_run(request_for(example, name="whole")))
    assert whole[-1].kind == "done"

    events = []
    for event in studio.new_run(request_for(example, name="cancelled")):
        events.append(event)
        if event.kind == "step" and event.clip == 1 and event.step == 1:
            assert "stops after the current denoising step" in studio.cancel()
    assert events[-1].kind == "cancelled"
    assert not any(e.kind == "clip" and e.clip == 1 for e in events)
    run_dir = studio.outputs / "cancelled"
    assert not (run_dir / "run.lock").exists()
    assert "cancelled from the page during clip 1" in (run_dir / "run.log").read_text()
    summary = next(s for s in list_runs(studio.outputs) if s.path == run_dir)
    assert (summary.done, summary.num_clips, summary.finished) == (1, 2, False) and "interrupted" in summary.label
    assert studio.cancel() == "No job is running."

    studio.step_delay = 0.0
    resumed = run_events(studio.resume(run_dir))
    assert resumed[-1].kind == "done", resumed[-1].message
    assert [e.clip for e in resumed if e.kind == "clip"] == [1]  # clip 0 was kept
    np.testing.assert_array_equal(load_run_frames(run_dir), load_run_frames(studio.outputs / "whole"))


def test_redo_clip_with_new_seed_and_prompt(studio, example):
    run_dir = run_events(studio.new_run(request_for(example, name="r")))[-1].run_dir
    before = load_run_frames(run_dir)
    events = run_events(studio.redo(run_dir, 1, "7", "a new prompt"))
    assert events[-1].kind == "done" and [e.clip for e in events if e.kind == "clip"] == [1]
    after = load_run_frames(run_dir)
    np.testing.assert_array_equal(after[:FRAMES], before[:FRAMES])  # clip 0 untouched
    assert not np.array_equal(after[FRAMES:], before[FRAMES:])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["overrides"]["1"] == {"text": "a new prompt", "seed": 7}
    assert studio.clip_views(run_dir)[1].text == "a new prompt"
    bad = run_events(studio.redo(run_dir, 5))
    assert bad[-1].kind == "error" and "clip 5: the run has clips 0..1" in bad[-1].message


def test_bad_inputs_end_the_job_with_a_message(studio, example, tmp_path):
    short = tmp_path / "short.mp4"
    from longvie.media.video_io import read_video, write_video

    write_video(short, read_video(example["depth"][0])[:5], fps=16)
    events = run_events(studio.new_run(request_for(example, depth=[short, example["depth"][1]], name="short")))
    assert events[-1].kind == "error"
    assert "has 5 frames, needs at least num_frames=9" in events[-1].message
    assert not (studio.outputs / "short").exists()  # nothing generated: no run left behind

    events = run_events(studio.new_run(request_for(example, height=30, steps="x")))
    assert events[-1].kind == "error" and "steps 'x': not a number" in events[-1].message
    events = run_events(studio.new_run(request_for(example, height=30)))
    assert "height=30: must be a positive multiple of 16" in events[-1].message
    events = run_events(studio.new_run(request_for(example, image=None)))
    assert "first frame: missing" in events[-1].message

    # unexpected faults become one line, never a traceback
    assert describe_error(TypeError("boom")) == "Internal error (TypeError: boom). The details are in the server log."
    assert "Traceback" not in describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))


def test_missing_weights_are_reported_before_anything_runs(tmp_path, example):
    config = tmp_path / "released.yaml"
    config.write_text(f"base_model_dir: {tmp_path / 'no_base'}\nlongvie_dir: {tmp_path / 'no_longvie'}\n")
    studio = Studio(str(config), tmp_path / "outputs")
    assert len(studio.weight_problems()) == 2
    events = run_events(studio.new_run(request_for(example)))
    assert events[-1].kind == "error"
    assert "base model folder" in events[-1].message and "download_wan2.1.py" in events[-1].message
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").iterdir())


# ------------------------------------------------------------------------------------------------
# Control extraction from a driving video
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    """An 81-frame driving video (the synthetic reference) and a disparity for it (no depth model)."""
    from longvie.examples.synthetic import make_synthetic_example
    from longvie.media.video_io import read_video

    folder = tmp_path_factory.mktemp("driving")
    make_synthetic_example(folder, clips=1, height=HEIGHT, width=WIDTH, frames_per_clip=81)
    frames = read_video(folder / "reference.mp4")
    disparity = frames.mean(axis=-1).astype(np.float32) / 255.0 + np.linspace(0, 1, WIDTH, dtype=np.float32)
    np.save(folder / "disparity.npy", disparity)
    return folder / "reference.mp4", folder / "disparity.npy", frames


def test_extraction_writes_a_condition_folder_with_stage_progress(tmp_path, driving):
    video, disparity, frames = driving
    studio = Studio("tiny", tmp_path / "outputs")
    events = run_events(studio.extract(video, ExtractionOptions(depth_npy=str(disparity), grid=6)))
    assert events[-1].kind == "done", events[-1].message
    assert {e.stage for e in events if e.kind == "step"} == set(STAGES)
    last = {e.stage: (e.step, e.steps) for e in events if e.kind == "step"}
    assert all(done == total for done, total in last.values())
    folder = events[-1].folder
    entries = json.loads((folder / "cond.json").read_text())
    assert len(entries) == 1 and entries[0]["text"].startswith("PLACEHOLDER")
    from longvie.media.video_io import count_frames, load_image

    assert count_frames(folder / "depth_00.mp4") == 81 and count_frames(folder / "track_00.mp4") == 81
    np.testing.assert_array_equal(np.asarray(load_image(folder / "first.png")), frames[0])
    assert render_stages({STAGES[0]: (1, 1)}).count('value="1" max="1"') == 1


def test_extraction_problems_are_messages(tmp_path, example, driving):
    studio = Studio("tiny", tmp_path / "outputs")
    too_short = run_events(studio.extract(example["depth"][0], ExtractionOptions(depth_npy=str(driving[1]))))
    assert too_short[-1].kind == "error" and "needs 81" in too_short[-1].message
    wrong = run_events(studio.extract(example["image"], ExtractionOptions()))
    assert wrong[-1].kind == "error" and "driving video first.png: wrong file type" in wrong[-1].message
    missing_model = run_events(studio.extract(driving[0], ExtractionOptions(vda_checkpoint=str(tmp_path / "no.pth"))))
    assert missing_model[-1].kind == "error" and "checkpoint not found" in missing_model[-1].message
    assert not list((studio.outputs / ".controls").glob("*"))  # failed extractions leave nothing behind


def test_one_job_at_a_time(studio, example):
    """A second job waits for the first (the page's queue orders them; the studio enforces it too)."""
    import threading

    studio.step_delay = 0.1
    first = studio.new_run(request_for(example, name="a"))
    first_events = [next(first)]  # the job runs in its thread now
    second_events = []
    worker = threading.Thread(target=lambda: second_events.extend(studio.new_run(request_for(example, name="b"))))
    worker.start()
    first_events += list(first)
    worker.join(timeout=120)
    assert first_events[-1].kind == "done" and second_events[-1].kind == "done"
    assert second_events[0].message.startswith("Waiting for the running job")
    runs = {p.name: p for p in studio.outputs.iterdir()}
    started = [json.loads((runs[name] / "manifest.json").read_text())["created_at"] for name in ("a", "b")]
    log_a, log_b = ((runs[name] / "run.log").read_text() for name in ("a", "b"))
    assert "clip 2/2 done" in log_a and "clip 2/2 done" in log_b and started[0] <= started[1]


def test_preload_loads_once(tmp_path, monkeypatch, tiny_pipeline):
    import longvie.app.engine as engine

    calls = []

    def loader(config, device):
        calls.append(config["offload"])
        return lambda: tiny_pipeline

    monkeypatch.setattr(engine, "pipeline_loader", loader)
    studio = Studio("tiny", tmp_path / "outputs")
    studio.preload().join()
    assert studio._load_pipe("none") is tiny_pipeline and calls == ["none"]
    config = tmp_path / "released.yaml"
    config.write_text(f"base_model_dir: {tmp_path / 'no_base'}\nlongvie_dir: {tmp_path / 'no_longvie'}\n")
    assert Studio(str(config), tmp_path / "o2").preload() is None  # no weights: nothing to load
