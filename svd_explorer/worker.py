"""Background jobs: long work runs in worker threads, never in a request handler.

A job carries an append-only list of progress events, its result or error, and a cancel flag
that the pipeline checks between projections. One job at a time per session; jobs of different
sessions wait in one queue (the CPU is shared), so a waiting user sees their position.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .pipeline import Cancelled

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class Busy(RuntimeError):
    """The session already has a job running."""


@dataclass
class Job:
    session: str
    kind: str
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "queued"          # queued, running, done, failed, cancelled
    result: object = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def emit(self, kind: str, data) -> None:
        with self._lock:
            self.events.append((time.time(), kind, data))

    def events_since(self, index: int) -> list:
        with self._lock:
            return self.events[index:]

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
    def __init__(self, workers: int = 1):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="svd-job")
        self.jobs: dict[int, Job] = {}
        self.lock = threading.Lock()

    def active(self, session: str) -> Job | None:
        with self.lock:
            return next((j for j in self.jobs.values() if j.session == session and not j.done), None)

    def submit(self, session: str, kind: str, fn) -> Job:
        """Queue fn(job); raises Busy if this session already has a job that has not finished."""
        with self.lock:
            if any(j.session == session and not j.done for j in self.jobs.values()):
                raise Busy("a job is already running in this session: wait for it or press Stop")
            job = Job(session, kind)
            self.jobs[job.id] = job
        self.executor.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn) -> None:
        if job.cancel.is_set():
            job.status, job.finished = "cancelled", time.time()
            return
        job.status, job.started = "running", time.time()
        try:
            job.result = fn(job)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except Exception as err:  # noqa: BLE001 - any failure is reported to the page, the app goes on
            job.error = f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, RuntimeError)) else str(err)
            job.status = "failed"
            log.warning("job %s failed:\n%s", job.id, traceback.format_exc())
        finally:
            job.finished = time.time()

    def position(self, job: Job) -> int:
        """How many jobs are ahead of this one (0 once it runs)."""
        if job.status != "queued":
            return 0
        with self.lock:
            return sum(1 for j in self.jobs.values() if j.status in ("queued", "running") and j.id < job.id)

    def cancel_session(self, session: str) -> bool:
        job = self.active(session)
        if job is None:
            return False
        job.cancel.set()
        return True

    def forget(self, session: str) -> None:
        """Drop a session's finished jobs (their results and models)."""
        with self.lock:
            for key in [k for k, j in self.jobs.items() if j.session == session and j.done]:
                del self.jobs[key]
