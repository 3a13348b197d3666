"""The app: plot builders on recorded results, the background worker, and the page driven by gradio_client."""
import json
import threading
import time
import zipfile

import pytest
import torch
from conftest import tiny_ids, tiny_model

from svd_explorer import plots
from svd_explorer.generation import side_by_side
from svd_explorer.methods import get_method
from svd_explorer.pipeline import Cancelled, compress_model
from svd_explorer.worker import Busy, JobManager


@pytest.fixture(scope="module")
def recorded():
    """Results of real (tiny) runs, as the CLI writes them."""
    model = tiny_model("llama")
    out = {}
    for name, options in (("saes-svd", {}), ("aa-svd", {"refine_steps": 10}), ("ressvd", {"last_layers": "2"})):
        _, result = compress_model(model, get_method(name, **options), 0.3, tiny_ids(), precision="float32")
        out[name] = result.to_dict() | {"params_before": result.params_before, "params_after": result.params_after,
                                        "ppl_compressed": 100.0, "ppl_original": 50.0, "kl_to_original": 0.5,
                                        "top1_agreement": 0.6}
    return out


def test_spectrum_figure_marks_the_kept_rank(recorded):
    r = recorded["saes-svd"]
    fig = plots.spectrum_figure(r, 1, "q_proj")
    assert [t.name for t in fig.data] == ["raw W", "truncated: M(β) = W (H + βΔ) R⁻ᵀ"]
    layer = plots.find_layer(r, 1, "q_proj")
    assert fig.layout.shapes[0].x0 == layer["rank"] and len(fig.data[0].y) == min(layer["shape"])
    assert "was not compressed" in plots.spectrum_figure(recorded["ressvd"], 0, "q_proj").layout.annotations[0].text


def test_depth_figure_overlays_runs_and_heatmap_covers_every_projection(recorded):
    fig = plots.depth_figure([("a", recorded["saes-svd"]), ("b", recorded["ressvd"])])
    assert len(fig.data) == 2 and list(fig.data[1].y[:1]) == [0.0]  # ressvd leaves block 0 intact
    heat = plots.error_heatmap(recorded["saes-svd"])
    assert len(heat.data[0].z) == 3 and len(heat.data[0].x) == 7


def test_aces_and_refinement_figures(recorded):
    aces = plots.aces_figure(recorded["saes-svd"], 2, "down_proj")
    chosen = [t for t in aces.data if t.name == "chosen (exact)"][0]
    layer = plots.find_layer(recorded["saes-svd"], 2, "down_proj")
    assert chosen.x[0] == layer["extra"]["aces"]["beta"]
    assert len(plots.aces_depth_figure(recorded["saes-svd"]).data) == 7
    flat = plots.aces_figure(recorded["saes-svd"], 0, "q_proj")  # block 0: both streams feed q the same input
    assert "no upstream error" in flat.layout.annotations[-1].text
    assert "saes-svd runs" in plots.aces_figure(recorded["aa-svd"], 0, "q_proj").layout.annotations[0].text
    refine = plots.refine_figure(recorded["aa-svd"], 1)
    assert len(refine.data[0].y) == 10 and len(refine.data[1].x) == 3


def test_comparison_and_zero_shot_figures(recorded):
    fig = plots.comparison_figure(list(recorded.values()))
    assert {t.name for t in fig.data} == {"saes-svd", "aa-svd", "ressvd", "original"}
    original = [t for t in fig.data if t.name == "original"][0]
    assert (original.x[0], original.y[0]) == (1.0, 50.0) and not fig.layout.shapes
    bars = plots.zero_shot_figure({"original": {"piqa": {"acc": 0.6, "acc_stderr": 0.02}},
                                   "compressed": {"piqa": {"acc": 0.55, "acc_stderr": 0.02}}})
    assert [t.y[0] for t in bars.data] == [0.6, 0.55]


def test_worker_reports_progress_queues_sessions_and_cancels():
    manager = JobManager(workers=1)
    gate = threading.Event()

    def slow(job):
        for i in range(100):
            job.emit("step", i)
            if job.cancel.is_set():
                raise Cancelled("stopped")
            gate.wait(0.02)
        return "finished"

    first = manager.submit("alice", "compress", slow)
    with pytest.raises(Busy, match="already running"):
        manager.submit("alice", "compress", slow)
    second = manager.submit("bob", "compress", lambda job: "quick")
    assert manager.position(second) == 1  # bob waits behind alice's job
    while not first.events_since(0):
        time.sleep(0.01)
    assert first.status == "running"
    manager.cancel_session("alice")
    assert first.wait(5) and first.status == "cancelled"
    assert second.wait(5) and second.status == "done" and second.result == "quick"
    failing = manager.submit("alice", "compress", lambda job: 1 / 0)
    assert failing.wait(5) and failing.status == "failed" and "ZeroDivisionError" in failing.error


def test_side_by_side_streams_both_models(tiny_folder):
    from svd_explorer.models import load_model

    lm = load_model(str(tiny_folder))
    compressed, _ = compress_model(lm.model, get_method("svd"), 0.5, tiny_ids(), precision="float32")
    steps = list(side_by_side([lm.model, compressed], lm.tokenizer, "Hello", max_new_tokens=6, seed=1))
    assert 1 <= len(steps) <= 6 and all(len(s) == 2 for s in steps)
    assert len(steps[-1][0]) >= len(steps[0][0])
    again = list(side_by_side([lm.model, lm.model], lm.tokenizer, "Hello", max_new_tokens=6, temperature=1.0,
                              seed=3))
    assert again[-1][0] == again[-1][1]  # same model, same seed: the same text
    with pytest.raises(ValueError, match="empty"):
        list(side_by_side([lm.model], lm.tokenizer, "", max_new_tokens=2, chat=False))


# ---------------------------------------------------------------------------------------------
# The page, in-process, through gradio_client
# ---------------------------------------------------------------------------------------------

def client(app):
    from gradio_client import Client

    c = Client(app.local_url, verbose=False)
    api = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    required = {ep: {p["parameter_name"]: None for p in api[ep]["parameters"] if not p["parameter_has_default"]}
                for ep in api}
    return c, required


def compress_args(required, **kw):
    return {**required["/compress"], "calib_value": "self", **kw}


def test_endpoints_are_named(app):
    c, required = client(app)
    assert {"/budget", "/method_info", "/compress", "/stop", "/show_run", "/generate", "/zero_shot",
            "/export"} <= set(required)
    assert any("compress" in name for name in required)


def test_budget_is_shown_before_anything_runs(app, tiny_folder):
    c, required = client(app)
    text = c.predict(**required["/budget"], api_name="/budget")
    assert "break-even" in text and "| q_proj | 32×32 | 12 | 16 |" in text
    text = c.predict(**{**required["/budget"], "source": "no-such-org/no-such-model"}, api_name="/budget")
    assert text.startswith("Error:") and "no-such-org/no-such-model" in text


def test_compress_streams_progress_then_shows_every_figure(app, tiny_folder, tmp_path):
    c, required = client(app)
    job = c.submit(**compress_args(required, method_name="aa-svd", ratio_value=0.4), api_name="/compress")
    statuses = [out[0] for out in job]
    assert statuses[-1].startswith("Done") and any("projection" in s for s in statuses)
    figures = c.predict(**required["/show_run"], api_name="/show_run")
    assert "aa-svd 0.4" in figures[0] and "perplexity" in figures[0]
    assert all(isinstance(f, dict) for f in figures[1:8])  # plotly figures
    assert figures[8]["data"][0][1] == "aa-svd"  # the history table
    archive, result_json = c.predict(**required["/export"], api_name="/export")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(archive) as z:
        z.extractall(folder)
    from svd_explorer import load_compressed

    loaded = load_compressed(folder)
    assert torch.isfinite(loaded(tiny_ids(1)).logits).all() and result_json.endswith(".json")
    original, compressed = c.predict(**{**required["/generate"], "text": "Hi", "tokens": 8}, api_name="/generate")
    assert isinstance(original, str) and isinstance(compressed, str)


def test_bad_input_gives_a_message_and_the_app_keeps_working(app, tiny_folder):
    c, required = client(app)
    out = list(c.submit(**compress_args(required, method_name="svd", ratio_value=0.98), api_name="/compress"))
    assert "leaves rank 0" in out[-1][0]
    out = list(c.submit(**compress_args(required, source="no-such-org/no-such-model", method_name="svd",
                                        ratio_value=0.2), api_name="/compress"))
    assert out[-1][0].startswith("Error:") and "no-such-org/no-such-model" in out[-1][0]
    out = list(c.submit(**compress_args(required, method_name="svd", ratio_value=0.3), api_name="/compress"))
    assert out[-1][0].startswith("Done")


def test_stop_cancels_a_run_halfway_and_the_app_stays_usable(app):
    c, required = client(app)
    job = c.submit(**compress_args(required, method_name="aa-svd", ratio_value=0.3, param_15=3000),
                   api_name="/compress")
    for out in job:
        if "projection" in out[0]:
            break
    assert "Stopping" in c.predict(api_name="/stop")
    while not job.done():
        time.sleep(0.1)
    assert job.outputs()[-1][0].startswith("Stopped after")
    again = list(c.submit(**compress_args(required, method_name="svd", ratio_value=0.3), api_name="/compress"))
    assert again[-1][0].startswith("Done")


def test_one_job_per_session_and_sessions_do_not_block_each_other(app):
    (a, required), (b, _) = client(app), client(app)
    slow = a.submit(**compress_args(required, method_name="aa-svd", ratio_value=0.3, param_15=400),
                    api_name="/compress")
    for out in slow:
        if "projection" in out[0]:
            break
    busy = list(a.submit(**compress_args(required, method_name="svd", ratio_value=0.3), api_name="/compress"))
    assert "already running" in busy[-1][0]
    other = b.submit(**compress_args(required, method_name="svd", ratio_value=0.3), api_name="/compress")
    seen = [out[0] for out in other]
    assert seen[-1].startswith("Done") and slow.outputs()[-1][0].startswith("Done")
    assert any("Waiting for the worker" in s for s in seen) or slow.done()


def test_zero_shot_panel_evaluates_both_models(app, shared_data):
    c, required = client(app)
    list(c.submit(**compress_args(required, method_name="svd", ratio_value=0.3), api_name="/compress"))
    job = c.submit(**{**required["/zero_shot"], "chosen": ["piqa"], "count": 10}, api_name="/zero_shot")
    outputs = list(job)
    status, table, figure = outputs[-1]
    assert status.startswith("Done") and table["data"][0][0] == "piqa"
    bars = json.loads(figure["plot"])["data"]
    assert all("%" in cell for cell in table["data"][0][1:]) and [b["name"] for b in bars] == ["original", "compressed"]
