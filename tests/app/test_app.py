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
    kinds = [e.kind for e in events if e.kind != "preview"]  # previews: see test_previews_during_a_clip...
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
    assert again[-1].kind == "error" and "already taken" in again[-1].message


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


def test_app_settings_record_the_configs_fp8_as_the_loaded_pipeline_runs_it(tmp_path, example, monkeypatch):
    """An app config with FP8 (and the step cache, VAE tiling) on: the run's settings record them - FP8 with the
    kind the loaded pipeline actually runs (its manifest ``modes``, read from the model) - as
    ``python -m longvie.sample`` records them for the same config (one function builds both)."""
    from dataclasses import asdict

    from longvie.longvideo import cli

    monkeypatch.setenv("LONGVIE_CACHE", str(tmp_path / "cache"))  # the app's loader writes the tiny checkpoints
    config = tmp_path / "tiny_fp8.yaml"
    config.write_text("preset: tiny\nsampling:\n  fp8: true\n  step_cache: firstblock\n  vae_tiling: true\n")
    studio = Studio(str(config), tmp_path / "outputs")
    settings = studio.settings(seed=3, steps=STEPS)
    assert (settings.fp8, settings.fp8_kind, settings.step_cache, settings.vae_tiling) == (
        True, "weight-only", "firstblock", True)  # CPU: "auto" is weight-only FP8
    resolved = cli.resolve_config(cli.build_parser().parse_args(["--config", str(config), "--steps", str(STEPS)]))
    assert asdict(settings) == asdict(cli.run_settings(resolved, cli.plan_run_modes(resolved, None), seed=3))

    request = request_for(example, name="fp8", texts=example["texts"][:1], depth=example["depth"][:1],
                          track=example["track"][:1])
    events = run_events(studio.new_run(request))
    assert events[-1].kind == "done", events[-1].message
    manifest = json.loads((events[-1].run_dir / "manifest.json").read_text())
    recorded = manifest["settings"]
    assert recorded["fp8"] is True and recorded["fp8_kind"] == "weight-only" == manifest["modes"]["fp8"]
    assert recorded["step_cache"] == "firstblock" and recorded["vae_tiling"] is True
    assert manifest["modes"]["fp8_layers"] > 0 and studio.pipes["none"].vae_tiling


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
    assert "clip 1 done (2 of 2)" in log_a and "clip 1 done (2 of 2)" in log_b and started[0] <= started[1]


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


# ------------------------------------------------------------------------------------------------
# Pairing uploaded controls with clips (issue 22, point 1)
# ------------------------------------------------------------------------------------------------
from longvie.app.pairing import clip_number, order_by_clip, pair_controls, render_pairing  # noqa: E402


@pytest.mark.parametrize("name, number", [
    ("depth_03.mp4", 3), ("track_00.mp4", 0), ("scene-depth-12 (1).mp4", 12), ("track7.mp4", 7),
    ("ride_horse_depth_05.mp4", 5), ("clip2_depth.mp4", 2), ("depth.mp4", None), ("a.mp4", None),
])
def test_clip_number_of_a_file_name(name, number):
    assert clip_number(name) == number


def test_order_by_clip_numbers_upload_order_and_counting_from_one(tmp_path):
    def paths(*names):  # gradio keeps uploads as <cache>/<content hash>/<user's name>
        return [tmp_path / f"hash{i}" / name for i, name in enumerate(names)]

    mapping, how, notes = order_by_clip(paths("depth_02.mp4", "depth_00.mp4", "depth_01.mp4"), "depth")
    assert how == "file numbers" and notes == []
    assert {k: v.name for k, v in mapping.items()} == {0: "depth_00.mp4", 1: "depth_01.mp4", 2: "depth_02.mp4"}
    mapping, how, notes = order_by_clip(paths("d2.mp4", "d1.mp4"), "depth")  # counted from 1
    assert {k: v.name for k, v in mapping.items()} == {0: "d1.mp4", 1: "d2.mp4"} and "start at 1" in notes[0]
    mapping, how, notes = order_by_clip(paths("b.mp4", "a.mp4"), "track")  # no numbers: upload order
    assert how == "upload order" and [mapping[i].name for i in range(2)] == ["b.mp4", "a.mp4"]
    assert "carry no number" in notes[0]
    mapping, how, notes = order_by_clip(paths("x_depth_1.mp4", "y_depth_1.mp4"), "depth")  # a number twice
    assert how == "upload order" and "carry the number 1" in notes[0]


def fake_probe(sizes: dict):
    def probe(path):
        return sizes[path.name]
    return probe


def test_pair_controls_flags_resizes_cuts_and_problems(tmp_path):
    names = {"depth_00.mp4": (81, 640, 352), "depth_01.mp4": (100, 832, 480), "depth_02.mp4": (40, 640, 352),
             "track_00.mp4": (81, 640, 352), "track_01.mp4": (81, 640, 480), "track_02.mp4": (81, 640, 352)}
    depth = [tmp_path / n for n in ("depth_01.mp4", "depth_02.mp4", "depth_00.mp4")]
    track = [tmp_path / n for n in ("track_00.mp4", "track_02.mp4", "track_01.mp4")]
    paired = pair_controls(depth, track, num_frames=81, height=352, width=640, probe=fake_probe(names))
    assert [(r.clip, r.depth.name, r.track.name) for r in paired.rows] == [
        (0, "depth_00.mp4", "track_00.mp4"), (1, "depth_01.mp4", "track_01.mp4"), (2, "depth_02.mp4", "track_02.mp4")]
    assert paired.rows[0].depth.changes == [] and paired.rows[0].track.changes == []
    # 832x480 is within 10% of 640x352's aspect: stretched, as upstream inference; 640x480 is not: cropped
    assert paired.rows[1].depth.changes == ["cut: its first 81 of 100 frames are used",
                                            "resized 832x480 -> 640x352 (stretched)"]
    assert paired.rows[1].track.changes == ["resized 640x480 -> 640x352 (short side scaled, then centre-cropped)"]
    assert paired.problems == ["clip 2 depth video depth_02.mp4: 40 frames, a clip needs 81"]
    assert paired.clips == 3  # the problem is reported; the rows are all there
    html = render_pairing(paired)
    assert html.count('id="pair-') == 3 and "centre-cropped" in html and "lv-bad-row" in html

    missing = pair_controls(depth, track[:2], num_frames=81, height=352, width=640, probe=fake_probe(names))
    assert "clip 1: no track video" in missing.problems[0] and missing.clips == 1
    gap = pair_controls([tmp_path / "depth_00.mp4", tmp_path / "depth_02.mp4"],
                        [tmp_path / "track_00.mp4", tmp_path / "track_02.mp4"], probe=fake_probe(names))
    assert gap.clips == 1 and "no depth or track video for clip 1" in gap.problems[0]
    given = pair_controls(depth, track, probe=fake_probe(names), order="given")  # a cond.json's order
    assert [r.depth.name for r in given.rows] == ["depth_01.mp4", "depth_02.mp4", "depth_00.mp4"]
    unreadable = pair_controls([tmp_path / "depth_00.mp4"], [tmp_path / "track_00.mp4"],
                               probe=lambda path: (_ for _ in ()).throw(ValueError("broken")))
    assert unreadable.problems[0] == "clip 0 depth video depth_00.mp4: cannot be read as a video"


def test_shuffled_real_uploads_land_on_their_clips(example, tmp_path):
    """Real files, uploaded in shuffled order under gradio-like temporary paths whose hash folders
    sort the other way: the clip's controls are found by their names, checked by content."""
    import hashlib
    import shutil

    uploads = {}
    for kind in ("depth", "track"):
        for index, source in enumerate(example[kind]):
            folder = tmp_path / f"{'z' if index == 0 else 'a'}{kind}"  # clip 0's temp path sorts last
            folder.mkdir()
            uploads[(kind, index)] = shutil.copyfile(source, folder / f"my_{kind}_{index:02d}.mp4")
    paired = pair_controls([uploads[("depth", 1)], uploads[("depth", 0)]],
                           [uploads[("track", 0)], uploads[("track", 1)]], num_frames=FRAMES, height=HEIGHT,
                           width=WIDTH)
    assert paired.problems == [] and paired.clips == 2

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for index in range(2):
        assert digest(paired.depth[index]) == digest(example["depth"][index])
        assert digest(paired.track[index]) == digest(example["track"][index])
    cond = stage_condition_folder(tmp_path / "inputs", example["image"], paired.depth, paired.track, example["texts"])
    for index, entry in enumerate(json.loads(cond.read_text())):
        assert digest(cond.parent / entry["depth"]) == digest(example["depth"][index])


def test_replaced_uploads_and_field_classification():
    from longvie.app.ui import classify, replaced_uploads, scrub_paths

    assert scrub_paths("clip 0 depth video /tmp/gradio/3f2a/my_depth_00.mp4: has 5 frames") == \
        "clip 0 depth video my_depth_00.mp4: has 5 frames"
    assert scrub_paths("run /srv/runs/app/r1 is locked", {"/srv/runs/app": "app"}) == "run app/r1 is locked"

    assert replaced_uploads(["a", "b", "c"], ["a", "b"]) == ["c"]  # gradio appended: keep the new upload only
    assert replaced_uploads(["a"], ["a", "b"]) == ["a"]  # a file removed with its x
    assert replaced_uploads(["c", "d"], ["a"]) == ["c", "d"]
    found = classify(["prompt table row 1 (clip 0): empty prompt", "run name x: already taken", "LoRA y: no",
                      "first frame: missing"])
    assert found["prompts"] and found["settings"] and found["lora"] and found["inputs"] == ["first frame: missing"]


def test_page_settings_in_page_words():
    from longvie.app.inputs import check_page_settings

    numbers, problems = check_page_settings({"seed": "3", "steps": 2, "cfg": "4.5", "height": 32, "width": 48,
                                             "num_frames": 9})
    assert problems == [] and numbers == {"seed": 3, "steps": 2, "cfg": 4.5, "height": 32, "width": 48,
                                          "num_frames": 9}
    _, problems = check_page_settings({"steps": 0, "height": 30, "width": 48, "num_frames": 10, "cfg": "x",
                                       "seed": 1.5})
    text = "\n".join(problems)
    assert "Steps 0: must be at least 1" in text and "Height 30: must be a positive multiple of 16" in text
    assert "Frames per clip 10: must be 4k+1" in text and "CFG 'x': not a number" in text
    assert "Seed 1.5: must be a whole number" in text and "--" not in text  # no command-line flags


# ------------------------------------------------------------------------------------------------
# Logins, allowed folders, owners (issue 22, point 2)
# ------------------------------------------------------------------------------------------------
from longvie.app import access  # noqa: E402


def test_auth_options_parse(tmp_path):
    assert access.parse_auth("alice:se:cret") == ("alice", "se:cret")  # the password may hold ':'
    for bad in ("alice", ":pw", "alice:", ""):
        with pytest.raises(ValueError, match="expected USER:PASSWORD"):
            access.parse_auth(bad)
    logins = tmp_path / "logins.txt"
    logins.write_text("# team\nbob:pw1\n\ncarol:pw2\n")
    assert access.read_auth_file(logins) == [("bob", "pw1"), ("carol", "pw2")]
    assert access.load_logins(["alice:x", "bob:old"], logins) == [("alice", "x"), ("bob", "pw1"), ("carol", "pw2")]
    logins.write_text("bob:pw1\nnocolon\n")
    with pytest.raises(ValueError, match="line 2"):
        access.read_auth_file(logins)
    with pytest.raises(ValueError, match="not found"):
        access.read_auth_file(tmp_path / "missing.txt")
    logins.chmod(0o644)
    assert not access.auth_file_is_private(logins)
    logins.chmod(0o600)
    assert access.auth_file_is_private(logins)


def test_network_exposure_warning():
    assert not access.is_exposed("127.0.0.1") and not access.is_exposed("localhost") and not access.is_exposed("::1")
    assert access.is_exposed("0.0.0.0") and access.is_exposed("192.168.1.5") and access.is_exposed("127.0.0.1", True)
    assert access.exposure_warning("127.0.0.1", False, False) is None
    assert access.exposure_warning("0.0.0.0", False, True) is None  # a login is set
    warning = access.exposure_warning("0.0.0.0", False, False)
    assert "WITHOUT A LOGIN" in warning and "--auth" in warning
    assert "gradio.live" in access.exposure_warning("127.0.0.1", True, False)


def test_cli_refuses_a_malformed_login(capsys):
    from longvie.app.__main__ import main

    assert main(["--preset", "tiny", "--auth", "nocolon"]) == 2  # before any model or server starts
    assert "expected USER:PASSWORD" in capsys.readouterr().err


def test_allowed_dirs_resolve_symlinks_and_dots(tmp_path):
    outputs, examples, secret = tmp_path / "outputs", tmp_path / "examples", tmp_path / "secret"
    for folder in (outputs, examples / "synthetic", secret):
        folder.mkdir(parents=True)
    (examples / "escape").symlink_to(secret)
    allowed = access.AllowedDirs.create(outputs, [examples])
    assert allowed.resolve(str(examples / "synthetic")) == (examples / "synthetic").resolve()
    assert allowed.resolve("synthetic") == (examples / "synthetic").resolve()  # relative to a shared folder
    for bad in (str(secret), str(examples / "escape"), str(examples / ".." / "secret"), "/etc", "../secret"):
        with pytest.raises(access.NotAllowedError, match="not inside the folders this server shares"):
            allowed.resolve(bad)
    with pytest.raises(access.NotAllowedError, match="not found"):
        allowed.resolve(str(examples / "nothing"))
    with pytest.raises(access.NotAllowedError, match="empty"):
        allowed.resolve("  ")
    assert access.AllowedDirs.create(outputs).labels == [str(outputs), "examples"]  # the default


def test_condition_folder_files_must_stay_inside_the_allowed_folders(tmp_path, example):
    from longvie.app.inputs import read_condition_folder

    shared, outside = tmp_path / "shared", tmp_path / "outside"
    shared.mkdir()
    outside.mkdir()
    (shared / "cond.json").write_text(json.dumps([{"text": "t", "depth": str(example["depth"][0]),
                                                   "track": "../outside/track.mp4"}]))
    (outside / "track.mp4").write_bytes(example["track"][0].read_bytes())
    allowed = access.AllowedDirs.create(shared, [])
    with pytest.raises(AppInputError) as err:
        read_condition_folder(shared, allowed)
    assert "clip 0 depth video depth_00.mp4: outside the folders" in str(err.value)
    assert "clip 0 track video track.mp4: outside the folders" in str(err.value)
    assert str(outside) not in str(err.value) and str(example["depth"][0].parent) not in str(err.value)


def test_lora_rows_uploaded_or_shared(tmp_path):
    from longvie.app.inputs import lora_specs

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "style.safetensors").write_bytes(b"x")
    (shared / "notes.txt").write_text("x")
    upload = tmp_path / "cache" / "hash" / "fast.safetensors"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    allowed = access.AllowedDirs.create(shared, [])
    specs, problems = lora_specs([["fast.safetensors", 1.0], ["style.safetensors", "0.5"], ["", None]],
                                 {"fast.safetensors": str(upload)}, allowed.resolve)
    assert problems == [] and specs == [f"{upload}:1", f"{(shared / 'style.safetensors').resolve()}:0.5"]
    _, problems = lora_specs([["notes.txt", 1], ["style.safetensors", "strong"], ["/etc/passwd", 1]], {},
                             allowed.resolve)
    assert "LoRA notes.txt: not a .safetensors file" in problems[0]
    assert "scale 'strong' is not a number" in problems[1]
    assert "not inside the folders this server shares" in problems[2]


def test_lora_library_missing_or_bad_file_is_a_message_before_the_queue(studio, example, tmp_path):
    with pytest.raises(AppInputError) as err:
        studio.prepare_new_run(request_for(example, loras=[f"{tmp_path / 'none.safetensors'}:1"]))
    assert "LoRA" in str(err.value)
    assert not list(studio.outputs.glob("*")) if studio.outputs.exists() else True


class FakeJob:
    """A job whose steps the test releases one by one."""

    def __init__(self):
        import threading

        self.release = threading.Semaphore(0)
        self.started = threading.Event()

    def __call__(self, control):
        self.started.set()
        for step in range(1, 4):
            if not self.release.acquire(timeout=30):
                break
            yield JobEvent("step", clip=0, step=step, steps=3, num_clips=1)
            if control.cancel.is_set():
                yield JobEvent("cancelled", "cancelled")
                return
        yield JobEvent("done", "done")


def test_jobs_belong_to_their_session(tmp_path):
    from longvie.app.jobs import JobManager, NotYours

    manager = JobManager()
    alice, bob = access.owner_key("alice-session"), access.owner_key("bob-session")
    assert alice != bob and len(alice) == 32 and access.owner_key(None) is None
    first, second = FakeJob(), FakeJob()
    discarded = []
    job_a = manager.submit("run-a", "generate", alice, first)
    job_b = manager.submit("run-b", "generate", bob, second, on_discard=lambda: discarded.append("run-b"))
    assert first.started.wait(10)
    assert manager.position(job_a) is None and manager.position(job_b) == (1, 1)  # one job ahead of bob's
    with pytest.raises(ValueError, match="already"):
        manager.submit("run-a", "resume", alice, FakeJob())
    with pytest.raises(NotYours):
        manager.cancel("run-a", bob)  # bob cannot cancel alice's job
    with pytest.raises(NotYours):
        manager.stop_after_clip("run-a", None)
    assert not job_a.control.cancel.is_set()
    first.release.release()
    while job_a.step is None:
        manager.wait(manager.version, timeout=1)
    assert "stops after clip 0" in manager.stop_after_clip("run-a", alice)  # a step ran: clip 0 is active
    assert job_a.control.stop_after_clip.is_set()
    assert "Cancelled before it started" in manager.cancel("run-b", bob)  # a waiting job leaves the queue
    assert job_b.state == "cancelled" and discarded == ["run-b"] and not second.started.is_set()
    assert "Cancelling" in manager.cancel("run-a", alice)
    first.release.release()
    deadline = __import__("time").monotonic() + 30
    while job_a.active and __import__("time").monotonic() < deadline:
        manager.wait(manager.version, timeout=1)
    assert job_a.state == "cancelled" and [j.id for j in manager.jobs_of(alice)] == ["run-a"]


def test_runs_are_listed_for_their_owner_only(studio, example):
    from longvie.app.runs import visible_runs

    alice, bob = access.owner_key("a"), access.owner_key("b")
    events = run_events(studio.run_prepared(studio.prepare_new_run(request_for(example, name="mine", owner=alice,
                                                                               texts=example["texts"][:1]))))
    assert events[-1].kind == "done", events[-1].message
    assert access.read_owner(studio.outputs / "mine") == alice
    assert [r.path.name for r in visible_runs(studio.outputs, alice)] == ["mine"]
    assert visible_runs(studio.outputs, bob) == [] and visible_runs(studio.outputs, None) == []
    [shared] = visible_runs(studio.outputs, bob, shared=True)
    assert shared.label_for(bob).endswith("· read only") and not shared.label_for(alice).endswith("read only")
    # A prepared run cancelled while queued leaves nothing behind.
    prepared = studio.prepare_new_run(request_for(example, name="never", owner=alice))
    assert (studio.outputs / "never" / "inputs" / "cond.json").is_file()
    studio.discard(prepared)
    assert not (studio.outputs / "never").exists()


def test_server_folders_under_outputs_follow_run_owners(tmp_path, studio):
    from longvie.app.jobs import JobManager
    from longvie.app.ui import Page

    alice, bob = access.owner_key("a"), access.owner_key("b")
    for name, owner in (("alices", alice), ("bobs", bob)):
        (studio.outputs / name / "inputs").mkdir(parents=True)
        access.write_owner(studio.outputs / name, owner)
    page = Page(studio, JobManager(), access.AllowedDirs.create(studio.outputs, []), shared_runs=False)
    assert page.server_folder(str(studio.outputs / "alices" / "inputs"), alice, "folder").name == "inputs"
    with pytest.raises(access.NotAllowedError, match="not found"):
        page.server_folder(str(studio.outputs / "bobs" / "inputs"), alice, "folder")
    page.shared = True
    assert page.server_folder(str(studio.outputs / "bobs" / "inputs"), alice, "folder").name == "inputs"


# ------------------------------------------------------------------------------------------------
# Live preview and stop after this clip (issue 22, point 5)
# ------------------------------------------------------------------------------------------------
from longvie.app.preview import (  # noqa: E402
    WAN21_LATENT_RGB_BIAS,
    WAN21_LATENT_RGB_FACTORS,
    latents_to_rgb,
    preview_strip,
)


def test_latent_to_rgb_projection_by_hand():
    import torch

    latents = torch.zeros(1, 16, 3, 2, 2)
    latents[0, 2, 1, 0, 1] = 1.0  # one channel of one pixel of latent frame 1
    latents[0, 6, 2, 1, 1] = 10.0  # far out of range: clamped
    rgb = latents_to_rgb(latents)
    assert rgb.shape == (3, 2, 2, 3) and rgb.dtype == np.uint8
    expected = np.round((np.clip(WAN21_LATENT_RGB_FACTORS[2] + WAN21_LATENT_RGB_BIAS, -1, 1) + 1) * 127.5)
    np.testing.assert_array_equal(rgb[1, 0, 1], expected.astype(np.uint8))
    background = np.round((WAN21_LATENT_RGB_BIAS + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb[0, 0, 0], background)
    assert (rgb[2, 1, 1] == 0).all()  # channel 6 is negative in R, G and B: -3.5 .. -4 -> 0
    strip = preview_strip(latents, max_frames=4, scale=4, min_width=0)
    assert strip.shape == (2 * 4, (3 * 2 + 2) * 4, 3)  # 3 latent frames of 2x2, 2 separators, 4x enlarged
    with pytest.raises(ValueError, match="Wan 2.1 latents"):
        latents_to_rgb(torch.zeros(4, 3, 2, 2))


def test_pipeline_x0_estimate_matches_the_flow_matching_identity(tiny_pipeline, example):
    """x0 given to the step callback = x_t - s_t v (an independent computation from consecutive
    latents and the schedule's sigmas); asking for it changes nothing in the output."""
    import torch

    from longvie.media.video_io import load_image, read_video
    from longvie.sampling.scheduling import make_sampling_scheduler

    image = load_image(example["image"])
    dense, sparse = read_video(example["depth"][0]), read_video(example["track"][0])
    args = dict(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=3, seed=0, progress=False)
    torch.manual_seed(0)
    plain, _ = tiny_pipeline(image, "a prompt", dense, sparse, **args)
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((tensors["latents"].clone(), tensors["x0"].clone()))

    torch.manual_seed(0)
    frames, noise = tiny_pipeline(image, "a prompt", dense, sparse, callback_on_step_end=callback,
                                  callback_on_step_end_tensor_inputs=("latents", "x0"), **args)
    np.testing.assert_array_equal(frames, plain)
    sigmas = make_sampling_scheduler(3, 5.0).sigmas.double()
    previous = noise.double()
    for step, (latents, x0) in enumerate(seen):
        velocity = (latents.double() - previous) / (sigmas[step + 1] - sigmas[step])
        torch.testing.assert_close(x0.double(), previous - sigmas[step] * velocity, rtol=1e-4, atol=1e-4)
        previous = latents.double()
    torch.testing.assert_close(seen[-1][1], seen[-1][0])  # the last step: sigma 0, x0 = the latents


def test_previews_during_a_clip_and_stop_after_this_clip(studio, example):
    from longvie.app.engine import JobControl

    control = JobControl()
    events = []
    for event in studio.new_run(request_for(example, name="stop", steps=3), control):
        events.append(event)
        if event.kind == "step" and event.clip == 0 and event.step == 1:
            control.stop_after_clip.set()
    previews = [e for e in events if e.kind == "preview"]
    assert [(e.clip, e.step) for e in previews] == [(0, 1), (0, 2), (0, 3)]  # every step for short schedules
    scale = -(-480 // (3 * WIDTH // 8 + 2))  # 3 latent frames and 2 separators, enlarged to >= 480 px
    assert previews[0].image.shape == (scale * HEIGHT // 8, scale * (3 * WIDTH // 8 + 2), 3)
    assert not np.array_equal(previews[0].image, previews[1].image)  # the estimate changes during the clip
    assert events[-1].kind == "stopped" and "Stopped after clip 0" in events[-1].message
    assert [e.clip for e in events if e.kind == "clip"] == [0]
    run_dir = studio.outputs / "stop"
    assert "stopped after clip 0 on request" in (run_dir / "run.log").read_text()
    assert len(load_run_frames(run_dir)) == FRAMES and (run_dir / "video.mp4").is_file()
    resumed = run_events(studio.resume(run_dir))
    assert resumed[-1].kind == "done" and [e.clip for e in resumed if e.kind == "clip"] == [1]


def test_a_runs_loras_are_its_settings_and_a_changed_lora_is_not_resumed(studio, example, tmp_path):
    """A LoRA (ComfyUI layout, for the tiny model) is fused, its sha256 and scale are recorded as settings
    of the run, and a resume after the file changed is refused instead of mixing two LoRAs in one video."""
    import torch
    from safetensors.torch import save_file

    from longvie.weights.lora import file_sha256

    def write(seed):
        g = torch.Generator().manual_seed(seed)
        save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 64, generator=g) * 0.3,
                   "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(64, 4, generator=g) * 0.3,
                   "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(4.0)}, str(lora))

    lora = tmp_path / "style.safetensors"
    write(0)
    events = run_events(studio.new_run(request_for(example, name="with lora", loras=[f"{lora}:0.8"])))
    assert events[-1].kind == "done", events[-1].message
    manifest = json.loads((events[-1].run_dir / "manifest.json").read_text())
    assert manifest["settings"]["loras"] == [{"sha256": file_sha256(lora), "scale": 0.8}]
    write(1)
    again = run_events(studio.resume(events[-1].run_dir))
    assert again[-1].kind == "error" and "loras" in again[-1].message


# ------------------------------------------------------------------------------------------------
# The camera tab's jobs (longvie.app.camera): the synthetic example's photo and exact depth, no depth model
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_photo(tmp_path_factory):
    """The synthetic scene's photo and its depth in metres, at twice the test size (same aspect ratio)."""
    from longvie.camera.example import write_synthetic_photo

    return write_synthetic_photo(tmp_path_factory.mktemp("camera_photo") / "example", 2 * HEIGHT, 2 * WIDTH)


def camera_request(camera_photo, **overrides):
    from longvie.app.camera import CameraRequest

    photo, depth = camera_photo
    fields = dict(photo=photo, depth=depth, fov=70, path="orbit_left", angle=20, clips=2,
                  prompt="The camera circles left across a sunlit plaza.", steps=1, height=HEIGHT, width=WIDTH,
                  num_frames=FRAMES, offload="none", owner="owner-key")
    return CameraRequest(**{**fields, **overrides})


def camera_problems(jobs, request) -> dict[str, list[str]]:
    from longvie.app.camera import camera_fields

    with pytest.raises(AppInputError) as err:
        jobs.check(request)
    for problem in err.value.problems:  # in the page's words: no command-line flag, no server folder
        assert "--" not in problem and "/" not in problem.split(" — ")[0].replace("clips/", ""), problem
    return {name: found for name, found in camera_fields(err.value.problems).items() if found}


def test_camera_request_problems_are_field_errors_in_page_words(tmp_path, camera_photo):
    """Each bad input of the camera tab is reported before anything runs, at its field, naming the file
    by its name: a missing or unreadable photo, a depth map of another aspect ratio, with values <= 0 or
    of the wrong kind, a path that leaves every point behind the camera, missing prompts, bad numbers."""
    from longvie.app.camera import CameraJobs, clip_count, page_words

    jobs = CameraJobs(Studio("tiny", tmp_path / "outputs"))
    photo, depth = camera_photo
    assert camera_problems(jobs, camera_request(camera_photo, photo=None, prompt="")) == {
        "photo": ["Photo: missing — upload a photo (PNG or JPEG), or give one on the server"],
        "prompts": ["Prompt: none for every clip — write one prompt for all clips, or one per clip in the table"]}
    broken = tmp_path / "holiday.png"
    broken.write_text("not an image")
    assert camera_problems(jobs, camera_request(camera_photo, photo=broken))["photo"] == [
        "Photo holiday.png: cannot be read as an image — upload a PNG or JPEG"]
    np.save(tmp_path / "square.npy", np.full((40, 40), 5.0, np.float32))
    problem, = camera_problems(jobs, camera_request(camera_photo, depth=tmp_path / "square.npy"))["geometry"]
    assert problem.startswith("Depth map square.npy: the depth map is 40x40") and "aspect" in problem
    negative = np.load(depth)
    negative[0, :3] = -1.0
    np.save(tmp_path / "negative.npy", negative)
    problem, = camera_problems(jobs, camera_request(camera_photo, depth=tmp_path / "negative.npy"))["geometry"]
    assert problem.startswith("Depth map negative.npy: 3 pixel(s) have depth <= 0")
    from PIL import Image

    Image.fromarray(np.zeros((2 * HEIGHT, 2 * WIDTH), np.uint8)).save(tmp_path / "eight_bit.png")
    problem, = camera_problems(jobs, camera_request(camera_photo, depth=tmp_path / "eight_bit.png"))["geometry"]
    assert problem.startswith("Depth map eight_bit.png: a L PNG; a depth PNG must be 16-bit")
    assert camera_problems(jobs, camera_request(camera_photo, depth=tmp_path / "notes.txt"))["geometry"] == [
        "Depth map notes.txt: wrong file type — give a .npy or .npz depth map in metres, or a 16-bit PNG in "
        "millimetres"]
    # dolly_in at 500 m/s: within the first clip the camera has passed every point of the plaza (<= ~250 m away)
    problem, = camera_problems(jobs, camera_request(camera_photo, path="dolly_in", speed=500))["path"]
    assert problem.startswith("Camera path dolly_in: at frame ") and "behind the camera or out of view" in problem
    assert "(Clips or Seconds)" in problem and "(Speed or Angle)" in problem
    found = camera_problems(jobs, camera_request(camera_photo, speed="fast", angle=-1, fov=200, clips=0,
                                                 prompts=["", "", "extra"], steps=0))
    assert found["path"] == ["Speed 'fast': not a number (metres per second; empty: 5 % of the scene's depth per "
                             "second)", "Angle -1: must be at least 0 (degrees per second)",
                             "Clips 0: must be at least 1"]
    assert found["geometry"] == ["Field of view 200: must be between 1 and 179 (horizontal, in degrees; empty: 60)"]
    assert found["settings"] == ["Steps 0: must be at least 1 (50 for the released model)"]
    # one prompt for every clip, or the table's rows; seconds win over clips (9 frames at 16 fps: 0.5 s a clip)
    checked = jobs.check(camera_request(camera_photo, seconds="1.2", clips=1, prompts=["", "clip one", ""]))
    assert checked.num_clips == clip_count(1, 1.2, FRAMES, 16) == 3
    assert checked.prompts == ["The camera circles left across a sunlit plaza.", "clip one",
                               "The camera circles left across a sunlit plaza."]
    assert page_words("--path orbit_left: shorten the path (--clips/--seconds); --depth /srv/in/d.npy: bad",
                      ) == "Camera path orbit_left: shorten the path (Clips or Seconds); Depth map d.npy: bad"


def test_camera_depth_model_that_cannot_load_is_a_page_message(tmp_path, camera_photo, monkeypatch):
    """No depth map uploaded and a depth model the server cannot load (offline): the job ends with an error
    at the depth field that says what to upload, not the command line's flags, and leaves no folder."""
    from longvie.app.camera import CameraJobs, camera_fields
    from longvie.camera import depth as depth_module

    def offline(name, *args, **kwargs):
        raise depth_module.DepthModelError(f"the metric depth model '{name}' is not cached — {depth_module.DEPTH_HINT}")

    monkeypatch.setattr(depth_module, "load_depth_estimator", offline)
    jobs = CameraJobs(Studio("tiny", tmp_path / "outputs"))
    folder = jobs.new_folder("offline")
    events = run_events(jobs.preview(jobs.check(camera_request(camera_photo, depth=None)), folder))
    assert events[-1].kind == "error" and "--" not in events[-1].message
    problem, = camera_fields([events[-1].message[2:]])["geometry"]
    assert problem.startswith("Depth map: the depth model tiny cannot be loaded") and "upload a depth map" in problem
    assert not folder.exists()


def test_camera_preview_then_generate_then_render_when_changed(studio, camera_photo):
    """Preview path renders the condition folder under outputs/.camera (owned, with stage progress);
    Generate samples that folder (its controls and camera.json land in the run's inputs/); a request whose
    controls differ from the preview's renders its own folder first, in the same job."""
    from longvie.app.camera import CAMERA_DIR, CameraJobs
    from longvie.app.runs import visible_runs
    from longvie.camera import STAGES

    jobs = CameraJobs(studio)
    checked = jobs.check(camera_request(camera_photo))
    folder = jobs.new_folder("plaza-orbit")
    events = run_events(jobs.preview(checked, folder))
    assert events[-1].kind == "done" and events[-1].folder == folder, events[-1].message
    assert folder.parent == studio.outputs / CAMERA_DIR and access.read_owner(folder) == "owner-key"
    stages = [(e.stage, e.step, e.steps) for e in events if e.kind == "step"]
    assert {s for s, _, _ in stages} == set(STAGES)
    assert all(next(done for s, done, _ in stages if s == stage) == 0 for stage in STAGES)  # each starts at 0
    assert ("rendering", 17, 17) in stages and ("track videos", 2, 2) in stages
    for name in ("path_topdown.png", "preview.mp4", "camera.json", "depth_01.mp4", "track_01.mp4"):
        assert (folder / name).is_file(), name

    run_dir = jobs.run_dir("orbit")
    events = run_events(jobs.generate(checked, run_dir, folder))
    assert events[-1].kind == "done", events[-1].message
    assert not any(e.stage for e in events)  # the previewed folder was used: nothing rendered again
    inputs = run_dir / "inputs"
    for name in ("depth_00.mp4", "depth_01.mp4", "track_00.mp4", "track_01.mp4", "camera.json"):
        assert (inputs / name).read_bytes() == (folder / name).read_bytes(), name
    assert [c["text"] for c in json.loads((inputs / "cond.json").read_text())] == checked.prompts
    assert load_run_frames(run_dir).shape == (2 * FRAMES - 1, HEIGHT, WIDTH, 3)
    assert [r.path.name for r in visible_runs(studio.outputs, "owner-key")] == ["orbit"]

    changed = jobs.check(camera_request(camera_photo, path="pan_right", clips=1))
    assert changed.controls_key() != checked.controls_key() == jobs.check(camera_request(camera_photo)).controls_key()
    events = run_events(jobs.generate(changed, jobs.run_dir("pan"), None))
    assert events[-1].kind == "done", events[-1].message
    assert {e.stage for e in events if e.stage} == set(STAGES)
    camera = json.loads((studio.outputs / "pan" / "inputs" / "camera.json").read_text())
    assert camera["path"]["preset"] == "pan_right" and camera["frames"] == FRAMES


def test_camera_explore_stops_after_a_clip_and_resumes_to_the_same_video(studio, camera_photo):
    """Explore runs longvie.camera.explore from the job worker: steps, previews and clips as events, stop
    after this clip, then Resume (from Past runs, through the run's recorded request) ends with the video of
    an uninterrupted run, and the memory grew."""
    from longvie.app.camera import CameraJobs, is_explore_run
    from longvie.app.engine import JobControl
    from longvie.camera.memory import WorldMemory

    jobs = CameraJobs(studio)
    request = dict(explore=True, path="pan_left", clips=2)
    whole = run_events(jobs.explore(jobs.check(camera_request(camera_photo, **request)), jobs.run_dir("whole")))
    assert whole[-1].kind == "done", whole[-1].message
    assert {e.kind for e in whole} >= {"step", "preview", "clip", "done"}
    assert [e.clip for e in whole if e.kind == "clip"] == [0, 1]
    assert "the 3D memory grew" in whole[-1].message

    control = JobControl()
    control.stop_after_clip.set()
    run_dir = jobs.run_dir("stopped")
    stopped = run_events(jobs.explore(jobs.check(camera_request(camera_photo, **request)), run_dir, control))
    assert stopped[-1].kind == "stopped" and "Resume continues with clip 1" in stopped[-1].message
    assert is_explore_run(run_dir) and access.read_owner(run_dir) == "owner-key"
    resumed = run_events(jobs.resume(run_dir))
    assert resumed[-1].kind == "done", resumed[-1].message
    assert [e.clip for e in resumed if e.kind == "clip"] == [1]
    assert np.array_equal(load_run_frames(run_dir), load_run_frames(studio.outputs / "whole"))
    sizes = [len(WorldMemory.load(run_dir / "camera" / "memory" / f"memory_{k:03d}.npz")[0].cloud) for k in range(3)]
    assert sizes[0] == HEIGHT * WIDTH and sizes[0] < sizes[1] < sizes[2], sizes
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["clips"][1]["inputs"]["depth"]["found_by"] == "control provider longvie.camera.explore"
    assert (run_dir / "camera" / "camera.json").is_file() and (run_dir / "camera" / "memory.ply").is_file()
