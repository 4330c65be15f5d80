"""Long-video sampler: chaining, stitching, validation, resume, change detection, --redo (CPU).

Most tests drive the sampler with ``FakePipeline`` (same call signature as LongViePipeline, output a
deterministic function of every input) so that the resume logic is tested quickly and exhaustively;
the tests marked "real" run the tiny random-weight LongViePipeline end to end.
"""

from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longvie.longvideo.run_state import RedoRequest, RunDir, RunMismatchError
from longvie.longvideo.sampler import (
    LongVideoSampler,
    LongVideoSettings,
    load_run_frames,
    stitch_clips,
    stitched_length,
)
from longvie.longvideo.validation import InputValidationError, load_conditions, validate_inputs
from longvie.media.video_io import count_frames, read_video, write_video

REPO = Path(__file__).resolve().parents[2]
RIDE_HORSE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "ride_horse"

FRAMES, HEIGHT, WIDTH = 9, 32, 48  # clip shape of the fake-pipeline tests
SETTINGS = LongVideoSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=2, model="fake", dtype="float32")


class FakePipeline:
    """Stands in for LongViePipeline: same call signature, deterministic output from all inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, prompt, dense_video, sparse_video, negative_prompt="neg", history=None, noise=None,
                 num_frames=81, height=352, width=640, num_inference_steps=50, guidance_scale=5.0, shift=5.0,
                 seed=0, generator=None, progress=True):
        given_noise = noise
        if noise is None:
            shape = (1, 16, 1 + (num_frames - 1) // 4, height // 8, width // 8)
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        image = np.asarray(image)
        history = None if history is None else np.asarray(history)
        self.calls.append({"prompt": prompt, "seed": seed, "noise_in": given_noise, "noise": noise,
                           "image": image.copy(), "history": history})
        key = (zlib.crc32(prompt.encode()) + int(noise.abs().sum() * 1000) + int(np.asarray(dense_video).sum())
               + 3 * int(np.asarray(sparse_video).sum()) + (0 if history is None else int(history.sum())))
        t = np.arange(num_frames)[:, None, None, None]
        frames = (image[None].astype(np.int64) + t * (key % 7 + 1) + key) % 256
        return frames.astype(np.uint8), noise


def make_inputs(root: Path, num_clips: int = 3, frames: int = FRAMES, size=(HEIGHT, WIDTH)) -> tuple[Path, Path]:
    """A first image and num_clips clips of small random control videos; returns (image, cond.json)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "first.png")
    entries = []
    for index in range(num_clips):
        for kind in ("depth", "track"):
            write_video(root / f"{kind}_{index:02d}.mp4", rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8))
        entries.append({"text": f"prompt of clip {index}", "depth": f"depth_{index:02d}.mp4",
                        "track": f"track_{index:02d}.mp4"})
    (root / "cond.json").write_text(json.dumps(entries))
    return root / "first.png", root / "cond.json"


@pytest.fixture
def inputs(tmp_path):
    image, cond = make_inputs(tmp_path / "inputs")
    clips, problems = load_conditions(cond)
    assert not problems
    return image, cond, clips


def run_fake(run_dir, inputs, pipe=None, **kwargs):
    image, _, clips = inputs
    pipe = pipe or FakePipeline()
    result = LongVideoSampler(SETTINGS, pipe=pipe, progress=False)(run_dir, image, clips, **kwargs)
    return result, pipe


def run_files(run_dir: Path) -> dict:
    """Bytes of everything a run produced except the manifest and log (which hold timings)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "run.log")}


class Crash(Exception):
    pass


def crash_after(clip: int):
    def hook(index):
        if index == clip:
            raise Crash(f"simulated kill after clip {clip}")
    return hook


# ------------------------------------------------------------------------------------------------
# Stitching and chaining
# ------------------------------------------------------------------------------------------------


def test_stitch_rule():
    assert stitched_length(10, 81) == 81 + 9 * 80 == 801
    assert stitched_length(1, 81) == 81
    clips = [np.full((5, 2, 2, 3), i, np.uint8) for i in range(3)]
    frames = list(stitch_clips(clips))
    assert len(frames) == 5 + 4 + 4
    assert [int(f[0, 0, 0]) for f in frames] == [0] * 5 + [1] * 4 + [2] * 4


def test_chaining_stitching_and_outputs(tmp_path, inputs):
    result, pipe = run_fake(tmp_path / "run", inputs)
    assert result.generated == [0, 1, 2]
    assert result.num_frames == stitched_length(3, FRAMES) == count_frames(result.video_path)
    for clip in result.clip_paths:
        assert count_frames(clip) == FRAMES

    states = [RunDir(result.run_dir).load_clip_state(i) for i in range(3)]
    # Chaining: image = previous last frame, history = previous last 8 frames, one noise tensor.
    assert pipe.calls[0]["history"] is None and pipe.calls[0]["noise_in"] is None
    for k in (1, 2):
        assert np.array_equal(pipe.calls[k]["image"], states[k - 1].frames[-1])
        assert np.array_equal(pipe.calls[k]["history"], states[k - 1].frames[-8:])
        assert torch.equal(pipe.calls[k]["noise_in"], pipe.calls[0]["noise"])
        assert torch.equal(states[k].noise, states[0].noise)
    # Stitched (lossless) = clip 0 + clips 1.. without their first frame.
    expected = np.concatenate([states[0].frames, states[1].frames[1:], states[2].frames[1:]])
    assert np.array_equal(load_run_frames(result.run_dir), expected)

    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert [c["status"] for c in manifest["clips"]] == ["done"] * 3
    assert all(c["seconds"] >= 0 for c in manifest["clips"]) and manifest["seed"] == 0
    assert manifest["clips"][0]["inputs"]["image"]["sha256"]
    assert "clip 2 done (3 of 3)" in (result.run_dir / "run.log").read_text()


# ------------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash_clip", [0, 1])
def test_resume_after_kill_is_bit_identical(tmp_path, inputs, crash_clip):
    reference, _ = run_fake(tmp_path / "reference", inputs)
    with pytest.raises(Crash):
        run_fake(tmp_path / "run", inputs, on_clip_done=crash_after(crash_clip))
    assert not (tmp_path / "run" / "run.lock").exists()
    resumed, pipe = run_fake(tmp_path / "run", inputs)
    assert resumed.generated == list(range(crash_clip + 1, 3))
    assert run_files(tmp_path / "run") == run_files(tmp_path / "reference")


@pytest.mark.parametrize("failing", ["write_clip_video", "save_manifest"])
def test_kill_between_files_keeps_state_consistent(tmp_path, inputs, monkeypatch, failing):
    """A kill after the clip's state file but before its commit: the clip is redone, nothing mixes."""
    reference, _ = run_fake(tmp_path / "reference", inputs)
    original = getattr(RunDir, failing)
    calls = {"n": 0}

    def fail_on_clip_1(self, *args, **kwargs):
        state_written = self.clip_state_path(1).exists()
        if state_written:  # clip 1's state is on disk: crash before its commit
            calls["n"] += 1
            raise Crash(f"killed inside {failing}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunDir, failing, fail_on_clip_1)
    with pytest.raises(Crash):
        run_fake(tmp_path / "run", inputs)
    monkeypatch.setattr(RunDir, failing, original)
    assert calls["n"] == 1

    manifest = RunDir(tmp_path / "run").load_manifest()
    assert [c and c["status"] for c in manifest["clips"]] == ["done", "pending", "pending"]
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]
    resumed, _ = run_fake(tmp_path / "run", inputs)
    assert resumed.generated == [1, 2]
    assert run_files(tmp_path / "run") == run_files(tmp_path / "reference")


def test_corrupt_state_is_regenerated_and_finished_run_loads_no_model(tmp_path, inputs):
    reference, _ = run_fake(tmp_path / "run", inputs)
    image, _, clips = inputs

    def no_model():
        raise AssertionError("a finished run must not load the model")

    again = LongVideoSampler(SETTINGS, load_pipe=no_model, progress=False)(tmp_path / "run", image, clips)
    assert again.generated == []

    before = run_files(tmp_path / "run")
    state = RunDir(tmp_path / "run").clip_state_path(1)
    state.write_bytes(state.read_bytes()[:-10])  # truncated on disk
    (tmp_path / "run" / "clips" / "clip_000.mp4").unlink()  # a deleted clip video is re-encoded
    repaired, _ = run_fake(tmp_path / "run", inputs)
    assert repaired.generated == [1, 2]
    assert run_files(tmp_path / "run") == before


# ------------------------------------------------------------------------------------------------
# Change detection and --redo
# ------------------------------------------------------------------------------------------------


def test_changed_inputs_are_detected_and_redo_regenerates(tmp_path, inputs):
    image, cond, _ = inputs
    run_fake(tmp_path / "run", inputs)
    write_video(cond.parent / "depth_01.mp4", np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8))
    entries = json.loads(cond.read_text())
    entries[2]["text"] = "a different prompt"
    cond.write_text(json.dumps(entries))
    changed = (image, cond, load_conditions(cond)[0])

    with pytest.raises(RunMismatchError) as err:
        run_fake(tmp_path / "run", changed)
    message = str(err.value)
    assert "clip 1: depth video" in message and "clip 2: prompt changed" in message and "--redo 1" in message
    assert err.value.first_changed == 1

    with pytest.raises(RunMismatchError, match="seed"):
        run_fake(tmp_path / "run", inputs, seed=5)  # a new seed is a changed input of clip 0 too
    with pytest.raises(RunMismatchError, match="setting steps"):
        LongVideoSampler(LongVideoSettings(**{**SETTINGS.__dict__, "steps": 3}), pipe=FakePipeline(),
                         progress=False)(tmp_path / "run", image, inputs[2])

    redone, pipe = run_fake(tmp_path / "run", changed, redo=RedoRequest(1))
    assert redone.generated == [1, 2]
    assert pipe.calls[1]["prompt"] == "a different prompt"
    assert run_fake(tmp_path / "run", changed)[0].generated == []  # consistent again
    fresh, _ = run_fake(tmp_path / "fresh", changed)
    assert run_files(tmp_path / "run") == run_files(tmp_path / "fresh")


def test_redo_with_new_seed_and_prompt_is_kept_and_resumable(tmp_path, inputs):
    run_fake(tmp_path / "run", inputs)
    redo = RedoRequest(1, seed=7, text="new prompt for clip 1")
    with pytest.raises(Crash):
        run_fake(tmp_path / "run", inputs, redo=redo, on_clip_done=crash_after(1))
    resumed, pipe = run_fake(tmp_path / "run", inputs, redo=redo)  # the same command continues the redo
    assert resumed.generated == [2]

    run = RunDir(tmp_path / "run")
    manifest = run.load_manifest()
    assert manifest["overrides"] == {"1": {"text": "new prompt for clip 1", "seed": 7}}
    assert manifest["pending_redo"] is None
    assert manifest["clips"][1]["inputs"]["noise_seed"] == 7
    # Clip 1 drew new noise from seed 7; clip 2 carries it (unified noise restarts at the redone clip).
    noise_7 = torch.randn(run.load_clip_state(0).noise.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(run.load_clip_state(1).noise, noise_7)
    assert torch.equal(pipe.calls[0]["noise_in"], noise_7)
    # A plain re-run afterwards keeps the overrides: nothing changed, nothing regenerated.
    assert run_fake(tmp_path / "run", inputs)[0].generated == []


def test_redo_zero_accepts_new_settings_and_seed(tmp_path, inputs):
    image, _, clips = inputs
    run_fake(tmp_path / "run", inputs)
    settings = LongVideoSettings(**{**SETTINGS.__dict__, "steps": 3})
    result = LongVideoSampler(settings, pipe=FakePipeline(), progress=False)(
        tmp_path / "run", image, clips, redo=RedoRequest(0, seed=3))
    assert result.generated == [0, 1, 2]
    manifest = RunDir(tmp_path / "run").load_manifest()
    assert manifest["seed"] == 3 and manifest["settings"]["steps"] == 3


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def test_validation_lists_every_problem(tmp_path):
    image, cond = make_inputs(tmp_path, num_clips=3)
    image.write_bytes(b"not an image")
    (tmp_path / "depth_00.mp4").unlink()
    write_video(tmp_path / "track_01.mp4", np.zeros((5, HEIGHT, WIDTH, 3), np.uint8))  # too few frames
    (tmp_path / "depth_02.mp4").write_bytes(b"garbage" * 20)
    with pytest.raises(InputValidationError) as err:
        validate_inputs(image, cond, num_frames=FRAMES, height=HEIGHT, width=WIDTH)
    problems = err.value.problems
    assert len(problems) == 4, problems
    text = str(err.value)
    assert "first.png" in text and "depth_00.mp4: file not found" in text
    assert "track_01.mp4: has 5 frames, needs at least num_frames=9" in text
    assert "depth_02.mp4" in text and "cannot read video" in text
    assert isinstance(err.value, ValueError)


def test_validation_malformed_json_and_schema(tmp_path):
    image, cond = make_inputs(tmp_path, num_clips=1)
    cond.write_text('[{"text": "a", "depth": "depth_00.mp4" "track": "track_00.mp4"}]')
    image.unlink()
    with pytest.raises(InputValidationError) as err:
        validate_inputs(image, cond, num_frames=FRAMES, height=HEIGHT, width=WIDTH)
    assert len(err.value.problems) == 2
    assert "malformed JSON at line 1" in str(err.value) and "image not found" in str(err.value)

    entries = [{"text": "a", "depth": "depth_00.mp4"}, "oops", {"text": 3, "depth": "d", "track": "t"}]
    cond.write_text(json.dumps(entries))
    with pytest.raises(InputValidationError) as err:
        validate_inputs(image, cond, num_frames=FRAMES, height=HEIGHT, width=WIDTH)
    text = str(err.value)
    assert "clip 0: missing key(s) track" in text and "clip 1: must be an object" in text
    assert "clip 2: text must be non-empty" in text


def test_validation_notes_resizes_and_extra_frames(tmp_path):
    image, cond = make_inputs(tmp_path, num_clips=1, frames=13, size=(48, 80))
    inputs = validate_inputs(image, cond, num_frames=FRAMES, height=HEIGHT, width=WIDTH, resize="stretch")
    notes = " ".join(inputs.notes)
    assert "80x48 resized to 48x32 (plain resize" in notes and "the first 9 of each are used" in notes
    with pytest.raises(InputValidationError, match="multiple of 16"):
        validate_inputs(image, cond, num_frames=FRAMES, height=30, width=WIDTH)


# ------------------------------------------------------------------------------------------------
# The real tiny pipeline
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("longvie_cache")


@pytest.fixture(scope="module")
def tiny_pipe(tiny_cache):
    from longvie.presets.tiny import write_tiny_checkpoints
    from longvie.sampling.pipeline import LongViePipeline

    base, longvie = write_tiny_checkpoints(tiny_cache / "tiny_checkpoints")
    return LongViePipeline.from_pretrained(base, longvie, torch_dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory):
    from longvie.examples.synthetic import make_synthetic_example

    cond = make_synthetic_example(tmp_path_factory.mktemp("synthetic"), clips=2, height=HEIGHT, width=WIDTH,
                                  frames_per_clip=FRAMES, reference=False)
    return cond.parent / "first.png", cond, load_conditions(cond)[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_cache, synthetic_inputs):
    """An uninterrupted 2-clip run of ``python -m longvie.sample --preset tiny`` (in-process)."""
    from longvie.longvideo.cli import main

    _, cond, _ = synthetic_inputs
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    args = ["--preset", "tiny", "--cond", str(cond), "--out", str(run_dir), "--height", str(HEIGHT),
            "--width", str(WIDTH), "--steps", "2", "--no-progress"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LONGVIE_CACHE", str(tiny_cache))  # reuses the fixture's tiny checkpoints
        assert main(args) == 0
    return run_dir, args


def test_cli_tiny_preset_end_to_end(cli_run, tiny_cache, monkeypatch, capsys):
    from longvie.longvideo.cli import main

    run_dir, args = cli_run
    monkeypatch.setenv("LONGVIE_CACHE", str(tiny_cache))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["preset"] == "tiny" and manifest["settings"]["steps"] == 2
    assert [c["status"] for c in manifest["clips"]] == ["done", "done"]
    assert count_frames(run_dir / "video.mp4") == stitched_length(2, FRAMES)
    capsys.readouterr()
    assert main(args) == 0  # a finished run: nothing to generate, no model loaded
    assert "video.mp4 (17 frames, 2 clips" in capsys.readouterr().out
    assert main([*args, "--seed", "4"]) == 2  # a changed seed of a finished clip is reported
    assert "--redo 0" in capsys.readouterr().err


def test_real_pipeline_interrupted_run_equals_uninterrupted(tmp_path, tiny_pipe, synthetic_inputs, cli_run):
    """Kill after clip 0, resume: bit-identical to the uninterrupted CLI run (tiny model, CPU)."""
    image, _, clips = synthetic_inputs
    settings = LongVideoSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=2, model="tiny",
                                 dtype="float32")
    sampler = LongVideoSampler(settings, pipe=tiny_pipe, progress=False)
    with pytest.raises(Crash):
        sampler(tmp_path / "run", image, clips, on_clip_done=crash_after(0))
    resumed = sampler(tmp_path / "run", image, clips)
    assert resumed.generated == [1]
    assert run_files(tmp_path / "run") == run_files(cli_run[0])
    video = read_video(resumed.video_path)
    assert video.shape == (stitched_length(2, FRAMES), HEIGHT, WIDTH, 3)


@pytest.mark.skipif(not RIDE_HORSE.is_dir(), reason="upstream example shared/examples/ride_horse not present")
def test_ride_horse_validates_and_runs_two_clips(tmp_path, tiny_pipe):
    image, cond = RIDE_HORSE / "first.png", RIDE_HORSE / "cond.json"
    full = validate_inputs(image, cond)  # released settings: 81 frames at 352x640
    assert len(full.clips) == 10 and any("832x480 resized to 640x352" in n for n in full.notes)

    inputs = validate_inputs(image, cond, num_frames=9, height=64, width=112, num_clips=2)
    settings = LongVideoSettings(num_frames=9, height=64, width=112, steps=1, model="tiny", dtype="float32")
    result = LongVideoSampler(settings, pipe=tiny_pipe, progress=False)(tmp_path / "run", inputs.image, inputs.clips)
    assert result.generated == [0, 1]
    assert count_frames(result.video_path) == stitched_length(2, 9) == 17


def test_shell_entrypoint_reports_bad_inputs(tmp_path):
    result = subprocess.run(["bash", str(REPO / "sample_longvideo.sh"), "--preset", "tiny", "--cond",
                             str(tmp_path / "missing.json"), "--image", str(tmp_path / "missing.png")],
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": f"{Path(__import__('sys').executable).parent}:/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "2 problem(s)" in result.stderr and "missing.json" in result.stderr and "missing.png" in result.stderr
