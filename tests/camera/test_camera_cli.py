"""``python -m longvie.camera``: bad input gives one clear error before any model loads; folders of the
user are never written; the default depth model fails offline with a message naming --depth."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longvie.camera.__main__ import main

REPO = Path(__file__).resolve().parents[2]
H, W = 48, 80


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("camera_inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "photo.png")
    np.save(root / "depth.npy", rng.uniform(2.0, 9.0, (H, W)).astype(np.float32))
    return root


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    """Any attempt to load a model fails the test: bad input must be reported before that."""
    from longvie.camera import depth

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(depth.MetricDepthEstimator, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(depth.MetricDepthEstimator, "tiny", classmethod(refuse))


def run(args, capsys) -> tuple[int, str]:
    code = main(["--no-progress", *args])
    return code, capsys.readouterr().err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD_LINE = "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"


@pytest.mark.parametrize("case", ["image", "pose_line", "one_key", "key_times", "depth_aspect", "depth_negative",
                                  "depth_8bit_png", "behind_preset", "behind_with_depth", "prompt_count",
                                  "two_paths", "user_folder"])
def test_bad_input_is_one_clear_error_before_any_model(case, inputs, tmp_path, capsys):
    photo, depth = inputs / "photo.png", inputs / "depth.npy"
    base = ["--image", str(photo), "--out", str(tmp_path / "out")]
    if case == "image":
        args, expected = ["--image", str(write(tmp_path / "broken.png", "not a png")), "--path", "static",
                          "--out", str(tmp_path / "out")], "cannot read image"
    elif case == "pose_line":
        poses = write(tmp_path / "poses.txt", f"https://x\n{GOOD_LINE}\n{GOOD_LINE} 7\n")
        args, expected = [*base, "--poses", str(poses)], "line 3: 20 values, expected 19"
    elif case == "one_key":
        keys = write(tmp_path / "k.json", json.dumps([{"time": 0, "position": [0, 0, 0], "look_at": [0, 0, 1]}]))
        args, expected = [*base, "--keyframes", str(keys)], "a path needs at least two"
    elif case == "key_times":
        keys = write(tmp_path / "k.json", json.dumps([{"time": 2, "position": [0, 0, 0], "look_at": [0, 0, 1]},
                                                      {"time": 1, "position": [0, 0, 1], "look_at": [0, 0, 2]}]))
        args, expected = [*base, "--keyframes", str(keys)], "times must increase strictly"
    elif case == "depth_aspect":
        np.save(tmp_path / "square.npy", np.ones((40, 40), np.float32))
        args, expected = [*base, "--path", "static", "--depth", str(tmp_path / "square.npy")], "aspect"
    elif case == "depth_negative":
        bad = np.load(depth)
        bad[3, 4] = -1.0
        np.save(tmp_path / "negative.npy", bad)
        args = [*base, "--path", "static", "--depth", str(tmp_path / "negative.npy")]
        expected = "1 pixel(s) have depth <= 0"
    elif case == "depth_8bit_png":
        Image.fromarray(np.full((H, W), 9, np.uint8)).save(tmp_path / "d8.png")
        args, expected = [*base, "--path", "static", "--depth", str(tmp_path / "d8.png")], "must be 16-bit"
    elif case == "behind_preset":  # 300 degrees of pan in one clip: the camera turns its back on the photo
        args = [*base, "--path", "pan_left", "--angle", "60", "--clips", "1"]
        expected = "every point of the photo is behind"
    elif case == "behind_with_depth":  # 100 m/s forward through a scene at most 9 m deep
        args, expected = [*base, "--path", "dolly_in", "--speed", "100", "--depth", str(depth)], "behind the camera"
    elif case == "prompt_count":
        prompts = write(tmp_path / "prompts.txt", "one\ntwo\nthree\n")
        args = [*base, "--path", "static", "--clips", "2", "--prompt-file", str(prompts)]
        expected = "3 prompts for 2 clip(s)"
    elif case == "two_paths":
        args, expected = [*base, "--path", "static", "--keyframes", "k.json"], "give exactly one camera path"
    else:  # a folder of the user's files is never written into
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "holiday.jpg").write_bytes(b"mine")
        args = [*base, "--path", "static", "--depth", str(depth)]
        expected = "already holds files that are not a LongVie"
    code, err = run(args, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and expected in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    if case == "user_folder":
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["holiday.jpg"]
    else:
        assert not (tmp_path / "out").exists()


def test_missing_depth_model_names_depth_flag(inputs, tmp_path, capsys, monkeypatch):
    """The default (real) depth path, offline and not cached: one message that names --depth."""
    monkeypatch.undo()  # the real loader this time (nothing can be downloaded: HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run(["--image", str(inputs / "photo.png"), "--path", "dolly_in", "--out", str(tmp_path / "out"),
                     "--depth-model", "depth-anything/not-a-cached-model"], capsys)
    assert code == 2 and "--depth FILE" in err and "not in the Hugging Face cache" in err, err


def test_depth_png_in_millimetres_and_other_resolution(inputs, tmp_path):
    """A 16-bit PNG of half the photo's resolution (same aspect) is read in mm and resized (nearest)."""
    from longvie.camera.geometry import fit_depth, read_depth_file

    depth_mm = np.full((H // 2, W // 2), 2500, np.uint16)
    depth_mm[:, W // 4:] = 7000
    Image.fromarray(depth_mm).save(tmp_path / "depth.png")
    depth = read_depth_file(tmp_path / "depth.png")
    assert depth.dtype == np.float32 and set(np.unique(depth)) == {2.5, 7.0}
    fitted = fit_depth(depth, H, W, H, W)
    assert fitted.shape == (H, W) and set(np.unique(fitted)) == {2.5, 7.0}  # nearest: no invented depths
    assert (fitted[:, : W // 2 - 1] == 2.5).all() and (fitted[:, W // 2 + 1:] == 7.0).all()


def test_help_is_instant_and_lists_the_flags():
    result = subprocess.run([sys.executable, "-m", "longvie.camera", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0
    for flag in ("--image", "--path", "--speed", "--angle", "--poses", "--keyframes", "--clips", "--seconds",
                 "--prompt", "--config", "--preset", "--out", "--depth", "--fov", "--intrinsics", "--explore"):
        assert flag in result.stdout


def test_shell_entry_point_routes_camera(inputs, tmp_path):
    """bash sample_longvideo.sh --camera ... runs the camera command (here: its bad-input path)."""
    command = ["bash", str(REPO / "sample_longvideo.sh"), "--camera", "--image", str(tmp_path / "nope.png"),
               "--path", "static", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "--image" in result.stderr and "nope.png" in result.stderr
