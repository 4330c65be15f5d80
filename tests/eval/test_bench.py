"""The benchmark runner: two tiny runs generated, scored, aggregated; a killed run resumes."""
import json
import shutil

import pytest

from longvie.eval import bench
from longvie.longvideo.run_state import RunDir


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after the raise runs (BaseException so no handler swallows it)."""


@pytest.fixture
def bench_dir(tmp_path):
    from longvie.examples.synthetic import make_synthetic_example

    folder = tmp_path / "bench"
    for name, seed in (("a_plaza", 0), ("b_plaza", 1)):
        make_synthetic_example(folder / name, clips=2, height=32, width=48, frames_per_clip=9, seed=seed)
    return folder


@pytest.fixture
def tiny_cache(tmp_path, tiny_checkpoints, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny_checkpoints").symlink_to(tiny_checkpoints[0].parent)  # reuse the session's tiny weights
    monkeypatch.setenv("LONGVIE_CACHE", str(cache))
    return cache


ARGS = ["--preset", "tiny", "--height", "32", "--width", "48", "--num-frames", "9", "--steps", "1", "--fast",
        "--local-files"]


def test_runner_scores_two_tiny_runs_and_resumes_after_a_kill(bench_dir, tiny_cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real_save = RunDir.save_manifest

    def save_then_die(self, manifest):
        real_save(self, manifest)
        if self.root.name == "b_plaza" and any(c.get("status") == "done" for c in manifest["clips"]):
            raise _Killed  # killed right after clip 0 of the second video was committed

    monkeypatch.setattr(RunDir, "save_manifest", save_then_die)
    with pytest.raises(_Killed):
        bench.main([str(bench_dir), "--out", str(out), *ARGS])
    monkeypatch.setattr(RunDir, "save_manifest", real_save)
    first_eval = (out / "eval" / "a_plaza" / "metrics.json").stat().st_mtime_ns
    killed = json.loads((out / "runs" / "b_plaza" / "manifest.json").read_text())
    assert [c["status"] for c in killed["clips"]] == ["done", "pending"]
    assert not (out / "eval" / "b_plaza").exists()
    capsys.readouterr()

    assert bench.main([str(bench_dir), "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr()
    assert (out / "eval" / "a_plaza" / "metrics.json").stat().st_mtime_ns == first_eval  # not redone
    resumed = json.loads((out / "runs" / "b_plaza" / "manifest.json").read_text())
    assert resumed["clips"][0]["finished_at"] == killed["clips"][0]["finished_at"]  # clip 0 kept
    assert [c["status"] for c in resumed["clips"]] == ["done", "done"]
    assert "already evaluated" in printed.err

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["videos"]) == {"a_plaza", "b_plaza"}
    for name in ("a_plaza", "b_plaza"):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert metrics["clips"] == 2 and metrics["frames"] == 17 and 0 < metrics["video"]["ssim"] < 1
        assert metrics["video"]["lpips"] == "not computed: disabled"
    assert summary["mean"]["ssim"] == pytest.approx(
        (summary["videos"]["a_plaza"]["ssim"] + summary["videos"]["b_plaza"]["ssim"]) / 2)
    table = (out / "summary.md").read_text()
    assert "| a_plaza |" in table and "| b_plaza |" in table and "| all videos (VBench's mean) |" in table and "**Aggregation.**" in table and "LongVie 2 (paper" in table
    assert all((out / f"{p}.png").is_file() for p in ("quality", "drift", "boundaries", "colour"))
    assert printed.out.count("2 clip(s), 17 frames") == 2


def test_generated_from_scores_another_systems_videos(bench_dir, tmp_path, capsys):
    other = tmp_path / "upstream"
    other.mkdir()
    for name in ("a_plaza", "b_plaza"):  # "another system" that returns the ground truth
        shutil.copy(bench_dir / name / "reference.mp4", other / f"{name}.mp4")
    out = tmp_path / "scored"
    assert bench.main([str(bench_dir), "--out", str(out), "--generated-from", str(other), "--fast",
                       "--clip-frames", "9"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["ssim"] == pytest.approx(1.0) and summary["mean"]["psnr"] == "inf"
    assert not (out / "runs").exists()
    shutil.rmtree(other / "b_plaza.mp4", ignore_errors=True)
    (other / "b_plaza.mp4").unlink()
    assert bench.main([str(bench_dir), "--out", str(tmp_path / "again"), "--generated-from", str(other),
                       "--fast"]) == 2
    assert "no video for b_plaza" in capsys.readouterr().err


def test_make_bench_builds_the_folder_layout(bench_dir, tmp_path):
    from longvie.eval.make_bench import main as make_main

    videos = [bench_dir / "a_plaza" / "reference.mp4", bench_dir / "a_plaza" / "depth_00.mp4"]
    out = tmp_path / "made"
    assert make_main([*map(str, videos), "--out", str(out)]) == 0  # 17 and 9 frames: shorter than 81
    assert sorted(p.name for p in out.iterdir()) == []
    assert make_main([*map(str, videos), "--out", str(out), "--min-frames", "10"]) == 0
    entries = bench.find_entries(out)
    assert [e.name for e in entries] == ["reference"] and entries[0].needs_controls
    assert entries[0].reference.resolve() == videos[0].resolve()


def test_shards_split_the_videos_and_the_last_run_aggregates(bench_dir, tmp_path, capsys):
    other = tmp_path / "upstream"
    other.mkdir()
    for name in ("a_plaza", "b_plaza"):
        shutil.copy(bench_dir / name / "reference.mp4", other / f"{name}.mp4")
    out = tmp_path / "sharded"
    common = [str(bench_dir), "--out", str(out), "--generated-from", str(other), "--fast", "--clip-frames", "9"]
    assert bench.main([*common, "--shard", "1/2"]) == 0
    assert (out / "eval" / "b_plaza" / "metrics.json").is_file() and not (out / "eval" / "a_plaza").exists()
    assert not (out / "summary.md").exists() and "re-run without --shard" in capsys.readouterr().out
    assert bench.main([*common, "--shard", "0/2"]) == 0
    assert (out / "summary.md").is_file()  # the last shard finds every video evaluated
    assert bench.main([*common, "--shard", "2/2"]) == 2


def test_aggregate_as_vbench_means_and_infinite_psnr():
    def result(ssim, psnr, lpips, sc, frames):
        return {"video": {"ssim": ssim, "psnr": psnr, "lpips": lpips, "subject_consistency": sc,
                          "aesthetic_quality": sc}, "colour": {"drift": frames / 100},
                "boundaries": [{"flagged": True}], "boundaries_flagged": 1, "frames": frames}

    mean = bench.aggregate([("a", result(1.0, "inf", "not computed: needs x", 0.9, 81)),
                            ("b", result(0.5, 20.0, 0.25, 0.6, 241))])
    assert mean["ssim"] == 0.75 and mean["psnr"] == float("inf") and mean["lpips"] == 0.25
    # VBench's S.C. over videos: the sum over all frame pairs / their count (80 and 240 pairs)
    assert mean["subject_consistency"] == pytest.approx((0.9 * 80 + 0.6 * 240) / 320)
    assert mean["aesthetic_quality"] == pytest.approx(0.75)  # A.Q.: the mean of the videos' values
    assert mean["boundaries_flagged"] == 2 and mean["colour_drift"] == pytest.approx(1.61)
    assert bench.aggregate([("a", result(1.0, 10.0, "not computed: needs x", 0.5, 9))])["lpips"] == \
        "not computed: needs x"


def test_out_holding_the_users_files_is_refused(tmp_path, capsys):
    bench_dir = tmp_path / "bench"  # --out is checked first: the benchmark folder is not even read
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    assert bench.main([str(bench_dir), "--out", str(users), "--fast"]) == 2
    assert "not a LongVie benchmark output" in capsys.readouterr().err
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    assert bench.main([str(bench_dir), "--out", str(users / "notes.txt"), "--fast"]) == 2
    assert "is a file" in capsys.readouterr().err
