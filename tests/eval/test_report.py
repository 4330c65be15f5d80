"""metrics.json is strict JSON; the table follows the paper's columns and percent convention."""
import json
import math

import numpy as np

from longvie.eval.report import EXTRA_COLUMNS, PAPER_COLUMNS, json_safe, markdown_table, write_metrics_json


def test_json_safe_never_writes_bare_infinity_or_nan(tmp_path):
    data = {"video": {"psnr": math.inf, "ssim": np.float32(0.5), "x": float("nan")}, "curve": (1.0, -math.inf)}
    path = write_metrics_json(tmp_path / "m.json", data)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = json.loads(text)
    assert loaded["video"] == {"psnr": "inf", "ssim": 0.5, "x": None, "psnr_is_inf": True}
    assert loaded["curve"] == [1.0, "-inf"]
    assert json_safe({1: np.int64(3)}) == {"1": 3}


def test_table_columns_percentages_and_legend():
    video = {"aesthetic_quality": 0.6, "imaging_quality": "not computed: needs pyiqa", "ssim": 0.5, "lpips": 0.25,
             "subject_consistency": 0.9, "background_consistency": 0.95, "overall_consistency": 0.2,
             "dynamic_degree": 1.0, "psnr": math.inf, "overall_consistency_clip": 0.3}
    video["overall_consistency"] = "not computed: needs ViCLIP"
    table = markdown_table([("ours", video)])
    header = table.splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")][1:] == [h for _, h, _ in PAPER_COLUMNS + EXTRA_COLUMNS]
    assert EXTRA_COLUMNS[0][1] == "O.C.-CLIP (ours)"  # the stand-in never sits under the paper's O.C.
    assert "| ours | 60.00% | n/c | 0.500 | 0.250 | 90.00% | 95.00% | n/c | 100.00% | 30.00% | ∞ |" in table
    assert "- I.Q.: not computed: needs pyiqa" in table
    assert "ViCLIP" in table and "not comparable to the paper" in table
