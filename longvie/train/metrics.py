"""Training logs: one CSV row and TensorBoard scalars per logged step (main process only).

    OUT/logs/metrics.csv        step, epoch, loss, lr, step_seconds, samples_per_second, ...
    OUT/logs/tensorboard/       the same numbers (``tensorboard --logdir OUT/logs/tensorboard``)

On resume, rows after the resumed step (written by the interrupted run after its last
checkpoint) are dropped, so the CSV reads as one uninterrupted run.
"""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("step", "epoch", "loss", "lr", "step_seconds", "samples_per_second", "frames_per_second", "degraded",
           "history_frames", "skipped")


def read_metrics(path) -> list[dict]:
    """Rows of a metrics.csv as dicts of floats (step as int)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(handle)]


class MetricsLogger:
    """CSV + TensorBoard logger; a no-op on processes other than the main one."""

    def __init__(self, log_dir, enabled: bool = True, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = enabled
        self.csv_path = Path(log_dir) / "metrics.csv"
        self.writer = None
        if not enabled:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.csv_path) if self.csv_path.is_file() and resume_step else []
        with open(self.csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(row for row in rows if row["step"] <= resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional for the CSV log
                SummaryWriter = None
            if SummaryWriter is not None:
                purge = resume_step + 1 if resume_step else None  # drop events after the resumed step
                self.writer = SummaryWriter(str(Path(log_dir) / "tensorboard"), purge_step=purge)

    def log(self, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=COLUMNS).writerow({k: values.get(k, "") for k in COLUMNS})
        if self.writer is not None:
            for key in COLUMNS[2:]:
                if key in values:
                    self.writer.add_scalar(f"train/{key}", values[key], values["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
