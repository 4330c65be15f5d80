"""python -m longvie.benchmark --amdahl: measured parts -> expected time and speed-up on N ranks, serial fraction."""
from __future__ import annotations

import json

import pytest

from longvie.benchmark.amdahl import expected_times, serial_fraction

PARTS = {"host": {"read_controls": 1.0, "handoff": 0.5, "write_clip": 0.5},
         "encoders": {"image_embeds": 0.1, "image_latents": 3.0, "dense_video": 3.0, "dense_first": 3.0,
                      "sparse_video": 3.0, "sparse_first": 3.0, "history_latents": 0.4},
         "denoise": 240.0, "decode_untiled": 10.0, "decode_tiles": [2.0] * 6 + [1.0, 0.5], "decode_assembly": 0.25}


def test_expected_times_by_hand():
    one, two, eight = expected_times(PARTS, [1, 2, 8])
    host, encoders, tiles = 2.0, 15.5, 13.5
    assert one["seconds_untiled"] == pytest.approx(host + encoders + 240 + 10)
    assert one["seconds_tiled"] == pytest.approx(host + encoders + 240 + tiles + 0.25)
    # 2 ranks: encoders 3+3+3 | 3+3+0.4+0.1 -> 9; tiles 2,2,2,1 | 2,2,2,0.5 -> 7
    assert two["seconds_untiled"] == pytest.approx(host + 9 + 120 + 10)
    assert two["seconds_tiled"] == pytest.approx(host + 9 + 120 + 7 + 0.25)
    # 8 ranks: one encoder task each (the biggest, 3 s), one tile each (2 s)
    assert eight["seconds_untiled"] == pytest.approx(host + 3 + 30 + 10)
    assert eight["speed_up_tiled"] == pytest.approx(one["seconds_tiled"] / (host + 3 + 30 + 2 + 0.25))


def test_serial_fraction_inverts_amdahl():
    for s in (0.0, 0.02, 0.1, 0.5):
        speed_up = 1 / (s + (1 - s) / 8)
        assert serial_fraction(speed_up, 8) == pytest.approx(s)


def test_tiny_amdahl_run(tmp_path, capsys):
    from longvie.benchmark.__main__ import main

    out = tmp_path / "amdahl.json"
    assert main(["--amdahl", "--steps", "1", "--ranks", "2", "8", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "expected 8-GPU speed-up" in printed and "serial fraction" in printed
    payload = json.loads(out.read_text())
    parts, rows = payload["parts"], payload["predictions"]
    assert [r["ranks"] for r in rows] == [1, 2, 8]
    assert set(parts["encoders"]) == {"image_embeds", "image_latents", "dense_video", "dense_first", "sparse_video",
                                      "sparse_first", "history_latents"}
    assert all(v > 0 for v in parts["encoders"].values()) and parts["denoise"] > 0
    assert rows == expected_times(parts, [1, 2, 8])
    assert 1.0 <= rows[1]["speed_up_untiled"] <= rows[2]["speed_up_untiled"]
