"""The utils/ command-line scripts: --help, and prepare_controls.py end to end without weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `utils` is a top-level folder of the repository
    sys.path.insert(0, str(REPO))

from longvie.media.video_io import load_image, read_video, write_video  # noqa: E402
from utils import prepare_controls  # noqa: E402

SCRIPTS = ["get_depth", "depth_npy2mp4", "get_track", "qwen_caption_refine", "prepare_controls"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_as_a_file(script):
    result = subprocess.run([sys.executable, f"utils/{script}.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_script_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "utils.prepare_controls", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--caption-model" in result.stdout


def panning_video(num_frames, height=48, width=64, seed=0):
    """A smooth random texture panning right by 1 px per frame: (T, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((height, width + num_frames)).astype(np.float32), (0, 0), 1.5)
    texture = (255 * (texture - texture.min()) / (texture.max() - texture.min())).astype(np.uint8)
    return np.stack([np.repeat(texture[:, t:t + width, None], 3, -1) for t in range(num_frames)])


def test_prepare_controls_weight_free(tmp_path, capsys):
    frames = panning_video(170)  # 1 + 80*2 + 9: two clips, 9 trailing frames dropped
    write_video(tmp_path / "drive.mp4", frames)
    disparity = np.broadcast_to(np.linspace(1.0, 5.0, 48, dtype=np.float32)[None, :, None], (170, 48, 64))
    np.save(tmp_path / "disparity.npy", disparity)  # bottom rows near
    out = tmp_path / "cond"

    code = prepare_controls.main([str(tmp_path / "drive.mp4"), str(out), "--depth-npy", str(tmp_path / "disparity.npy"),
                                  "--grid", "10", "--keep-size"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "last 9 frame(s)" in printed and "placeholders" in printed

    cond = json.loads((out / "cond.json").read_text())
    assert [(e["depth"], e["track"]) for e in cond] == [("depth_00.mp4", "track_00.mp4"), ("depth_01.mp4", "track_01.mp4")]
    assert all(e["text"].startswith("PLACEHOLDER") for e in cond)
    assert sorted(p.name for p in out.iterdir()) == ["cond.json", "depth_00.mp4", "depth_01.mp4", "first.png",
                                                    "longvie_output.json", "track_00.mp4", "track_01.mp4"]

    first = np.asarray(load_image(out / "first.png"))
    assert first.shape == (48, 64, 3)
    np.testing.assert_array_equal(first, read_video(tmp_path / "drive.mp4", max_frames=1)[0])

    depth = read_video(out / "depth_01.mp4")
    assert depth.shape == (81, 48, 64, 3)
    assert depth[0, -1, :, 0].mean() < 20 and depth[0, 0, :, 0].mean() > 235  # near (bottom) dark

    track = read_video(out / "track_00.mp4")
    assert track.shape == (81, 48, 64, 3)
    assert 0.2 < (track[0].max(-1) > 40).mean() < 0.9  # squares on black
    lit = track[0].max(-1) > 40
    top_blue, bottom_blue = track[0, :3, :, 2][lit[:3]].mean(), track[0, -8:, :, 2][lit[-8:]].mean()
    assert top_blue > 160 and bottom_blue < 40  # the farthest (top) points are blue, near ones not
    left_red, right_red = track[0, :, :10, 0][lit[:, :10]].mean(), track[0, :, -10:, 0][lit[:, -10:]].mean()
    assert left_red < 60 and right_red > 190  # red follows x


def test_prepare_controls_reports_short_and_missing_videos(tmp_path, capsys):
    write_video(tmp_path / "short.mp4", panning_video(40))
    assert prepare_controls.main([str(tmp_path / "short.mp4"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "short.mp4" in err and "40 frames" in err and "81" in err
    assert not (tmp_path / "out").exists()

    assert prepare_controls.main([str(tmp_path / "missing.mp4"), str(tmp_path / "out")]) == 1
    assert "missing.mp4" in capsys.readouterr().err


def test_prepare_controls_rejects_a_depth_npy_of_another_video(tmp_path, capsys):
    write_video(tmp_path / "drive.mp4", panning_video(81))
    np.save(tmp_path / "short.npy", np.ones((50, 48, 64), np.float32))
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--depth-npy", str(tmp_path / "short.npy")]
    assert prepare_controls.main(args) == 1
    assert "short.npy: 50 depth frames" in capsys.readouterr().err


def test_driving_video_odd_size_and_frame_step(monkeypatch):
    from longvie.controls import driving_video

    monkeypatch.setattr(driving_video, "read_video", lambda path: np.zeros((170, 33, 47, 3), np.uint8))
    messages = []
    frames = driving_video.load_driving_video("odd.mp4", frame_step=2, log=messages.append)
    assert frames.shape == (81, 32, 46, 3)  # 85 frames after the step, 4 dropped; even size
    assert any("odd side" in m for m in messages) and any("last 4 frame(s)" in m for m in messages)
    assert driving_video.load_driving_video("odd.mp4", 16, 24, log=messages.append).shape == (161, 16, 24, 3)
    with pytest.raises(ValueError, match="both --height and --width"):
        driving_video.load_driving_video("odd.mp4", height=16)
    with pytest.raises(ValueError, match="even"):
        driving_video.load_driving_video("odd.mp4", 15, 24)


def test_shell_wrappers(tmp_path):
    usage = subprocess.run(["bash", "utils/get_track.sh"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage:" in usage.stderr

    write_video(tmp_path / "drive.mp4", panning_video(81, 32, 48))
    result = subprocess.run(["bash", "utils/get_track.sh", str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--grid", "5",
                             "--keep-size"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert read_video(tmp_path / "out" / "track_00.mp4").shape == (81, 32, 48, 3)


def test_prepare_controls_keeps_placeholders_when_captioning_fails(tmp_path, capsys):
    write_video(tmp_path / "drive.mp4", panning_video(81, 32, 48))
    np.save(tmp_path / "d.npy", np.random.default_rng(0).random((81, 32, 48)).astype(np.float32))
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--depth-npy", str(tmp_path / "d.npy"), "--grid", "5",
            "--keep-size",
            "--caption-model", str(tmp_path / "no_such_model"), "--local-files"]
    assert prepare_controls.main(args) == 1
    assert "placeholder captions" in capsys.readouterr().err
    cond = json.loads((tmp_path / "out" / "cond.json").read_text())
    assert cond[0]["text"].startswith("PLACEHOLDER") and (tmp_path / "out" / cond[0]["track"]).is_file()


# ------------------------------------------------------------------ issue 10 / issue 11 item 6
def test_prepare_controls_default_size_marks_and_placeholders(tmp_path, capsys):
    """Default working size 832x480 and grid 50 (upstream's extraction scripts); placeholder prompts are marked."""
    from longvie.controls.captioning import PLACEHOLDER_PREFIX, is_placeholder_prompt

    write_video(tmp_path / "drive.mp4", panning_video(81, 48, 64))
    np.save(tmp_path / "d.npy", np.random.default_rng(0).random((81, 48, 64)).astype(np.float32))
    from longvie.controls.driving_video import working_size

    assert working_size(prepare_controls.parse_args(["v.mp4", "out"])) == (480, 832)
    assert working_size(prepare_controls.parse_args(["v.mp4", "out", "--keep-size"])) == (None, None)
    assert working_size(prepare_controls.parse_args(["v.mp4", "out", "--height", "64", "--width", "96"])) == (64, 96)
    assert prepare_controls.parse_args(["v.mp4", "out"]).grid == 50
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--depth-npy", str(tmp_path / "d.npy"),
            "--height", "48", "--width", "80", "--grid", "4"]
    assert prepare_controls.main(args) == 0
    assert read_video(tmp_path / "out" / "track_00.mp4", max_frames=1).shape == (1, 48, 80, 3)
    (entry,) = json.loads((tmp_path / "out" / "cond.json").read_text())
    assert entry["placeholder"] is True and entry["text"].startswith(PLACEHOLDER_PREFIX)
    assert is_placeholder_prompt(entry) and is_placeholder_prompt(entry["text"])
    assert is_placeholder_prompt({"text": "a real caption", "placeholder": True})
    assert not is_placeholder_prompt({"text": "A rider on a horse in the snow."})
    assert "--allow-placeholder-prompts" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_prepare_controls_failure_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """A failure late in the run (here: writing the track videos) leaves neither OUT nor a staging folder,
    and an existing OUT keeps its old files."""
    import longvie.controls.track_video as track_video

    write_video(tmp_path / "drive.mp4", panning_video(81, 32, 48))
    np.save(tmp_path / "d.npy", np.ones((81, 32, 48), np.float32))
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--depth-npy", str(tmp_path / "d.npy"),
            "--keep-size", "--grid", "5"]

    def broken(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(track_video, "write_track_clips", broken)
    assert prepare_controls.main(args) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "drive.mp4"]

    # An existing condition folder of ours keeps its old files when a re-run fails, and a re-run that
    # succeeds replaces them.
    out = tmp_path / "out"
    out.mkdir()
    (out / "longvie_output.json").write_text('{"kind": "controls"}')
    (out / "cond.json").write_text("[]")
    assert prepare_controls.main(args) == 1
    assert sorted(p.name for p in out.iterdir()) == ["cond.json", "longvie_output.json"]
    assert (out / "cond.json").read_text() == "[]"
    monkeypatch.undo()
    assert prepare_controls.main(args) == 0  # into the existing folder: files replaced
    assert json.loads((out / "cond.json").read_text())[0]["track"] == "track_00.mp4"

    (tmp_path / "file").write_text("x")
    assert prepare_controls.main([str(tmp_path / "drive.mp4"), str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_prepare_controls_offline_depth_fails_fast(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    write_video(tmp_path / "drive.mp4", panning_video(81, 32, 48))
    started = time.monotonic()
    assert prepare_controls.main([str(tmp_path / "drive.mp4"), str(tmp_path / "out"), "--keep-size"]) == 1
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "--depth-npy" in err and "--local-files" in err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
