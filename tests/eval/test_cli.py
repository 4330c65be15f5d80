"""python -m longvie.eval end to end on the synthetic example: ordering, strict JSON, table, plots."""
import json

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


def _run(tmp_path, example, generated, name):
    out = tmp_path / name
    code = main(["--generated", str(generated), "--reference", str(example / "reference.mp4"),
                 "--prompts", str(example / "cond.json"), "--clip-frames", "9", "--out", str(out),
                 "--local-files", "--no-depth", "--name", name])
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
    assert "same:" in line and "SSIM 1.000" in line and "PSNR ∞" in line
    _, worse = _run(tmp_path, example, tmp_path / "degraded.mp4", "worse")

    assert same["clips"] == 3 and same["clip_ranges"] == [[0, 9], [8, 17], [16, 25]]
    assert same["video"]["ssim"] == pytest.approx(1.0) and same["per_clip"]["ssim"] == pytest.approx([1, 1, 1])
    assert same["video"]["psnr"] == "inf" and same["video"]["psnr_is_inf"] is True
    assert same["per_clip"]["psnr"] == ["inf"] * 3
    assert same["drift"]["ssim"] == 0 and same["drift"]["psnr"] == 0
    assert same["colour"]["shift_vs_reference"] == [0.0, 0.0, 0.0]
    assert same["control"]["tracks"]["mean_error_px"] == 0.0
    assert worse["video"]["ssim"] < 0.9 and worse["video"]["psnr"] < 35 and not worse["video"]["psnr_is_inf"]
    assert max(worse["colour"]["shift_vs_reference"]) > 0

    # offline without caches: learned metrics name what they need, nothing invented
    for key in ("lpips", "aesthetic_quality", "imaging_quality", "subject_consistency", "dynamic_degree"):
        assert same["video"][key].startswith("not computed: needs "), key
    assert "openai/clip-vit-large-patch14" in same["models"]["aesthetic_quality"]
    assert same["control"]["depth"] == "not computed: disabled"

    table = (out / "metrics.md").read_text()
    assert "| LongVie 2 (paper, LongVGenBench) | 58.47% | 69.77% | 0.529 | 0.295 | 91.05% | 92.45% | 23.37% | 82.95%" \
        in table
    assert "| same | n/c | n/c | 1.000 | n/c |" in table and "∞" in table
    for plot in ("quality", "drift", "boundaries", "colour"):
        assert (out / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_paths_are_clear_errors(tmp_path, capsys):
    assert main(["--generated", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "--generated" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert main(["--generated", str(tmp_path / "folder"), "--out", str(tmp_path / "o"), "--fast"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_prompts_and_control_depths_reach_the_backends(tmp_path, example):
    """cond.json's prompts go to the text metric, its depth videos to depth adherence (injected backends)."""
    from longvie.eval.backends import Backends
    from longvie.eval.evaluate import EvalSettings, evaluate_files

    seen_prompts, seen_clips = [], []

    class Text:
        model_id = "recording"

        def __call__(self, frames, prompt):
            seen_prompts.append(prompt)
            return 0.25

    def estimator(frames):
        seen_clips.append(frames.shape)
        return 255.0 - frames.mean(-1)

    backends = Backends(scorers={"overall_consistency": Text()}, depth_estimator=estimator, depth_model_id="fake")
    result = evaluate_files(example / "reference.mp4", tmp_path / "out", example / "reference.mp4",
                            example / "cond.json", backends, EvalSettings(clip_frames=9))
    cond = json.loads((example / "cond.json").read_text())
    assert seen_prompts == [c["text"] for c in cond]
    assert seen_clips == [(9, 32, 48, 3)] * 3
    assert result["video"]["overall_consistency"] == 0.25 and result["models"]["overall_consistency"] == "recording"
    depth = result["control"]["depth"]
    assert depth["model"] == "fake" and len(depth["error_per_clip"]) == 3
    assert all(0 <= e < 0.5 for e in depth["error_per_clip"])
    assert result["video"]["aesthetic_quality"] == "not computed: disabled"
