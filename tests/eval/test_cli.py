"""python -m longvie.eval end to end on the synthetic example: ordering, strict JSON, table, plots; the
frame rate read from files, a shorter reference, trailing frames, --out guarded, extra sections."""
import json
import sys
import types

import numpy as np
import pytest

from longvie.eval.cli import main
from longvie.media.video_io import read_video, write_video


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from longvie.examples.synthetic import make_synthetic_example

    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic_example(folder, clips=3, height=32, width=48, frames_per_clip=9)
    return folder


def _strict_json(path):
    def reject(name):
        raise AssertionError(f"{path} holds the non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=reject)


def _run(tmp_path, example, generated, name, *extra):
    out = tmp_path / name
    code = main(["--generated", str(generated), "--reference", str(example / "reference.mp4"),
                 "--prompts", str(example / "cond.json"), "--clip-frames", "9", "--out", str(out),
                 "--local-files", "--no-depth", "--name", name, *extra])
    assert code == 0
    return out, _strict_json(out / "metrics.json")


def test_reference_against_itself_and_a_degraded_copy(tmp_path, example, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no_torch_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = read_video(example / "reference.mp4")
    import cv2

    degraded = np.stack([np.clip(cv2.GaussianBlur(f, (0, 0), 1.2).astype(int) + 15, 0, 255) for f in reference])
    write_video(tmp_path / "degraded.mp4", degraded.astype(np.uint8))

    out, same = _run(tmp_path, example, example / "reference.mp4", "same")
    line = capsys.readouterr().out
    assert "same:" in line and "SSIM 1.000" in line and "PSNR ∞" in line and "WARNING" not in line
    _, worse = _run(tmp_path, example, tmp_path / "degraded.mp4", "worse")

    assert same["clips"] == 3 and same["clip_ranges"] == [[0, 9], [8, 17], [16, 25]] and same["partial_clips"] == []
    assert same["fps"] == 16.0 and same["fps_source"] == "file"
    assert same["reference_frames"] == same["compared_frames"] == 25 and same["warnings"] == []
    assert same["video"]["ssim"] == pytest.approx(1.0) and same["per_clip"]["ssim"] == pytest.approx([1, 1, 1])
    assert same["video"]["psnr"] == "inf" and same["video"]["psnr_is_inf"] is True
    assert same["per_clip"]["psnr"] == ["inf"] * 3
    assert same["drift"]["ssim"] == 0 and same["drift"]["psnr"] == 0  # finite: PSNR capped for drift
    assert same["colour"]["shift_vs_reference"] == [0.0, 0.0, 0.0]
    # the tiny scene moves fast (a third of the view per frame): the boundary regions may not match
    assert (same["colour"]["drift"] is None or same["colour"]["drift"] < 1) and same["boundaries_flagged"] == 0
    assert all("colour_jump" in b for b in same["boundaries"])
    assert same["control"]["tracks"]["mean_error_px"] == 0.0
    assert worse["video"]["ssim"] < 0.9 and worse["video"]["psnr"] < 35 and not worse["video"]["psnr_is_inf"]
    assert max(worse["colour"]["shift_vs_reference"]) > 0

    # offline without caches: learned metrics name what they need, nothing invented
    for key in ("lpips", "aesthetic_quality", "imaging_quality", "subject_consistency", "dynamic_degree",
                "overall_consistency", "overall_consistency_clip"):
        assert same["video"][key].startswith("not computed: needs "), key
    assert "ViCLIP" in same["video"]["overall_consistency"]
    assert "openai/clip-vit-large-patch14" in same["models"]["aesthetic_quality"]
    assert same["control"]["depth"] == "not computed: disabled"
    assert "whole-video values" in same["aggregation"]["paper_row"]

    report = (out / "metrics.md").read_text()
    assert "| LongVie 2 (paper, LongVGenBench) | 58.47% | 69.77% | 0.529 | 0.295 | 91.05% | 92.45% | 23.37% | 82.95%" \
        in report
    assert "| same | n/c | n/c | 1.000 | n/c |" in report and "∞" in report
    assert "**Aggregation.**" in report and "## Per clip (ours)" in report and "colour_jump" in report
    for plot in ("quality", "drift", "boundaries", "colour"):
        assert (out / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _run(tmp_path, example, example / "reference.mp4", "same")[1]["video"]["ssim"] == pytest.approx(1.0)


def test_bad_paths_are_clear_errors(tmp_path, capsys):
    assert main(["--generated", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "--generated" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert main(["--generated", str(tmp_path / "folder"), "--out", str(tmp_path / "o"), "--fast"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_out_on_a_file_or_a_users_folder_is_refused_before_any_work(tmp_path, example, capsys, monkeypatch):
    from longvie.eval import backends

    def no_work(*args, **kwargs):
        raise AssertionError("models were loaded before --out was checked")

    monkeypatch.setattr(backends, "load_backends", no_work)
    target = tmp_path / "report.md"
    target.write_text("mine")
    args = ["--generated", str(example / "reference.mp4"), "--fast", "--out"]
    assert main([*args, str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err and str(target) in err and "Traceback" not in err
    assert target.read_text() == "mine"

    users = tmp_path / "users"
    (users / "clips").mkdir(parents=True)
    (users / "video.mp4").write_bytes(b"user data")
    assert main([*args, str(users)]) == 2
    assert "not a LongVie evaluation report" in capsys.readouterr().err
    assert sorted(p.name for p in users.iterdir()) == ["clips", "video.mp4"]


def test_shorter_reference_is_a_warning_and_states_the_frames_compared(tmp_path, example, capsys):
    short = tmp_path / "short.mp4"
    write_video(short, read_video(example / "reference.mp4")[:12])
    out = tmp_path / "short_eval"
    assert main(["--generated", str(example / "reference.mp4"), "--reference", str(short), "--clip-frames", "9",
                 "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: reference shorter: 12 of 25 frames compared" in printed.splitlines()[0]
    result = _strict_json(out / "metrics.json")
    assert result["reference_frames"] == 12 and result["compared_frames"] == 12
    assert result["per_clip_compared_frames"] == [9, 4, 0]
    ssim = result["per_clip"]["ssim"]
    assert ssim[2] is None and ssim[0] > 0.95 and ssim[1] > 0.95  # the re-encoded first 12 frames
    from longvie.eval.quality import ssim_per_frame

    per_frame = ssim_per_frame(read_video(example / "reference.mp4")[:12], read_video(short))
    assert result["video"]["ssim"] == pytest.approx(per_frame.mean())  # over the 12 compared frames only
    assert ssim[1] == pytest.approx(per_frame[8:12].mean())
    assert any("only 12 frames" in w for w in result["warnings"])
    assert result["control"]["tracks"]["clips_compared"] == 1
    assert "**Warning:** the reference has only 12 frames" in (out / "metrics.md").read_text()


class _RecordingDD:
    """A dynamic-degree scorer stand-in that records the frame rate it was given."""

    model_id = "recording"

    def __init__(self):
        from longvie.eval.vbench_metrics import DynamicDegreeScorer

        class Flow:
            def __call__(self, a, b, num_flow_updates=20):
                import torch

                return [torch.zeros(1, 2, *a.shape[-2:])]

            def to(self, device):
                return self

            def eval(self):
                return self

        self.inner = DynamicDegreeScorer(Flow(), min_side=0)
        self.fps = []

    def score(self, frames, ranges, prompts, fps):
        self.fps.append(fps)
        return self.inner.score(frames, ranges, prompts, fps)


@pytest.mark.parametrize("fps, interval", [(8, 1), (16, 2), (24, 3)])
def test_frame_rate_is_read_from_the_file(tmp_path, example, fps, interval):
    from longvie.eval.backends import Backends
    from longvie.eval.evaluate import EvalSettings, evaluate_files

    video = tmp_path / f"at_{fps}.mp4"
    write_video(video, read_video(example / "reference.mp4")[:17], fps=fps)
    scorer = _RecordingDD()
    result = evaluate_files(video, tmp_path / "out", backends=Backends(scorers={"dynamic_degree": scorer}),
                            settings=EvalSettings(clip_frames=9))
    assert scorer.fps == [pytest.approx(fps)] and result["fps_source"] == "file"
    assert result["details"]["dynamic_degree"]["frame_interval"] == interval
    assert result["details"]["dynamic_degree"]["sampled_frames"] == len(range(0, 17, interval))
    assert result["video"]["dynamic_degree"] == 0.0  # no motion: static


def test_trailing_frames_are_a_last_shorter_clip(tmp_path, example):
    from longvie.eval.backends import Backends
    from longvie.eval.evaluate import EvalSettings, evaluate_files

    video = tmp_path / "trailing.mp4"
    write_video(video, read_video(example / "reference.mp4")[:21])  # 2 clips of 9 (17 frames) + 4 frames
    result = evaluate_files(video, tmp_path / "out", example / "reference.mp4",
                            backends=Backends(scorers={"dynamic_degree": _RecordingDD()}),
                            settings=EvalSettings(clip_frames=9))
    assert result["clip_ranges"] == [[0, 9], [8, 17], [16, 21]] and result["partial_clips"] == [2]
    assert len(result["per_clip"]["ssim"]) == 3 and len(result["per_clip"]["dynamic_degree"]) == 3
    assert any("scored as a last, shorter clip" in w for w in result["warnings"])
    assert len(result["boundaries"]) == 2
    assert "(partial)" in (tmp_path / "out" / "metrics.md").read_text()


def test_prompts_and_control_depths_reach_the_backends(tmp_path, example):
    """cond.json's prompts go to the text metric, its depth videos to depth adherence (injected backends)."""
    from longvie.eval.backends import Backends
    from longvie.eval.evaluate import EvalSettings, evaluate_files

    seen_prompts, seen_clips = [], []

    class Text:
        model_id = "recording"

        def score(self, frames, ranges, prompts, fps):
            seen_prompts.extend(prompts)
            return {"video": 0.25, "per_clip": [0.25] * len(ranges)}

    def estimator(frames):
        seen_clips.append(frames.shape)
        return 255.0 - frames.mean(-1)

    backends = Backends(scorers={"overall_consistency_clip": Text()}, depth_estimator=estimator,
                        depth_model_id="fake")
    result = evaluate_files(example / "reference.mp4", tmp_path / "out", example / "reference.mp4",
                            example / "cond.json", backends, EvalSettings(clip_frames=9))
    cond = json.loads((example / "cond.json").read_text())
    assert seen_prompts == [c["text"] for c in cond]
    assert seen_clips == [(9, 32, 48, 3)] * 3
    assert result["video"]["overall_consistency_clip"] == 0.25
    assert result["models"]["overall_consistency_clip"] == "recording"
    assert result["video"]["overall_consistency"] == "not computed: disabled"
    depth = result["control"]["depth"]
    assert depth["model"] == "fake" and len(depth["error_per_clip"]) == 3
    assert all(0 <= e < 0.5 for e in depth["error_per_clip"])
    assert result["video"]["aesthetic_quality"] == "not computed: disabled"


def test_an_extra_section_is_computed_and_reported(tmp_path, example, monkeypatch, capsys):
    """The hook a camera-adherence module plugs into (longvie.eval.sections)."""
    from longvie.eval import sections

    module = types.ModuleType("fake_section")
    module.KEY = "fake"
    module.compute = lambda ctx: {"frames": len(ctx.video.frames), "cond": str(ctx.video.cond_path),
                                  "fps": ctx.fps, "clips": len(ctx.ranges)}
    module.markdown = lambda value: f"## Fake section\n\n{value['frames']} frames\n"
    module.summary = lambda value: f"fake {value['clips']}"
    monkeypatch.setitem(sys.modules, "fake_section", module)
    monkeypatch.setattr(sections, "SECTION_MODULES", ("fake_section",))
    out = tmp_path / "with_section"
    assert main(["--generated", str(example / "reference.mp4"), "--prompts", str(example / "cond.json"),
                 "--clip-frames", "9", "--fast", "--out", str(out)]) == 0
    result = _strict_json(out / "metrics.json")
    assert result["fake"] == {"frames": 25, "cond": str(example / "cond.json"), "fps": 16.0, "clips": 3}
    assert result["sections"] == ["fake"]
    assert "## Fake section\n\n25 frames" in (out / "metrics.md").read_text()
    assert "| fake 3" in capsys.readouterr().out
