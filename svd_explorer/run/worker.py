"""Background jobs: long work runs in worker threads, never in a request handler.

A job carries an append-only list of progress events, its result or error, and a cancel flag that
the engine checks at every step. One job at a time per session; jobs of different sessions wait in
one queue (the CPU is shared), bounded by `max_jobs`, so a waiting visitor sees their position. A
queued job that is stopped ends at once; a running one at its next check. A job that runs longer than
`time_limit` seconds is stopped with that reason. Whatever happens inside, a job ends as done, failed
(with its message) or cancelled, and its session is free again.

Identical requests share one job: a job submitted with a `key` (what was asked) that equals a job still
queued or running gains a follower instead of a place in the queue. A follower who leaves (Stop, or the
page closed) stops only their own following; the job is stopped when its last follower leaves. A classroom
pressing Compress with the same settings thus costs one compression.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..compress.pipeline import Cancelled

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class Busy(RuntimeError):
    """The session already has a job, or the queue is full."""


@dataclass
class Job:
    session: str                    # who submitted it
    kind: str
    key: str | None = None          # what was asked; equal keys share the job
    followers: set = field(default_factory=set)    # sessions waiting for the result (the submitter included)
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "queued"          # queued, running, done, failed, cancelled
    result: object = None
    error: str | None = None
    stop_reason: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)
    estimate: dict | None = None    # seconds per phase expected when it was asked for (the status line's)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.followers.add(self.session)

    def emit(self, kind: str, data) -> None:
        with self._lock:
            self.events.append((time.time(), kind, data))

    def events_since(self, index: int) -> list:
        with self._lock:
            return self.events[index:]

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.cancel.set()

    @property
    def done(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.time() + timeout
        while not self.done:
            if end is not None and time.time() > end:
                return False
            time.sleep(0.05)
        return True


class JobManager:
    def __init__(self, workers: int = 1, max_jobs: int | None = None, time_limit: float | None = None):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="svd-job")
        self.jobs: dict[int, Job] = {}
        self.lock = threading.Lock()
        self.max_jobs, self.time_limit = max_jobs, time_limit

    def active(self, session: str) -> Job | None:
        with self.lock:
            return next((j for j in self.jobs.values() if session in j.followers and not j.done), None)

    def check_free(self, session: str) -> None:
        """Raise Busy when the session already has a job that has not finished."""
        with self.lock:
            self._check_free(session)

    def _check_free(self, session: str) -> None:
        if any(session in j.followers and not j.done for j in self.jobs.values()):
            raise Busy("a job is already running in this session: wait for it or press Stop")

    def submit(self, session: str, kind: str, fn, key: str | None = None) -> Job:
        """Queue fn(job), or follow the unfinished job submitted with the same `key`; raises Busy if this
        session has a job that has not finished or the queue is full."""
        with self.lock:
            self._check_free(session)
            same = next((j for j in self.jobs.values() if key is not None and j.key == key and not j.done
                         and not j.cancel.is_set()), None)
            if same is not None:
                same.followers.add(session)
                return same
            waiting = sum(1 for j in self.jobs.values() if not j.done)
            if self.max_jobs is not None and waiting >= self.max_jobs:
                raise Busy(f"the Space is busy: {waiting} jobs are running or waiting (the limit); try again in a "
                           f"few minutes")
            job = Job(session, kind, key)
            self.jobs[job.id] = job
        self.executor.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn) -> None:
        with self.lock:
            if job.status != "queued":   # stopped while it waited
                return
            job.status, job.started = "running", time.time()
        timer = None
        if self.time_limit:
            span = f"{self.time_limit / 60:g}-minute" if self.time_limit >= 60 else f"{self.time_limit:g}-second"
            timer = threading.Timer(self.time_limit, job.stop, [f"the {span} limit per job was reached"])
            timer.daemon = True
            timer.start()
        try:
            job.result = fn(job)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except Exception as err:  # noqa: BLE001 - any failure is reported to the page, the app goes on
            text = " ".join(str(err).split())
            job.error = (text if isinstance(err, (ValueError, RuntimeError, OSError))
                         else f"{type(err).__name__}: {text}")
            job.status = "failed"
            log.warning("job %s failed:\n%s", job.id, traceback.format_exc())
        finally:
            if timer is not None:
                timer.cancel()
            job.finished = time.time()

    def position(self, job: Job) -> int:
        """How many jobs are ahead of this one (0 once it runs)."""
        if job.status != "queued":
            return 0
        with self.lock:
            return sum(1 for j in self.jobs.values() if j.status in ("queued", "running") and j.id < job.id)

    def cancel(self, job: Job, reason: str = "you pressed Stop") -> None:
        """Stop a job: a queued one ends now, a running one at its next check."""
        job.stop(reason)
        with self.lock:
            if job.status == "queued":
                job.status, job.finished = "cancelled", time.time()

    def leave(self, job: Job, session: str, reason: str = "you pressed Stop") -> None:
        """The session stops following the job; the job itself is stopped when no follower is left."""
        with self.lock:
            job.followers.discard(session)
            alone = not job.followers
        if alone:
            self.cancel(job, reason)

    def cancel_session(self, session: str, reason: str = "you pressed Stop") -> Job | None:
        """Stop following the session's queued or running job; returns it (None when there was none)."""
        job = self.active(session)
        if job is not None:
            self.leave(job, session, reason)
        return job

    def discard(self, job: Job, session: str | None = None) -> None:
        """The session has read a finished job's result; the job (and what it holds) is forgotten once every
        follower has (at once without a session)."""
        with self.lock:
            if job.done:
                if session is None:
                    job.followers.clear()
                else:
                    job.followers.discard(session)
                if not job.followers:
                    self.jobs.pop(job.id, None)

    def forget(self, session: str) -> None:
        """Drop the session from finished jobs; jobs nobody follows any more go (their results and models)."""
        with self.lock:
            for key, job in list(self.jobs.items()):
                if job.done:
                    job.followers.discard(session)
                    if not job.followers:
                        del self.jobs[key]
