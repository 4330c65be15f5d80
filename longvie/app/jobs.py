"""The app's job queue: jobs belong to a browser session and run in one background worker.

A job is submitted by a page and then lives on its own: it runs in the manager's worker thread
(one at a time: one GPU), not in the browser request that submitted it, so a reload or a closed tab
does not stop it; a page (the same browser after a reload, with the run id in its URL) finds it
again by id and follows its state. Only the session that submitted a job may cancel it or ask it to
stop after the current clip; the queue position of each waiting job is known to its page.

The state a page shows (status line, step, live preview, finished clips, the final event) is kept
on the :class:`Job`; every change bumps one version counter that followers wait on.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .engine import JobControl, JobEvent

__all__ = ["Job", "JobManager", "NotYours"]

logger = logging.getLogger("longvie.app")
ACTIVE = ("queued", "running")
KEEP_FINISHED = 200  # finished jobs kept in memory for pages that come back to them


class NotYours(PermissionError):
    """A request about a job from a session that does not own it."""


@dataclass
class Job:
    """One queued, running or finished job and what its page shows."""

    id: str  # the run folder's name for generation jobs
    kind: str  # "generate" | "resume" | "redo" | "extract" | "camera-preview" | "explore"
    owner: str | None  # longvie.app.access.owner_key of the submitting browser
    start: Callable[[JobControl], Iterator[JobEvent]] = field(repr=False)
    run_dir: Path | None = None
    on_discard: Callable[[], None] | None = field(default=None, repr=False)  # cancelled before it started
    state: str = "queued"  # queued | running | done | stopped | cancelled | error
    status: str = ""
    num_clips: int | None = None
    step: tuple[int, int, int] | None = None  # (clip, step, steps) of the last denoising step
    active_clip: int | None = None
    finished_clips: list[int] = field(default_factory=list)
    stages: dict = field(default_factory=dict)  # extraction: stage -> (done, total)
    preview: Any = None  # uint8 (H, W, 3) of the clip being denoised
    preview_step: tuple[int, int, int] | None = None
    preview_version: int = 0
    final: JobEvent | None = None
    control: JobControl = field(default_factory=JobControl, repr=False)
    submitted_at: float = field(default_factory=time.time)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class JobManager:
    """Queued jobs, one running at a time in a background worker thread."""

    def __init__(self):
        self._changed = threading.Condition()
        self._version = 0
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._worker: threading.Thread | None = None

    # -------------------------------------------------------------------------------- queries
    @property
    def version(self) -> int:
        return self._version

    def get(self, job_id: str | None) -> Job | None:
        with self._changed:
            return self._jobs.get(job_id) if job_id else None

    def jobs_of(self, owner: str | None) -> list[Job]:
        with self._changed:
            return [job for job in self._jobs.values() if owner is not None and job.owner == owner]

    def position(self, job: Job) -> tuple[int, int] | None:
        """``(position, ahead)`` of a waiting job: 1 = next to start, and the number of jobs that run
        before it (the running one included); None once it has started."""
        with self._changed:
            if job.state != "queued":
                return None
            index = next((i for i, queued in enumerate(self._queue) if queued is job), None)
            if index is None:
                return None
            return index + 1, index + (self._running is not None)

    def wait(self, seen: int, timeout: float = 10.0) -> int:
        """Block until something changed after version ``seen`` (or ``timeout``); the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version

    async def snapshots(self, job: Job, idle: bool = False, poll: float = 0.2):
        """A page's view of ``job``: its :meth:`snapshot` each time something changed (looked at every ``poll``
        seconds without blocking the server's event loop); with ``idle``, also None on the ticks without a change
        (for a follower that must notice it was replaced)."""
        seen = -1
        while True:
            version = self.version
            if version != seen:
                seen = version
                yield self.snapshot(job)
            elif idle:
                yield None
            await asyncio.sleep(poll)

    def snapshot(self, job: Job) -> dict:
        """A consistent copy of what a page shows of ``job``."""
        with self._changed:
            return {"state": job.state, "status": job.status, "num_clips": job.num_clips, "step": job.step,
                    "active_clip": job.active_clip, "finished_clips": list(job.finished_clips),
                    "stages": dict(job.stages), "preview": job.preview, "preview_step": job.preview_step,
                    "preview_version": job.preview_version, "final": job.final, "run_dir": job.run_dir,
                    "stop_requested": job.control.stop_after_clip.is_set(),
                    "cancel_requested": job.control.cancel.is_set()}

    # -------------------------------------------------------------------------------- changes
    def _bump(self) -> None:  # with self._changed held
        self._version += 1
        self._changed.notify_all()

    def submit(self, job_id: str, kind: str, owner: str | None, start: Callable[[JobControl], Iterator[JobEvent]],
               run_dir: Path | None = None, on_discard: Callable[[], None] | None = None,
               status: str = "Waiting in the queue ...") -> Job:
        """Queue a job; ``start(control)`` is called in the worker when its turn comes.

        Raises:
            ValueError: a job with this id (the same run) is still queued or running.
        """
        job = Job(job_id, kind, owner, start, run_dir=run_dir, on_discard=on_discard, status=status)
        with self._changed:
            existing = self._jobs.get(job_id)
            if existing is not None and existing.active:
                raise ValueError(f"run {job_id}: a job for it is already {existing.state}")
            self._jobs.pop(job_id, None)
            self._jobs[job_id] = job
            self._queue.append(job)
            self._prune()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="longvie-app-jobs", daemon=True)
                self._worker.start()
            self._bump()
        logger.info("job %s (%s) queued", job_id, kind)
        return job

    def _check_owner(self, job: Job | None, owner: str | None) -> Job:
        if job is None:
            raise LookupError("no such job")
        if owner is None or job.owner != owner:
            raise NotYours(f"job {job.id} belongs to another session")
        return job

    def cancel(self, job_id: str | None, owner: str | None) -> str:
        """Cancel the owner's job: a waiting job leaves the queue; a running one stops after its
        current denoising step (its finished clips are kept). Raises :class:`NotYours`."""
        discard = None
        with self._changed:
            job = self._check_owner(self._jobs.get(job_id) if job_id else None, owner)
            if job.state == "queued":
                self._queue.remove(job)
                job.state = "cancelled"
                job.final = JobEvent("cancelled", "Cancelled before it started; nothing was generated.",
                                     run_dir=job.run_dir)
                job.status = job.final.message
                discard = job.on_discard
                self._bump()
                message = job.final.message
            elif job.state == "running":
                job.control.cancel.set()
                self._bump()
                message = "Cancelling: the job stops after the current denoising step (the run can be resumed)."
            else:
                message = f"The job has already ended ({job.state})."
        if discard is not None:
            discard()
        return message

    def stop_after_clip(self, job_id: str | None, owner: str | None) -> str:
        """Ask the owner's running generation job to stop once the clip in progress is finished."""
        with self._changed:
            job = self._check_owner(self._jobs.get(job_id) if job_id else None, owner)
            if job.kind in ("extract", "camera-preview"):
                return "This job has no clips to stop after; use Cancel."
            if not job.active:
                return f"The job has already ended ({job.state})."
            job.control.stop_after_clip.set()
            self._bump()
            clip = job.active_clip
        where = f"clip {clip}" if clip is not None else "the clip in progress"
        return f"The job stops after {where} is finished; the run can be resumed from the next clip."

    def _prune(self) -> None:  # with self._changed held
        finished = [job_id for job_id, job in self._jobs.items() if not job.active]
        for job_id in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]

    # -------------------------------------------------------------------------------- the worker
    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._queue:
                    self._worker = None
                    return
                job = self._queue.popleft()
                job.state = "running"
                job.status = "Starting ..."
                self._running = job
                self._bump()
            try:
                for event in job.start(job.control):
                    self._apply(job, event)
                    if event.final:
                        break
            except Exception as err:  # noqa: BLE001 - a job never takes the worker down
                logger.exception("job %s failed", job.id)
                self._apply(job, JobEvent("error", f"Internal error ({type(err).__name__}: {err}). "
                                                   "The details are in the server log."))
            with self._changed:
                if job.final is None:
                    job.final = JobEvent("error", "The job ended without a result (see the server log).")
                    job.state = "error"
                self._running = None
                self._bump()
            logger.info("job %s %s", job.id, job.state)

    def _apply(self, job: Job, event: JobEvent) -> None:
        with self._changed:
            job.run_dir = event.run_dir or job.run_dir
            job.num_clips = event.num_clips or job.num_clips
            if event.kind == "status":
                job.status = event.message
            elif event.kind == "step":
                if event.stage is not None:
                    job.stages[event.stage] = (event.step, event.steps)
                    job.status = event.message
                else:
                    job.step = (event.clip, event.step, event.steps)
                    job.active_clip = event.clip
            elif event.kind == "preview":
                job.preview = event.image
                job.preview_step = (event.clip, event.step, event.steps)
                job.preview_version += 1
            elif event.kind == "clip":
                job.finished_clips.append(event.clip)
                job.active_clip = None
                job.status = event.message
            elif event.final:
                job.final = event
                job.state = event.kind
                job.status = event.message
                job.active_clip = None
            self._bump()
