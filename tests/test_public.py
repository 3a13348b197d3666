"""Public mode: what a stranger can send is bounded, refused with a message, or cleaned up after them."""
import os
import threading
import time
from types import SimpleNamespace

import psutil
import pytest
from conftest import launch_app

from svd_explorer.errors import ConfigError
from svd_explorer.ui.layout import COMPRESS, DOWNLOAD, FIGURES
from svd_explorer.ui.limits import BOUNDS, PUBLIC_MODELS, Limits


def test_public_mode_comes_from_the_environment_and_every_limit_can_be_overridden(monkeypatch):
    monkeypatch.setenv("SVD_EXPLORER_PUBLIC", "1")
    monkeypatch.setenv("SVD_EXPLORER_MAX_REFINE_STEPS", "50")
    limits = Limits.from_env()
    assert limits.public and limits.refine_steps == 50 and limits.token is False
    assert limits.calib_samples == BOUNDS["calib_samples"][1] and limits.models == PUBLIC_MODELS
    assert {var for var, _, _ in limits.describe()} == {var for var, _, _ in BOUNDS.values()}
    monkeypatch.setenv("SVD_EXPLORER_PUBLIC", "0")
    assert not Limits.from_env().public and Limits.from_env().token is None


def test_public_mode_loads_only_listed_models(tiny_folder):
    limits = Limits.of(True)
    limits.check_model("smollm2-135m")
    with pytest.raises(ConfigError, match="local folders cannot be loaded on this public Space"):
        limits.check_model(str(tiny_folder))
    with pytest.raises(ConfigError, match="this public Space only loads smollm2-135m"):
        limits.check_model("someone/some-7b-model")
    Limits.of(True, models=(str(tiny_folder),)).check_model(str(tiny_folder))   # an operator's explicit choice
    with pytest.raises(ConfigError, match="refine steps is at most 10 here"):
        Limits.of(refine_steps=10).check_values(refine_steps=11)
    for missing in (None, "3", True):                # what an API caller may send instead of a count
        with pytest.raises(ConfigError, match="new tokens must be a number"):
            Limits.of().check_values(new_tokens=missing)


def public_limits(tiny_folder, **changes) -> Limits:
    return Limits.of(True, models=(str(tiny_folder),), calib_samples=8, seq_len=64, eval_windows=4,
                     refine_steps=2000, refine_batch=2, zero_shot_limit=20, new_tokens=16, job_seconds=10, queue=3,
                     models_kept=1, upload_mb=1, download_seconds=2).with_(**changes)


@pytest.fixture
def public_app(tiny_folder):
    demo = launch_app(tiny_folder, public_limits(tiny_folder))
    yield demo
    demo.close()


def client(app):
    from gradio_client import Client

    return Client(app.local_url, verbose=False)


def compress(c, **kw):
    return c.submit(api_name="/compress", **{"calib": "self", "method": "svd", "ratio": 0.3, **kw})


def last(job) -> dict:
    outputs = list(job)
    return dict(zip(COMPRESS, outputs[-1]))


def test_strangers_inputs_are_bounded_or_refused(public_app, tiny_folder, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c = client(public_app)
    with pytest.raises(AppError, match="is not in the list of choices"):       # no path into the server
        compress(c, model=str(tmp_path)).result()
    with pytest.raises(AppError, match="greater than maximum value 2000"):
        compress(c, method="aa-svd", refine_steps=10**6).result()
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (2 << 20))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        compress(c, calib_file=handle_file(str(big))).result()
    done = last(compress(c))
    assert done["status"].startswith("Done")
    refused = [(compress(c, ratio="abc"), "ratio: expects a finite number"),         # what an API caller can send
               (compress(c, calib_samples="abc"), "calib samples: expects a finite number"),      # a Slider
               (compress(c, seq_len=None), "seq len: expects a finite number"),
               (c.submit(api_name="/export", run_box=[done["run_box"]["value"]], download_layout="factors"),
                "run box: expects one value"),
               (c.submit(api_name="/budget", model=str(tiny_folder), method=None, ratio=0.2,
                         allocation="auto"), None)]
    for job, message in refused[:-1]:
        with pytest.raises(AppError, match=message):
            job.result()
    assert "choose a method" in str(refused[-1][0].result()).lower()
    assert last(compress(c))["status"].startswith("Done")                            # and the page still works


def test_a_job_past_the_time_limit_ends_with_the_reason(public_app):
    out = last(compress(client(public_app), method="aa-svd", refine_steps=2000))
    assert out["status"].startswith("Stopped") and "10-second limit per job" in out["status"]


def test_a_full_queue_says_so_and_the_page_keeps_answering(public_app):
    clients = [client(public_app) for _ in range(4)]
    jobs = [compress(c, method="aa-svd", refine_steps=2000, ratio=0.2 + 0.05 * i) for i, c in enumerate(clients)]
    finals = [last(j)["status"] for j in jobs]
    assert any("the Space is busy" in s for s in finals)
    assert all(s.startswith(("Stopped", "Done", "Error: the Space is busy")) for s in finals), finals


def test_closing_the_page_cancels_its_job(tiny_folder):
    public_app = launch_app(tiny_folder, public_limits(tiny_folder, job_seconds=300))  # no time limit in the way
    c = client(public_app)
    job = compress(c, method="aa-svd", refine_steps=2000)
    for out in job:
        if "Running" in out[0]:
            break
    store = public_app.store
    running = next(j for j in store.jobs.jobs.values() if not j.done)
    c.close()                      # the visitor's page goes away: its heartbeat stops
    deadline = time.time() + 20
    while not running.done and time.time() < deadline:
        time.sleep(0.2)
    public_app.close()
    assert running.status == "cancelled" and running.stop_reason == "the page was closed"


def visitor(app, index: int, outcomes: list) -> None:
    """One simulated visitor: compress, generate, download; every step must answer with a result or a message."""
    c = client(app)
    try:
        status = last(compress(c, ratio=0.2 + 0.02 * index))["status"]
        if not status.startswith("Done"):
            outcomes.append(("limited", status))
            return
        original, compressed, _ = c.predict(api_name="/generate", run_box=None, prompt="Hi", new_tokens=8,
                                            temperature=0)
        outcomes.append(("done", status, compressed, download(c)))
    except Exception as err:  # noqa: BLE001 - recorded, then asserted on
        outcomes.append(("error", repr(err)))
    finally:
        c.close()


def download(c) -> str:
    """The download's message. With more visitors than models kept, another visitor's run may release this
    one's model (and its zip) between the answer and the fetch: asking again must then say so."""
    import httpx

    def ask() -> str:
        return dict(zip(DOWNLOAD, c.predict(api_name="/export", run_box=None)))["download_info"]

    try:
        return ask()
    except httpx.HTTPStatusError:
        info = ask()
        assert "released to save memory" in info, info
        return info


def test_eight_visitors_get_answers_and_leave_nothing_behind(tiny_folder):
    """A bounded load test on loopback: 8 visitors at once, then memory and temporary files back to their bound."""
    limits = Limits.of(True, models=(str(tiny_folder),), queue=8, models_kept=2, download_seconds=60, job_seconds=120,
                       calib_samples=8, seq_len=64, eval_windows=4)
    demo = launch_app(tiny_folder, limits)
    process = psutil.Process(os.getpid())
    try:
        before = process.memory_info().rss
        outcomes: list = []
        threads = [threading.Thread(target=visitor, args=(demo, i, outcomes)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert len(outcomes) == 8 and not [o for o in outcomes if o[0] == "error"], outcomes
        assert all(o[0] == "done" or "busy" in o[1] for o in outcomes)
        store = demo.store
        assert sum(r.model is not None for r in store.runs.values()) <= limits.models_kept
        assert store.bytes_on_disk() > 0                        # the kept runs' downloads, until they expire
        store.expire_downloads(now=time.time() + limits.download_seconds + 1)
        assert store.bytes_on_disk() == 0
        assert not any(not j.done for j in store.jobs.jobs.values())
        assert process.memory_info().rss - before < 600 * 2**20     # stated bound: tiny models + caches
    finally:
        demo.close()


def run_holding(store, session="s"):
    return store.add(session, "run", "src", {}, object(), None)


def test_models_kept_zero_keeps_no_compressed_model(tmp_path):
    from svd_explorer.ui.state import Run, Store, to_release

    runs = [Run(str(i), "s", "", "", {}, model=object() if i != 1 else None) for i in range(4)]
    assert to_release(runs, 0) == [runs[0], runs[2], runs[3]]
    assert to_release(runs, 2) == [runs[0]] and to_release(runs, 5) == []
    store = Store("src", Limits.of(True, models_kept=0), tmp_path, preload=False)
    run = run_holding(store)
    assert run.model is None and store.get("s", run.id) is run     # its figures stay, its model does not


def test_a_closed_page_forgets_its_running_job_only_once_it_has_ended(tmp_path):
    from svd_explorer.ui.state import Store

    store = Store("src", Limits.of(True), tmp_path, preload=False)
    gate, added = threading.Event(), []

    def work(job):
        gate.wait(10)                  # a step that does not check the cancel flag
        added.append(run_holding(store))
        return None, object(), None

    job = store.jobs.submit("s", "compress", work)
    while job.status == "queued":
        time.sleep(0.01)
    store.drop_session("s")
    assert job.cancel.is_set() and job.stop_reason == "the page was closed"
    assert store.jobs.jobs.get(job.id) is job                       # not forgotten while it runs
    gate.set()
    deadline = time.time() + 10
    while job.id in store.jobs.jobs and time.time() < deadline:
        time.sleep(0.02)
    assert job.id not in store.jobs.jobs and not store.session_runs("s")
    assert added and added[0].model is None                         # what it added meanwhile is released too


def test_an_expired_download_is_deleted_on_a_clock(tmp_path):
    from svd_explorer.ui.state import Store

    store = Store("src", Limits.of(True, download_seconds=1), tmp_path, preload=False)
    run = run_holding(store)
    folder, _ = store.download_folder(run)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.zip").write_bytes(b"x" * 1000)
    deadline = time.time() + 10
    while folder.exists() and time.time() < deadline:     # nobody prepares another download meanwhile
        time.sleep(0.2)
    assert not folder.exists() and run.id not in store.downloads


def classroom_visitor(app, outcomes: list, shown: str) -> None:
    """One pupil: the gallery's figures, then Compress with the page's defaults."""
    c = client(app)
    try:
        clock = time.perf_counter()
        figures = dict(zip(FIGURES, c.predict(api_name="/show_run", run_box=shown, block_box=0, kind_box=None,
                                              depth_metric="rel_error", compare_metric="ppl_compressed",
                                              beside_box=[])))
        seconds = time.perf_counter() - clock
        outcomes.append((seconds, "Precomputed" in figures["metrics"], last(compress(c, method="svd-llm"))["status"]))
    except Exception as err:  # noqa: BLE001 - recorded, then asserted on
        outcomes.append((None, False, repr(err)))
    finally:
        c.close()


def test_a_classroom_pressing_compress_together_costs_one_compression(tiny_folder, tiny_gallery):
    """Six visitors, the page's defaults, within a second: one job; the others follow it and get its model."""
    limits = public_limits(tiny_folder, job_seconds=120, queue=2)          # a queue of 2 could not hold 6 jobs
    demo = launch_app(tiny_folder, limits, gallery=tiny_gallery)
    try:
        outcomes: list = []
        threads = [threading.Thread(target=classroom_visitor, args=(demo, outcomes, "gallery:svd-llm/auto/0.2"))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert len(outcomes) == 6 and all(shown for _, shown, _ in outcomes), outcomes
        assert all(status.startswith("Done") for _, _, status in outcomes), outcomes
        assert all(seconds < 5 for seconds, _, _ in outcomes)
        runs = list(demo.store.runs.values())
        assert len(runs) == 6 and len({id(r.model) for r in runs}) == 1      # one compression, one model held
        assert sum("served you both" in s or "Done at once" in s for _, _, s in outcomes) == 5
    finally:
        demo.close()


def test_an_error_no_callback_expected_is_one_line_and_a_wrong_shape_is_named():
    import gradio as gr

    from svd_explorer.ui.layout import Page

    page = Page(store=None)
    page.add("ratio", gr.Number(0.2))

    def broken(store, session, ratio=None):
        return {}["missing"]

    request = SimpleNamespace(session_hash="s")
    with pytest.raises(gr.Error, match=r"could not be handled \(KeyError\); nothing was changed") as caught:
        page._plain(broken, [])(request, ratio=0.2)
    assert "\n" not in caught.value.message
    with pytest.raises(gr.Error, match="ratio: expects a finite number"):
        page._plain(broken, [])(request, ratio=float("nan"))
