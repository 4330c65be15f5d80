"""Training data: metadata, clip reading (sizes, history, errors), sample order and resume."""
import csv
import json
import logging

import numpy as np
import pytest
import torch

from longvie.media.video_io import write_video
from longvie.train.data import (
    ClipDataset,
    ClipRecord,
    DataError,
    SampleStream,
    ShardedEpochSampler,
    SkippedClip,
    load_clip,
    read_metadata,
)
from longvie.train.degradations import DegradationSettings
from longvie.train.metadata import build_metadata, rows_from_conditions


def grey_video(path, frames: int, height: int = 32, width: int = 48, step: int = 8):
    """Frame t is flat grey 8 t (so a decoded frame tells its index)."""
    data = np.stack([np.full((height, width, 3), step * t, np.uint8) for t in range(frames)])
    write_video(path, data, crf=0)
    return path


def frame_index(frame) -> int:
    return int(round(float(np.asarray(frame, dtype=np.float32).mean()) / 8))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    grey_video(root / "long.mp4", 25, 40, 80)  # 40x80: resized + centre-cropped to 32x48
    grey_video(root / "depth.mp4", 9)
    grey_video(root / "track.mp4", 9)
    grey_video(root / "short.mp4", 5)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_read_metadata_json_and_csv_with_relative_paths(videos, tmp_path):
    rows = [{"video": "long.mp4", "start": 8, "depth": "depth.mp4", "track": "track.mp4", "text": "a"},
            {"video": str(videos / "long.mp4"), "depth": "depth.mp4", "track": "track.mp4", "text": "b"}]
    records = read_metadata(write_json(videos / "meta.json", rows))
    assert records[0].video == videos / "long.mp4" and records[0].start == 8 and records[0].frame_step == 1
    assert records[1].start == 0 and records[1].text == "b"
    with open(tmp_path / "meta.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "start", "depth", "track", "text"])
        writer.writeheader()
        writer.writerow(rows[0])
    csv_records = read_metadata(tmp_path / "meta.csv", root=videos)
    assert csv_records[0] == records[0]
    wrapped = read_metadata(write_json(tmp_path / "wrapped.json", {"clips": rows}), root=videos)
    assert wrapped == records


@pytest.mark.parametrize("content, message", [
    ([{"video": "v.mp4", "depth": "d.mp4", "text": "t"}], "lacks \\['track'\\]"),
    ([], "no clips"),
    ("{not json", "cannot parse"),
    ([{"video": "v", "depth": "d", "track": "t", "text": "x", "start": -1}], "start >= 0"),
])
def test_read_metadata_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError, match=message):
        read_metadata(path)
    with pytest.raises(DataError, match="not found"):
        read_metadata(tmp_path / "missing.json")


def test_load_clip_frames_size_and_history(videos):
    record = ClipRecord(videos / "long.mp4", videos / "depth.mp4", videos / "track.mp4", "t", start=8)
    clip = load_clip(record, 9, 32, 48, history_frames=8)
    assert clip["video"].shape == (9, 32, 48, 3) and clip["depth"].shape == (9, 32, 48, 3)
    assert [frame_index(f) for f in clip["video"]] == list(range(8, 17))
    # History: the 8 frames ending at the clip's first frame (as at inference, SPEC §4).
    assert [frame_index(f) for f in clip["history"]] == list(range(1, 9))
    # At the start of the video there are fewer frames before the clip.
    early = load_clip(ClipRecord(record.video, record.depth, record.track, "t", start=2), 9, 32, 48, 16)
    assert [frame_index(f) for f in early["history"]] == [0, 1, 2]
    assert load_clip(record, 9, 32, 48)["history"].shape == (0, 32, 48, 3)
    stepped = load_clip(ClipRecord(record.video, record.depth, record.track, "t", start=1, frame_step=2), 9, 32, 48)
    assert [frame_index(f) for f in stepped["video"]] == list(range(2, 20, 2))


def test_load_clip_errors_name_the_file_and_the_fix(videos):
    short = ClipRecord(videos / "short.mp4", videos / "depth.mp4", videos / "track.mp4", "t")
    with pytest.raises(DataError, match=r"short.mp4: has 5 frames .* needs 9"):
        load_clip(short, 9, 32, 48)
    broken = ClipRecord(videos / "broken.mp4", videos / "depth.mp4", videos / "track.mp4", "t")
    with pytest.raises(DataError, match="cannot read video .*broken.mp4"):
        load_clip(broken, 9, 32, 48)
    late = ClipRecord(videos / "long.mp4", videos / "depth.mp4", videos / "track.mp4", "t", start=20)
    with pytest.raises(DataError, match="start 20"):
        load_clip(late, 9, 32, 48)
    missing = ClipRecord(videos / "long.mp4", videos / "nope.mp4", videos / "track.mp4", "t")
    with pytest.raises(DataError, match="nope.mp4"):
        load_clip(missing, 9, 32, 48)


def test_dataset_items_and_skip_bad(videos, caplog):
    good = ClipRecord(videos / "long.mp4", videos / "depth.mp4", videos / "track.mp4", "good", start=8)
    bad = ClipRecord(videos / "short.mp4", videos / "depth.mp4", videos / "track.mp4", "bad")
    settings = DegradationSettings(history_max_frames=16, history_none_p=0.0)
    dataset = ClipDataset([good, bad], 9, 32, 48, settings, seed=0, skip_bad=True)
    item = dataset[(0, 0)]
    assert item["text"] == "good" and item["video"].dtype == torch.uint8
    assert item["history"].shape[0] == item["plan"].history_frames in (4, 8)
    assert torch.equal(item["history"][-1], item["first_frame"])
    with caplog.at_level(logging.WARNING):
        skipped = dataset[(0, 1)]
        assert isinstance(skipped, SkippedClip) and skipped.index == 1 and "short.mp4" in skipped.description
    assert "skipping clip 1" in caplog.text
    strict = ClipDataset([good, bad], 9, 32, 48, settings, seed=0)
    with pytest.raises(DataError):
        strict[(0, 1)]
    with pytest.raises(ValueError, match="4k\\+1"):
        ClipDataset([good], 8, 32, 48, settings, seed=0)


def test_sampler_shards_cover_every_clip_and_resume():
    shards = [list(ShardedEpochSampler(10, seed=1, epoch=3, rank=r, world=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # ceil(10 / 3), wrapped
    assert {i for s in shards for _, i in s} == set(range(10))
    assert all(e == 3 for s in shards for e, _ in s)
    assert list(ShardedEpochSampler(10, 1, 3, 1, 3, start=2)) == shards[1][2:]
    assert [i for _, i in ShardedEpochSampler(10, 1, 4)] != [i for _, i in ShardedEpochSampler(10, 1, 3)]


class IndexDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, key):
        return key


def test_sample_stream_resumes_from_its_position():
    stream = SampleStream(IndexDataset(), seed=0, rank=0, world=1)
    first = [next(stream) for _ in range(7)]  # crosses into epoch 1
    assert [e for e, _ in first] == [0] * 5 + [1] * 2 and stream.position == (1, 2)
    rest = [next(stream) for _ in range(6)]
    resumed = SampleStream(IndexDataset(), seed=0, position=(1, 2))
    assert [next(resumed) for _ in range(6)] == rest


def test_metadata_from_prepare_controls_output(tmp_path):
    videos, controls = tmp_path / "videos", tmp_path / "controls"
    (controls / "ride").mkdir(parents=True)
    videos.mkdir()
    (videos / "ride.mp4").write_bytes(b"")
    (videos / "other.mp4").write_bytes(b"")
    cond = [{"text": "clip zero", "depth": "depth_00.mp4", "track": "track_00.mp4"},
            {"text": "clip one", "depth": "depth_01.mp4", "track": "track_01.mp4"}]
    (controls / "ride" / "cond.json").write_text(json.dumps(cond))
    rows = build_metadata(videos, controls, tmp_path / "data" / "metadata.json")
    assert [r["start"] for r in rows] == [0, 80]
    assert rows[1] == {"video": "../videos/ride.mp4", "start": 80, "frame_step": 1,
                       "depth": "../controls/ride/depth_01.mp4", "track": "../controls/ride/track_01.mp4",
                       "text": "clip one"}
    records = read_metadata(tmp_path / "data" / "metadata.json")
    assert records[1].depth == tmp_path / "data" / "../controls/ride/depth_01.mp4"
    (controls / "ride" / "cond.json").write_text(json.dumps([{**cond[0], "text": "PLACEHOLDER for clip 0"}]))
    with pytest.raises(ValueError, match="placeholder"):
        rows_from_conditions(videos / "ride.mp4", controls / "ride" / "cond.json", tmp_path)
