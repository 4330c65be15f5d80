"""Control-extraction commands never write into a folder of the user's files (issue 19, item 1):
exit 2, one message naming the folder, nothing written, the user's files unchanged; their own folders
(and their inputs inside them) are fine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `utils` is a top-level folder of the repository
    sys.path.insert(0, str(REPO))

from longvie.media.video_io import write_video  # noqa: E402
from utils import depth_npy2mp4, get_track, prepare_controls  # noqa: E402


def user_folder(root: Path) -> tuple[Path, dict]:
    folder = root / "holiday"
    (folder / "raw").mkdir(parents=True)
    (folder / "cond.json").write_text('[{"text": "my own", "depth": "d.mp4", "track": "t.mp4"}]')
    (folder / "raw" / "clip.mp4").write_bytes(b"my footage")
    return folder, snapshot(folder)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(err: str, folder: Path) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(folder) in lines[0] and "new or empty folder" in lines[0] and "cond.json" in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guard_inputs")
    rng = np.random.default_rng(0)
    write_video(root / "drive.mp4", rng.integers(0, 256, (81, 32, 48, 3), dtype=np.uint8))
    np.save(root / "disparity.npy", rng.random((81, 32, 48)).astype(np.float32) + 1)
    return root / "drive.mp4"


def test_prepare_controls_refuses_the_users_folder(drive, tmp_path, capsys):
    folder, before = user_folder(tmp_path)
    code = prepare_controls.main([str(drive), str(folder), "--depth-npy", str(drive.with_name("disparity.npy")),
                                  "--keep-size", "--grid", "4"])
    assert code == 2
    one_error(capsys.readouterr().err, folder)
    assert snapshot(folder) == before and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_prepare_controls_writes_beside_its_own_inputs_and_reruns_into_its_folder(drive, tmp_path, capsys):
    """The driving video and --depth-npy may lie in OUT (they are read, never written)."""
    out = tmp_path / "project"
    out.mkdir()
    for source in (drive, drive.with_name("disparity.npy")):
        (out / source.name).write_bytes(source.read_bytes())
    args = [str(out / "drive.mp4"), str(out), "--depth-npy", str(out / "disparity.npy"), "--keep-size", "--grid", "4"]
    assert prepare_controls.main(args) == 0
    assert (out / "cond.json").is_file() and (out / "longvie_output.json").is_file()
    assert (out / "drive.mp4").read_bytes() == drive.read_bytes()
    assert prepare_controls.main(args) == 0  # a re-run into its own folder
    capsys.readouterr()


def test_depth_npy2mp4_and_get_track_refuse_the_users_folder(drive, tmp_path, capsys):
    folder, before = user_folder(tmp_path)
    assert depth_npy2mp4.main([str(drive.with_name("disparity.npy")), str(folder)]) == 2
    one_error(capsys.readouterr().err, folder)
    assert get_track.main([str(drive), str(folder), "--keep-size", "--grid", "4"]) == 2
    one_error(capsys.readouterr().err, folder)
    assert snapshot(folder) == before

    # The get_depth.sh layout: OUT_DIR/depth.npy written first, then depth clips and tracks beside it.
    out = tmp_path / "controls"
    out.mkdir()
    (out / "depth.npy").write_bytes(drive.with_name("disparity.npy").read_bytes())
    assert depth_npy2mp4.main([str(out / "depth.npy"), str(out)]) == 0
    assert get_track.main([str(drive), str(out), "--depth", str(out / "depth.npy"), "--keep-size", "--grid", "4"]) == 0
    assert {"depth_00.mp4", "track_00.mp4", "depth.npy", "longvie_output.json"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()


def test_shell_extraction_scripts_refuse_before_writing(drive, tmp_path):
    """utils/get_depth.sh checks OUT_DIR before get_depth.py would write OUT_DIR/depth.npy (no model runs)."""
    folder, before = user_folder(tmp_path)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    for script in ("utils/get_depth.sh", "utils/get_track.sh"):
        result = subprocess.run(["bash", str(REPO / script), str(drive), str(folder)], capture_output=True, text=True,
                                timeout=120, env=env)
        assert result.returncode == 2, result.stderr
        one_error(result.stderr, folder)
    assert snapshot(folder) == before


def test_synthetic_example_and_bench_folders(tmp_path, capsys):
    from longvie.examples.synthetic import main as synthetic_main

    folder, before = user_folder(tmp_path)
    assert synthetic_main([str(folder), "--clips", "1", "--height", "16", "--width", "32",
                           "--frames-per-clip", "5"]) == 2
    one_error(capsys.readouterr().err, folder)
    bench = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_latent_cache.py"), "--out", str(folder)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bench.returncode == 2
    one_error(bench.stderr, folder)
    assert snapshot(folder) == before
