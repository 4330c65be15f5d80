"""From a photo to a video on the tiny preset (CPU, offline): --depth -> controls -> python -m longvie.sample,
and --explore with its growing 3D memory, killed and resumed to the same video."""
from __future__ import annotations

import json

import numpy as np
import pytest

from longvie.camera.__main__ import main as camera_main
from longvie.camera.example import SYNTHETIC_FOV_DEG, write_synthetic_photo
from longvie.camera.memory import MemorySettings, WorldMemory, align_depth, read_ply
from longvie.media.video_io import count_frames, read_video

H, W, FRAMES = 64, 112, 9  # the tiny preset's clip


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("longvie_cache")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return write_synthetic_photo(tmp_path_factory.mktemp("synthetic_photo"), H, W)


@pytest.fixture
def tiny_env(cache, monkeypatch):
    monkeypatch.setenv("LONGVIE_CACHE", str(cache))  # tiny checkpoints written once for the module


def test_synthetic_photo_is_the_example_scene():
    from longvie.examples.synthetic import FIELD_OF_VIEW_DEG

    assert SYNTHETIC_FOV_DEG == FIELD_OF_VIEW_DEG


def test_depth_file_controls_run_in_the_tiny_sampler(photo, tiny_env, tmp_path):
    """--depth on the synthetic scene -> controls -> python -m longvie.sample --preset tiny (through --sample,
    which runs the sampler's command line on the written cond.json: what sample_longvideo.sh --camera does)."""
    from longvie.camera.paths import read_realestate10k

    image, depth = photo
    out = tmp_path / "camera"
    assert camera_main(["--image", str(image), "--depth", str(depth), "--fov", str(SYNTHETIC_FOV_DEG), "--path",
                        "dolly_in", "--clips", "2", "--preset", "tiny", "--prompt", "a walk across the plaza",
                        "--out", str(out), "--sample", "--steps", "1", "--no-progress"]) == 0
    for name in ("first.png", "depth_00.mp4", "depth_01.mp4", "track_00.mp4", "track_01.mp4", "cond.json",
                 "camera.json", "camera_poses.txt", "path_topdown.png", "preview.mp4", "preview.png"):
        assert (out / name).is_file(), name
    camera = json.loads((out / "camera.json").read_text())
    assert camera["frames"] == 17 and len(camera["frames_w2c"]) == 17 and camera["clip_ranges"] == [[0, 9], [8, 17]]
    assert camera["intrinsics"]["width"] == W and camera["depth"]["source"].startswith("file")
    assert np.allclose(read_realestate10k(out / "camera_poses.txt")[2], camera["frames_w2c"], atol=1e-9)
    assert [count_frames(out / f"{k}_{i:02d}.mp4") for k in ("depth", "track") for i in (0, 1)] == [FRAMES] * 4
    # the camera moves forward: the depth control darkens (nearer) over the path
    depth_videos = np.concatenate([read_video(out / "depth_00.mp4"), read_video(out / "depth_01.mp4")[1:]])
    assert depth_videos[-1].mean() < depth_videos[0].mean()
    # the sampler ran on the folder unchanged
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert manifest["config"]["cond"] == str((out / "cond.json").resolve())
    assert count_frames(out / "run" / "video.mp4") == 17
    # re-running the camera command on its own folder is allowed (and replaces it)
    assert camera_main(["--image", str(image), "--depth", str(depth), "--path", "static", "--clips", "1", "--preset",
                        "tiny", "--prompt", "still", "--out", str(out), "--no-progress"]) == 0
    assert not (out / "depth_01.mp4").exists() and (out / "run" / "video.mp4").is_file()


EXPLORE = ["--path", "pan_left", "--angle", "40", "--clips", "3", "--preset", "tiny", "--steps", "1",
           "--prompt", "the camera turns left across the plaza", "--no-progress"]


@pytest.fixture(scope="module")
def explored(photo, cache, tmp_path_factory):
    """An uninterrupted --explore run of three clips (command line, tiny preset)."""
    out = tmp_path_factory.mktemp("explore") / "walk"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LONGVIE_CACHE", str(cache))
        assert camera_main(["--image", str(photo[0]), "--explore", "--out", str(out), *EXPLORE]) == 0
    return out


def test_explore_grows_a_memory_and_writes_the_video(explored):
    from longvie.longvideo.sampler import load_run_frames

    assert load_run_frames(explored / "run").shape == (25, H, W, 3)
    memories = [WorldMemory.load(explored / "memory" / f"memory_{k:03d}.npz")[0] for k in range(4)]
    sizes = [len(m.cloud) for m in memories]
    assert sizes[0] == H * W and sizes[0] < sizes[1] < sizes[2] < sizes[3], sizes  # new regions come into view
    for earlier, later in zip(memories, memories[1:]):  # remembered points never move or change colour
        count = len(earlier.cloud)
        assert np.array_equal(later.cloud.positions[:count], earlier.cloud.positions)
        assert np.array_equal(later.cloud.colors[:count], earlier.cloud.colors)
    assert len(read_ply(explored / "memory.ply")) == sizes[-1]
    assert [len(m.fused) for m in memories] == [0, 1, 2, 3]
    cond = json.loads((explored / "cond.json").read_text())
    assert [c["depth"] for c in cond] == ["depth_00.mp4", "depth_01.mp4", "depth_02.mp4"]
    manifest = json.loads((explored / "run" / "manifest.json").read_text())
    recorded = manifest["clips"][1]["inputs"]["depth"]
    assert recorded["found_by"] == "control provider longvie.camera.explore"
    assert recorded["path"].endswith("depth_01.mp4")
    log = (explored / "run" / "run.log").read_text()
    assert "controls rendered from a memory of" in log and "ms per frame" in log
    assert (explored / "preview.mp4").is_file() and (explored / "preview.png").is_file()


def test_explore_killed_and_resumed_gives_the_same_video(explored, photo, tiny_env, tmp_path):
    """Killed after clip 0 (before the memory took it in), then the same call again: the same video and
    the same memory as the uninterrupted run."""
    from longvie.camera.explore import explore, sampling_config
    from longvie.camera.folder import PathSpec, settings_from_config
    from longvie.longvideo.sampler import load_run_frames

    config = sampling_config("tiny", steps=1)
    settings = settings_from_config(config, clips=3, prompts=("the camera turns left across the plaza",))
    spec = PathSpec(preset="pan_left", angle=40.0)

    def crash(index):
        if index == 0:
            raise Crash("simulated kill after clip 0")

    out = tmp_path / "walk"
    with pytest.raises(Crash):
        explore(photo[0], spec, settings, out, config, on_clip_done=crash, progress_bars=False, log=lambda _: None)
    assert not (out / "memory" / "memory_001.npz").exists()
    result = explore(photo[0], spec, settings, out, config, progress_bars=False, log=lambda _: None)
    assert np.array_equal(load_run_frames(out / "run"), load_run_frames(explored / "run"))
    for k in range(4):
        ours = WorldMemory.load(out / "memory" / f"memory_{k:03d}.npz")[0].cloud
        reference = WorldMemory.load(explored / "memory" / f"memory_{k:03d}.npz")[0].cloud
        assert np.array_equal(ours.positions, reference.positions) and np.array_equal(ours.colors, reference.colors)
    assert (out / "memory.ply").read_bytes() == (explored / "memory.ply").read_bytes()
    memory = [WorldMemory.load(explored / "memory" / f"memory_{k:03d}.npz")[0] for k in range(4)]
    assert result.points == [len(m.cloud) for m in memory]


def test_explore_refuses_placeholder_prompts_before_any_model(photo, tmp_path, capsys):
    assert camera_main(["--image", str(photo[0]), "--explore", "--path", "static", "--preset", "tiny",
                        "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--explore generates the video: give --prompt" in capsys.readouterr().err


def test_align_depth_recovers_scale_and_shift_despite_outliers():
    rng = np.random.default_rng(0)
    estimate = rng.uniform(1.0, 5.0, (40, 60))
    target = 2.5 * estimate + 0.7
    target[:4] = 100.0  # 10 % outliers (a wrong surface)
    mask = np.ones_like(estimate, dtype=bool)
    mask[-5:] = False
    scale, shift, used = align_depth(estimate, target, mask)
    assert scale == pytest.approx(2.5, rel=1e-6) and shift == pytest.approx(0.7, abs=1e-5)
    assert used < mask.sum()


def test_memory_stays_bounded():
    from longvie.camera.geometry import Intrinsics, cloud_from_depth
    from longvie.camera.paths import preset_path

    k = Intrinsics.from_fov(60.0, 80, 48)
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    memory = WorldMemory(cloud_from_depth(photo, np.full((48, 80), 5.0, np.float32), k, np.eye(4)))
    settings = MemorySettings(max_points=4500)
    path = preset_path("pan_left", np.arange(6), speed=0.0, angle_rate=15.0)
    stats = []
    for pose in path.w2c[1:]:  # turning left: every view adds the strip that came into view
        stats.append(memory.fuse_frame(photo, np.full((48, 80), 2.0, np.float32), pose, k, settings))
        assert stats[-1]["added"] > 0 and len(memory.cloud) <= settings.max_points
    assert any("thinned_from" in s for s in stats)
