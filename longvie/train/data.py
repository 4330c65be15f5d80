"""Training data: clip records from a metadata file, frames at the training size, sample order.

Metadata is a JSON array (or ``{"clips": [...]}``) or a CSV file with a header; one row per clip::

    [{"video": "videos/ride.mp4", "start": 80, "depth": "controls/ride/depth_01.mp4",
      "track": "controls/ride/track_01.mp4", "text": "A man rides a horse ..."}, ...]

* ``video``: the source RGB video; the clip is ``num_frames`` frames from frame ``start`` (default 0)
  of the video taken every ``frame_step``-th frame (default 1) — the timeline the controls were
  extracted on (``utils/prepare_controls.py --frame-step``). Clip i of prepare_controls starts at 80 i.
* ``depth``, ``track``: the clip's control videos (their first ``num_frames`` frames are used).
* ``text``: the clip's prompt.
* stage 3: history frames come from the source video, the frames up to and including the clip's
  first frame (as at inference, where the history is the previous clip's last frames and its last
  frame is the next clip's first frame, SPEC §4); a row may instead name a ``history`` video whose
  last frames are used.

Paths are relative to the metadata file's folder unless ``data.root`` is given. Every frame is
resized (short side) and centre-cropped to the training size (the upstream training rule).
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .. import LongVieError
from ..media.video_io import fit_frames, read_video
from .degradations import DegradationPlan, DegradationSettings, degrade_depth, sample_plan, sample_rng

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("video", "depth", "track", "text")


class DataError(LongVieError, ValueError):
    """A clip cannot be used (missing or unreadable file, too few frames, bad metadata row)."""


class SkippedClip(NamedTuple):
    """What a dataset yields for an unusable clip with ``skip_bad`` (picklable, so it crosses
    data-loader worker processes): the clip, and why it was skipped."""

    index: int
    description: str
    error: str


MAX_CONSECUTIVE_BAD = 50  # this many unusable clips in a row (or the whole dataset) stops training


def too_many_bad_clips(bad: list, dataset_size: int, limit: int = MAX_CONSECUTIVE_BAD) -> DataError | None:
    """The error to stop with when ``bad`` (consecutive :class:`SkippedClip` s) is the whole dataset
    or ``limit`` long; None while training may go on."""
    if len(bad) < min(limit, max(dataset_size, 1)):
        return None
    what = "every clip" if len(bad) >= dataset_size else f"{len(bad)} clips in a row"
    examples = "\n".join(f"  - clip {b.index} ({b.description}): {b.error}" for b in bad[:3])
    return DataError(f"{what} of the training data failed to load, e.g.:\n{examples}\nFix these files or drop "
                     "their rows from the metadata (data.skip_bad only skips occasional bad clips)")


@dataclass
class ClipRecord:
    """One training clip (absolute paths)."""

    video: Path
    depth: Path
    track: Path
    text: str
    start: int = 0
    frame_step: int = 1
    history: Path | None = None

    def describe(self) -> str:
        return f"{self.video} [start {self.start}]"


def read_metadata(path, root=None) -> list[ClipRecord]:
    """Rows of a metadata JSON or CSV file as :class:`ClipRecord` s.

    Raises:
        DataError: the file is missing, unparsable, empty, or a row lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file not found: {path} — pass --metadata (build one from prepare_controls "
                        "outputs with `python -m longvie.train.metadata`)")
    root = Path(root) if root else path.parent
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
            rows = rows["clips"] if isinstance(rows, dict) else rows
    except (json.JSONDecodeError, KeyError, csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse metadata ({err}); expected a JSON array of "
                        f"objects with keys {REQUIRED_KEYS} or a CSV file with those columns") from err
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: no clips (expected a non-empty list of rows with keys {REQUIRED_KEYS})")

    def resolve(value) -> Path:
        value = Path(str(value))
        return value if value.is_absolute() else root / value

    records = []
    for number, row in enumerate(rows):
        missing = [k for k in REQUIRED_KEYS if not row.get(k) and row.get(k) != 0]
        if missing:
            raise DataError(f"{path}: row {number} lacks {missing} (has {sorted(row)})")
        try:
            start, step = int(row.get("start") or 0), int(row.get("frame_step") or 1)
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: row {number}: start/frame_step must be integers ({err})") from err
        if start < 0 or step < 1:
            raise DataError(f"{path}: row {number}: need start >= 0 and frame_step >= 1, got {start}, {step}")
        records.append(ClipRecord(video=resolve(row["video"]), depth=resolve(row["depth"]), track=resolve(row["track"]),
                                  text=str(row["text"]), start=start, frame_step=step,
                                  history=resolve(row["history"]) if row.get("history") else None))
    return records


def _read(path: Path, first: int, count: int, step: int, what: str) -> np.ndarray:
    """Frames first, first+1, ... (count of them) of ``path`` taken every ``step``-th frame."""
    try:
        frames = read_video(path, max_frames=(first + count - 1) * step + 1)[::step]
    except ValueError as err:
        raise DataError(f"{what}: {err}") from err
    if len(frames) < first + count:
        raise DataError(f"{what} {path}: has {len(frames)} frames (every {step}-th), the clip needs "
                        f"{first + count} (start {first} + {count} frames); drop the row or fix start")
    return frames[first:first + count]


def load_clip(record: ClipRecord, num_frames: int, height: int, width: int, history_frames: int = 0,
              resize: str = "crop") -> dict[str, np.ndarray]:
    """Read one clip at the training size.

    Returns uint8 arrays: ``video``, ``depth``, ``track`` (T, H, W, 3) and ``history``
    (up to ``history_frames`` frames ending at the clip's first frame, fewer if the video starts
    sooner; (0, H, W, 3) when none).

    Raises:
        DataError: a file is missing or unreadable, or has too few frames.
    """
    first = max(0, record.start - history_frames + 1) if history_frames and record.history is None else record.start
    source = _read(record.video, first, record.start - first + num_frames, record.frame_step, "video")
    video = source[record.start - first:]
    if record.history is not None and history_frames:
        history = read_video(record.history)[-history_frames:]
    else:
        history = source[: record.start - first + 1] if history_frames else source[:0]
    out = {"video": video, "history": history,
           "depth": _read(record.depth, 0, num_frames, 1, "depth video"),
           "track": _read(record.track, 0, num_frames, 1, "track video")}
    return {k: fit_frames(v, height, width, resize) if len(v) else np.zeros((0, height, width, 3), np.uint8)
            for k, v in out.items()}


def history_available(record: ClipRecord) -> int:
    """How many history frames a clip's source offers (frames up to and including its first frame)."""
    return record.start + 1 if record.history is None else 10**9  # a separate history video: up to its length


class ClipDataset(Dataset):
    """Clips at the training size with their degradation plan; items are addressed by (epoch, index).

    An item is a dict: ``index``, ``text``, ``video`` / ``depth`` / ``track`` uint8 (T, H, W, 3)
    tensors (the depth already degraded when the plan says so), ``first_frame`` (H, W, 3),
    ``history`` (n, H, W, 3) with n = ``plan.history_frames`` (n = 0 without history) and ``plan``.
    With ``skip_bad`` an unusable clip gives a :class:`SkippedClip` (logged) instead of raising.
    """

    def __init__(self, records: list[ClipRecord], num_frames: int, height: int, width: int,
                 settings: DegradationSettings, seed: int, resize: str = "crop", skip_bad: bool = False):
        if (num_frames - 1) % 4:
            raise ValueError(f"data.num_frames must be 4k+1 (81 for LongVie 2), got {num_frames}")
        if height % 16 or width % 16:
            raise ValueError(f"data.height/width must be multiples of 16 (352 x 640), got {height} x {width}")
        self.records, self.num_frames, self.height, self.width = records, num_frames, height, width
        self.settings, self.seed, self.resize, self.skip_bad = settings, seed, resize, skip_bad

    def __len__(self) -> int:
        return len(self.records)

    def plan(self, epoch: int, index: int) -> DegradationPlan:
        return sample_plan(sample_rng(self.seed, epoch, index), self.settings,
                           history_available(self.records[index]))

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        plan = self.plan(epoch, index)
        record = self.records[index]
        try:
            clip = load_clip(record, self.num_frames, self.height, self.width, plan.history_frames, self.resize)
        except DataError as err:
            if not self.skip_bad:
                raise
            logger.warning("skipping clip %d (%s): %s", index, record.describe(), err)
            return SkippedClip(index, record.describe(), str(err))
        item = {name: torch.from_numpy(np.ascontiguousarray(clip[name])) for name in ("video", "depth", "track")}
        item["depth"] = degrade_depth(item["depth"], plan.depth_ops)
        history = clip["history"]
        if plan.history_frames and len(history) < plan.history_frames:
            plan.history_frames = len(history) // 4 * 4  # a short separate history video
        item["history"] = torch.from_numpy(np.ascontiguousarray(history[len(history) - plan.history_frames:]))
        item.update(index=index, epoch=epoch, text=record.text, first_frame=item["video"][0], plan=plan)
        return item


class ShardedEpochSampler(Sampler):
    """A seeded permutation of the dataset per epoch, split over ranks, from a start offset.

    Yields ``(epoch, index)`` keys. Each rank gets ``ceil(N / world)`` items per epoch (the
    permutation wraps around to even them out, like ``DistributedSampler``). ``start`` skips the
    first items of the rank's share: the resume point.
    """

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0,
                 shuffle: bool = True):
        self.size, self.seed, self.epoch, self.rank, self.world = size, seed, epoch, rank, world
        self.start, self.shuffle = start, shuffle

    def per_rank(self) -> int:
        return math.ceil(self.size / self.world)

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        else:
            order = torch.arange(self.size)
        total = self.per_rank() * self.world
        order = order.repeat(math.ceil(total / self.size))[:total]
        for index in order[self.rank::self.world][self.start:].tolist():
            yield self.epoch, index


def collate_single(items: list):
    """Batch size 1 per process (SPEC §6): the item itself (a SkippedClip for a skipped clip)."""
    if len(items) != 1:
        raise ValueError("LongVie training uses batch size 1 per process; use gradient accumulation instead")
    return items[0]


class SampleStream:
    """An endless stream of samples for one rank, epoch after epoch, that knows its position.

    ``position`` = (epoch, offset) of the next item; a stream rebuilt from a saved position yields
    exactly the items the original would have yielded next.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1, position=(0, 0),
                 num_workers: int = 0, shuffle: bool = True):
        self.dataset, self.seed, self.rank, self.world = dataset, seed, rank, world
        self.epoch, self.offset = position
        self.num_workers, self.shuffle = num_workers, shuffle
        self._iterator = None

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def _loader(self):
        from torch.utils.data import DataLoader

        sampler = ShardedEpochSampler(len(self.dataset), self.seed, self.epoch, self.rank, self.world,
                                      start=self.offset, shuffle=self.shuffle)
        return iter(DataLoader(self.dataset, batch_size=1, sampler=sampler, collate_fn=collate_single,
                               num_workers=self.num_workers, persistent_workers=False))

    def __next__(self):
        while True:
            if self._iterator is None:
                self._iterator = self._loader()
            try:
                item = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            self.offset += 1
            return item

    def __iter__(self):
        return self
