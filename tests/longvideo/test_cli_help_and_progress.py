"""`--help` shows each default once; long condition lists are validated from container headers
with a progress bar (issue 11, item 8)."""
from __future__ import annotations

import json
import re

import numpy as np

from longvie.longvideo.cli import build_parser
from longvie.longvideo.validation import PROGRESS_MIN_CLIPS, validate_inputs
from longvie.media.video_io import write_video


def test_help_shows_each_default_once():
    text = build_parser().format_help()
    assert "(default:" not in text  # argparse's automatic defaults would repeat the hand-written ones
    options = re.split(r"\n  (?=-)", text[text.index("options:"):])
    entries = {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in options[1:]}
    for flag, default in (("--steps", "[50]"), ("--cfg", "[5.0]"), ("--shift", "[5.0]"), ("--height", "[352]"),
                          ("--width", "[640]"), ("--num-frames", "[81]"), ("--seed", "[0]")):
        assert entries[flag].count(default) == 1 and text.count(default) >= 1, (flag, entries[flag])
    assert all(entry.count("[") <= 2 for entry in entries.values())


def test_long_lists_read_headers_and_show_progress(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for kind in ("depth", "track"):
        write_video(tmp_path / f"{kind}.mp4", rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8))
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "first.png")
    clips = PROGRESS_MIN_CLIPS + 5
    (tmp_path / "cond.json").write_text(json.dumps([{"text": f"clip {i}", "depth": "depth.mp4",
                                                     "track": "track.mp4"} for i in range(clips)]))

    def no_decoding(*args, **kwargs):
        raise AssertionError("validation decoded frames; the container header has the counts")

    monkeypatch.setattr("longvie.media.video_io.read_video", no_decoding)
    monkeypatch.setattr("longvie.longvideo.validation.PROGRESS_DELAY_S", 0)  # the bar waits 1 s otherwise
    inputs = validate_inputs(tmp_path / "first.png", tmp_path / "cond.json", num_frames=9, height=32, width=48)
    assert len(inputs.clips) == clips
    assert "checking control videos" in capsys.readouterr().err
    validate_inputs(tmp_path / "first.png", tmp_path / "cond.json", num_frames=9, height=32, width=48,
                    progress=False)
    assert "checking control videos" not in capsys.readouterr().err
