"""Server-side state shared by all visitors: original models, background jobs, finished runs, downloads,
and the gallery of precomputed runs every visitor sees.

Bounded everywhere: at most `limits.models_kept` compressed models in memory across all sessions (the
oldest is dropped first; its figures stay), one download per run written once and deleted when it
expires or its model is dropped, a session's runs and jobs gone when its page closes (a running job's once
it has ended).
"""
from __future__ import annotations

import shutil
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..model.devices import resolve_device
from ..model.loading import EMBEDDED, LoadedModel
from ..run import estimate
from ..run.config import with_preset
from ..run.engine import load_for
from ..run.plan import plan
from ..run.worker import JobManager
from ..study import gallery as gallery_file
from .limits import Limits

GALLERY_PREFIX = "gallery:"      # run ids of gallery entries (a visitor's own runs have hex ids)
GALLERY_VIEWS = 64               # gallery views whose figures are kept, drawn once for every visitor
SWEEPS_KEPT = 16                 # sessions whose uploaded sweep is kept (each at most 2000 slim rows)


@dataclass
class Run:
    id: str
    session: str
    label: str
    source: str
    result: dict
    model: object = None
    tokenizer: object = None
    record: object = None          # the RunRecord, for the manifest of a download
    created: float = field(default_factory=time.time)
    entry: object = None           # the gallery Entry of a precomputed run (no model, stored answers)
    key: str | None = None         # what was asked (the run's configuration): identical requests share a run

    @property
    def slug(self) -> str:
        """The id as a file name ('gallery:svd/auto/0.2' -> 'gallery-svd_auto_0.2')."""
        return self.id.replace(":", "-").replace("/", "_")


def gallery_runs(gallery) -> dict[str, Run]:
    """The gallery's entries as runs any session may show (no model)."""
    if gallery is None:
        return {}
    return {GALLERY_PREFIX + e.name: Run(GALLERY_PREFIX + e.name, "", e.label, e.model, e.result,
                                         entry=e) for e in gallery.entries}


def measured_runs(gallery) -> list[estimate.Measured]:
    """The runs timed on the gallery's machine that estimates start from: its entries and its reference run
    (the page's default from a clone without data: loading, sampled text and serving cost included)."""
    if gallery is None:
        return []
    runs = [e.result for e in gallery.entries] + ([gallery.made["reference"]] if "reference" in gallery.made else [])
    return [estimate.Measured.of(r) for r in runs if r.get("timings")]


def load_gallery(path=None):
    """(gallery, None), or (None, one line saying why there is none): the page works without it."""
    try:
        return gallery_file.read(path or gallery_file.GALLERY_FILE), None
    except gallery_file.GalleryError as err:
        return None, str(err)


def to_release(runs: list[Run], kept: int) -> list[Run]:
    """The runs holding a model other than the `kept` most recent ones (a model that sessions share, after
    identical requests, counts once); kept=0 releases them all."""
    holding = [r for r in runs if r.model is not None]
    models = list(dict.fromkeys(id(r.model) for r in reversed(holding)))[:kept]    # newest first, shared once
    return [r for r in holding if id(r.model) not in models]


class ModelCache:
    """Original models by source, shared by the sessions, on the app's device; the least recently used goes
    first."""

    def __init__(self, size: int = 2, device: str = "auto"):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        self.loading: dict[str, threading.Lock] = {}
        self.device = resolve_device(device)

    def peek(self, source: str) -> LoadedModel | None:
        with self.lock:
            return self.items.get(source)

    def get(self, source: str, token=None) -> LoadedModel:
        """The model, loaded as the engine would: the memory check first, offloaded when it does not fit."""
        with self.lock:
            if source in self.items:
                self.items.move_to_end(source)
                return self.items[source]
            gate = self.loading.setdefault(source, threading.Lock())
        with gate:  # one load per source; other callers wait for it
            cached = self.peek(source)
            if cached is not None:
                return cached
            loaded, _ = load_for(plan(with_preset("demo", model=source, device=str(self.device)), token))
            with self.lock:
                self.items[source] = loaded
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            return loaded


class Store:
    def __init__(self, default_model: str, limits: Limits, download_root: Path, preload: bool = True,
                 gallery_path: Path | None = None):
        self.default_model, self.limits = default_model, limits
        self.gallery, self.gallery_problem = load_gallery(gallery_path)
        self.gallery_runs = gallery_runs(self.gallery)
        self.measured = measured_runs(self.gallery)
        self._gallery_figures: OrderedDict = OrderedDict()
        self.models = ModelCache(size=2)
        self.jobs = JobManager(workers=1, max_jobs=limits.queue, time_limit=limits.job_seconds or None)
        self.runs: dict[str, Run] = {}
        self.downloads: dict[str, tuple[Path, float]] = {}
        self.sweeps: OrderedDict[str, list[dict]] = OrderedDict()    # session -> its uploaded sweep, newest last
        self.download_root = download_root
        self.lock = threading.Lock()
        if preload:
            threading.Thread(target=self._preload, daemon=True).start()
        period = max(1.0, min(60.0, limits.download_seconds / 4))
        threading.Thread(target=_expire_periodically, args=(weakref.ref(self), period), daemon=True).start()

    def keep_sweep(self, session: str, rows: list[dict]) -> None:
        """A session's sweep, the oldest other sessions' forgotten beyond SWEEPS_KEPT (an API caller that never
        opens a page never unloads one)."""
        with self.lock:
            self.sweeps.pop(session, None)
            self.sweeps[session] = rows
            while len(self.sweeps) > SWEEPS_KEPT:
                self.sweeps.popitem(last=False)

    def listed_models(self) -> list[str]:
        """The models the page lists: a public Space's allow-list, else the embedded ones (others may be typed)."""
        if self.limits.public:
            return list(dict.fromkeys([self.default_model, *self.limits.models]))
        return list(dict.fromkeys([*EMBEDDED, self.default_model]))

    def offers(self, model: str) -> bool:
        """Whether the model box may show `model` (a public Space's box takes only its list)."""
        return not self.limits.public or model in self.listed_models()

    def estimate(self, checked) -> dict[str, float] | None:
        """Seconds per phase a checked plan should take here (None without measured runs to start from)."""
        loaded = self.models.peek(checked.config.model) is not None
        return estimate.for_plan(checked, self.measured, loaded)

    def _preload(self):
        try:
            self.models.get(self.default_model, self.limits.token)
        except Exception:  # noqa: BLE001 - the page reports load errors when the model is used
            pass

    # -- runs ---------------------------------------------------------------------------------

    def add(self, session: str, label: str, source: str, result: dict, model, tokenizer, record=None,
            key: str | None = None) -> Run:
        run = Run(uuid.uuid4().hex[:8], session, label, source, result, model, tokenizer, record, key=key)
        with self.lock:
            self.runs[run.id] = run
            for old in to_release(list(self.runs.values()), self.limits.models_kept):
                self._release(old)
        return run

    def _release(self, run: Run) -> None:
        run.model = None
        self._drop_download(run.id)

    def _drop_download(self, run_id: str) -> None:
        """Forget the entry, then delete its folder: no reader finds an entry whose folder is gone (under the
        lock)."""
        path, _ = self.downloads.pop(run_id, (None, None))
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def session_runs(self, session: str) -> list[Run]:
        with self.lock:
            return [r for r in self.runs.values() if r.session == session]

    def gallery_figures(self, key: tuple, draw) -> dict:
        """Figures that depend on the gallery alone, drawn once per view and kept for the next visitor (the
        GALLERY_VIEWS most recent views)."""
        with self.lock:
            if key in self._gallery_figures:
                self._gallery_figures.move_to_end(key)
                return self._gallery_figures[key]
        figures = draw()
        with self.lock:
            self._gallery_figures[key] = figures
            while len(self._gallery_figures) > GALLERY_VIEWS:
                self._gallery_figures.popitem(last=False)
        return figures

    def finished(self, key: str) -> Run | None:
        """A run of any session asked with `key` whose model is still held: a visitor asking the same gets
        it at once instead of a second compression."""
        with self.lock:
            return next((r for r in reversed(self.runs.values()) if r.key == key and r.model is not None), None)

    def get(self, session: str, run_id) -> Run | None:
        """The session's run `run_id` (or a gallery run); without an id, the session's latest run."""
        if isinstance(run_id, str) and run_id in self.gallery_runs:
            return self.gallery_runs[run_id]
        with self.lock:
            run = self.runs.get(run_id) if run_id else None
        if run is None or run.session != session:
            runs = self.session_runs(session)
            return runs[-1] if runs and not run_id else None
        return run

    def next_label(self, session: str, text: str) -> str:
        return f"#{len(self.session_runs(session)) + 1} {text}"

    # -- downloads ----------------------------------------------------------------------------

    def download_folder(self, run: Run) -> tuple[Path, bool]:
        """(folder for this run's download, whether it was already written and is still valid)."""
        self.expire_downloads()
        with self.lock:
            existing = self.downloads.get(run.id)
            if existing is not None and existing[0].exists():
                return existing[0], True
            folder = self.download_root / f"run-{run.slug}-{uuid.uuid4().hex[:6]}"
            folder.mkdir(parents=True, exist_ok=True)
            self.downloads[run.id] = (folder, time.time())
            return folder, False

    def expire_downloads(self, now: float | None = None) -> None:
        """Delete downloads older than the limit at `now` (the clock by default; tests pass a later time)."""
        now = time.time() if now is None else now
        with self.lock:
            for run_id, (_, created) in list(self.downloads.items()):
                if now - created > self.limits.download_seconds or not (run_id in self.runs or
                                                                         run_id in self.gallery_runs):
                    self._drop_download(run_id)

    # -- sessions -----------------------------------------------------------------------------

    def drop_session(self, session: str) -> None:
        """The page closed: stop its job, forget its runs, models, downloads and sweeps. A running job ends
        only at its next check, so it is forgotten then, by a watcher, with what it added meanwhile."""
        job = self.jobs.cancel_session(session, "the page was closed")
        self._forget_session(session)
        if job is not None:   # even if it just ended: it may have done so after _forget_session looked
            threading.Thread(target=self._forget_after, args=(job, session), daemon=True).start()

    def _forget_after(self, job, session: str) -> None:
        """Wait for a cancelled job's end; its result (a model) would otherwise stay in the job table."""
        job.wait()
        self._forget_session(session)

    def _forget_session(self, session: str) -> None:
        """Drop the session's runs (models, downloads), sweeps and finished jobs."""
        with self.lock:
            for key in [k for k, r in self.runs.items() if r.session == session]:
                self._release(self.runs.pop(key))
            self.sweeps.pop(session, None)
        self.jobs.forget(session)

    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.download_root.rglob("*") if f.is_file()) \
            if self.download_root.exists() else 0


def _expire_periodically(store_ref, period: float) -> None:
    """Expired downloads are deleted on a clock, not only when the next one is prepared; the thread ends
    with its Store."""
    while True:
        time.sleep(period)
        store = store_ref()
        if store is None:
            return
        store.expire_downloads()
        del store
