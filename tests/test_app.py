"""The app: plot builders on recorded results, the background worker, and the page driven by gradio_client."""
import json
import threading
import time
import zipfile

import pytest
import torch
from conftest import tiny_ids, tiny_model

from svd_explorer.compress.methods import REGISTRY, get_method
from svd_explorer.compress.pipeline import Cancelled, compress_model
from svd_explorer.compress.refine import RefineSettings
from svd_explorer.figures import plots
from svd_explorer.run.worker import Busy, JobManager
from svd_explorer.text.generation import side_by_side
from svd_explorer.ui import callbacks, texts
from svd_explorer.ui.layout import BUDGET, COMPRESS, DOWNLOAD, FIGURES, ZERO_SHOT


@pytest.fixture(scope="module")
def recorded():
    """Results of real (tiny) runs, as the CLI writes them."""
    model = tiny_model("llama")
    out = {}
    for name, refine in (("saes-svd", None), ("aa-svd", RefineSettings(steps=10)), ("ressvd", None)):
        _, result = compress_model(model, get_method(name), 0.3, tiny_ids(), precision="float32", refine=refine)
        out[name] = result.to_dict() | {"ppl_compressed": 100.0, "ppl_original": 50.0, "kl_to_original": 0.5,
                                        "top1_agreement": 0.6}
    return out


def test_spectrum_figure_marks_the_kept_rank(recorded):
    r = recorded["saes-svd"]
    fig = plots.spectrum_figure(r, 1, "q_proj")
    assert [t.name for t in fig.data] == ["raw W", "truncated: M(β) = W (H + βΔ) R⁻ᵀ"]
    layer = plots.find_layer(r, 1, "q_proj")
    assert fig.layout.shapes[0].x0 == layer["rank"] and len(fig.data[0].y) == min(layer["shape"])
    assert "was not compressed" in plots.spectrum_figure(r, 7, "q_proj").layout.annotations[0].text


def test_depth_rank_and_heatmap_figures(recorded):
    fig = plots.depth_figure([("a", recorded["saes-svd"]), ("b", recorded["ressvd"])])
    assert len(fig.data) == 2 and fig.data[0].line.color == REGISTRY["saes-svd"].color
    heat = plots.error_heatmap(recorded["saes-svd"])
    assert len(heat.data[0].z) == 3 and len(heat.data[0].x) == 7
    ranks = plots.rank_depth_figure([("a", recorded["saes-svd"])])
    layer = plots.find_layer(recorded["saes-svd"], 0, "q_proj")
    named = [kind for t in ranks.data for kind in t.name.split(", ")]       # coinciding lines are drawn once,
    assert sorted(named) == sorted(plots.kinds(recorded["saes-svd"])) and len(ranks.data) < 7   # named after all
    assert ranks.data[0].y[0] == pytest.approx(layer["rank"] / 16)
    assert all(0 < y <= 1 for t in ranks.data for y in t.y)   # below break-even everywhere
    two = plots.rank_depth_figure([("earlier", recorded["ressvd"]), ("a", recorded["saes-svd"])])
    faint = [t for t in two.data if t.legendgroup == "earlier"]
    assert [t.name for t in faint if t.showlegend] == ["earlier (faint)"]     # one entry names the earlier run
    def layers(*kinds):
        return {"blocks": [{"block": 0}], "layers": [{"block": 0, "kind": k, "rank": 4 + i, "shape": [64, 32]}
                                                     for i, k in enumerate(kinds)]}
    mixed = plots.rank_depth_figure([("mlp", layers("up_proj")), ("a", layers("q_proj", "up_proj"))])
    colour = {t.name: t.line.color for t in mixed.data if t.legendgroup is None}
    assert mixed.data[0].line.color == colour["up_proj"] != colour["q_proj"]   # a kind keeps its colour


def test_projection_kinds_keep_the_blocks_order_when_an_allocation_skips_some():
    blocks = [["q", "o"], ["q", "k", "o"], ["up", "down"], ["q", "k", "v", "o", "gate", "up", "down"]]
    layers = [{"block": b, "kind": kind} for b, order in enumerate(blocks) for kind in order]
    assert plots.kinds({"layers": layers}) == ["q", "k", "v", "o", "gate", "up", "down"]
    swapped = [{"block": b, "kind": kind} for b, order in enumerate([["a", "b"], ["b", "a", "c"]]) for kind in order]
    assert plots.kinds({"layers": swapped}) == ["a", "b", "c"]         # after every kind before it in its block
    assert plots.first_kind({"layers": layers}, 2) == "up"             # the page opens on one block 2 compressed


def test_aces_and_refinement_figures(recorded):
    aces = plots.aces_figure(recorded["saes-svd"], 2, "down_proj")
    chosen = [t for t in aces.data if t.name == "chosen (exact)"][0]
    layer = plots.find_layer(recorded["saes-svd"], 2, "down_proj")
    assert chosen.x[0] == layer["extra"]["aces"]["beta"] and 0.25 <= chosen.x[0] <= 0.75
    assert len(plots.aces_depth_figure(recorded["saes-svd"]).data) == 7
    flat = plots.aces_figure(recorded["saes-svd"], 0, "q_proj")  # block 0: both streams feed q the same input
    assert "no upstream error" in flat.layout.annotations[-1].text
    missing = get_method("saes-svd").figures[0].missing        # the tab's words, declared by the method
    assert "saes-svd runs" in plots.aces_figure(recorded["aa-svd"], 0, "q_proj", missing).layout.annotations[0].text
    refine = plots.refine_figure(recorded["aa-svd"], 1)
    assert len(refine.data[0].y) == 10 and len(refine.data[1].x) == 3


@pytest.mark.parametrize("metric, original, low, high", [("ppl_compressed", 50.0, None, None),
                                                         ("kl_to_original", 0.0, 0, None),
                                                         ("top1_agreement", 1.0, 0, 1.05)])
def test_comparison_axes_keep_differences_in_proportion(recorded, metric, original, low, high):
    fig = plots.comparison_figure(list(recorded.values()), metric)
    marker = [t for t in fig.data if t.name == "original"][0]
    assert (marker.x[0], marker.y[0]) == (1.0, original)             # the original is always there
    assert fig.layout.xaxis.range[1] < 1.1                           # no empty axis to 1.8
    if low is not None:
        assert fig.layout.yaxis.range[0] == low and (high is None or fig.layout.yaxis.range[1] == high)


def test_log_axes_label_their_ticks_in_full_and_open_up_a_flat_curve():
    rows = [{"method": "svd-llm", "ratio": r, "params_before": 100, "params_after": 100 - 40 * r, "ppl_compressed": p,
             "ppl_original": 38.8} for r, p in ((0.2, 224.6), (0.3, 303.2))]
    fig = plots.comparison_figure(rows)
    axis = fig.layout.yaxis
    assert list(axis.ticktext) == ["50", "100", "200"] and list(axis.tickvals) == [50, 100, 200]
    low, high = 10 ** axis.range[0], 10 ** axis.range[1]
    assert low < 38.8 and high > 303.2 * 1.2                          # labels beside the top point stay inside
    other = rows[0] | {"ppl_compressed": 801.8, "config": {"allocation": "sensitivity"}}
    wide = plots.comparison_figure(rows + [other])
    assert "1,000" in wide.layout.yaxis.ticktext                      # not "1e+03"
    assert [t.marker.symbol for t in wide.data[:2]] == [("circle", "circle"), ("circle-open",)]  # not its own: open
    flat = plots.readable_log_axis(plots.go.Figure(plots.go.Scatter(x=[0, 1], y=[4.2915e-5, 4.29149e-5])))
    assert 10 ** (flat.layout.yaxis.range[1] - flat.layout.yaxis.range[0]) > 4   # a span, not 8-digit ticks


def test_zero_shot_figure():
    bars = plots.zero_shot_figure({"original": {"piqa": {"acc": 0.6, "acc_stderr": 0.02}},
                                   "compressed": {"piqa": {"acc": 0.55, "acc_stderr": 0.02}}})
    assert [t.y[0] for t in bars.data] == [0.6, 0.55]


def slow_job(gate):
    def slow(job):
        for i in range(200):
            job.emit("step", i)
            if job.cancel.is_set():
                raise Cancelled("stopped")
            gate.wait(0.02)
        return "finished"
    return slow


def test_worker_reports_progress_queues_sessions_and_cancels():
    manager = JobManager(workers=1)
    first = manager.submit("alice", "compress", slow_job(threading.Event()))
    with pytest.raises(Busy, match="already running"):
        manager.submit("alice", "compress", lambda job: None)
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
    assert manager.active("alice") is None   # a failed job never leaves its session busy


def test_a_queued_job_stops_at_once_and_a_full_queue_says_so():
    manager = JobManager(workers=1, max_jobs=2)
    running = manager.submit("a", "compress", slow_job(threading.Event()))
    queued = manager.submit("b", "compress", lambda job: "never")
    with pytest.raises(Busy, match="the Space is busy: 2 jobs"):
        manager.submit("c", "compress", lambda job: None)
    start = time.time()
    manager.cancel(queued)
    assert queued.done and queued.status == "cancelled" and time.time() - start < 0.5
    manager.cancel(running)
    assert running.wait(5) and queued.result is None


def test_a_job_past_its_time_limit_is_stopped_with_the_reason():
    manager = JobManager(workers=1, time_limit=0.3)
    job = manager.submit("a", "compress", slow_job(threading.Event()))
    assert job.wait(5) and job.status == "cancelled" and "limit per job" in job.stop_reason


def test_side_by_side_streams_both_models(tiny_folder):
    from svd_explorer.model.loading import load_model

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

    return Client(app.local_url, verbose=False)


def named(names, values):
    return dict(zip(names, values))


def compress_job(c, **kw):
    return c.submit(api_name="/compress", **{"calib": "self", "method": "svd", "ratio": 0.3, **kw})


def finish(job) -> list[dict]:
    return [named(COMPRESS, out) for out in job]


def test_endpoints_are_named(app):
    api = client(app).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/budget", "/method_info", "/compress", "/stop", "/show_run", "/generate", "/zero_shot",
            "/export", "/open_sweep"} <= set(api)


def test_budget_is_shown_before_anything_runs_and_reasons_sit_beside_the_fields(app, tiny_folder):
    c = client(app)
    out = named(BUDGET, c.predict(api_name="/budget", model=str(tiny_folder), method="svd-llm", allocation="auto",
                                  ratio=0.3))
    assert "break-even" in out["budget"] and "| q_proj | 32×32 |" in out["budget"]
    bad = named(BUDGET, c.predict(api_name="/budget", model="no-such-org/no-such-model", method="svd",
                                  allocation="auto", ratio=0.3))
    assert "no-such-org/no-such-model" in bad["model_message"]
    typed = named(BUDGET, c.predict(api_name="/budget", model=str(tiny_folder), method="svd", allocation="auto",
                                    ratio=1.5))
    assert "strictly between 0 and 1" in typed["ratio_message"] and "1.5" in typed["ratio_message"]


def test_compress_streams_progress_then_shows_every_figure(app, tiny_folder):
    c = client(app)
    statuses = [out["status"] for out in finish(compress_job(c, method="aa-svd", ratio=0.4, refine_steps=300))]
    assert statuses[-1].startswith("Done")
    projections = {s.split(" · ")[0] for s in statuses if "projection" in s}
    assert len(projections) >= 2     # the status line moves while the work goes on: 300 refinement steps take
                                     # about 2 s a block here, several 0.5 s ticks (20 steps ended between two on CI)
    assert "about" in statuses[0] and "Expected about" in statuses[-1]     # the whole run's estimate, first to last
    figures = named(FIGURES, c.predict(api_name="/show_run", run_box=None, block_box=0, kind_box=None,
                                       depth_metric="rel_error", compare_metric="ppl_compressed"))
    assert "aa-svd" in figures["metrics"] and "perplexity" in figures["metrics"]
    assert all(isinstance(figures[k], dict) for k in FIGURES if k.endswith("_plot"))
    assert figures["history"]["data"][-1][0].endswith("aa-svd, 40%")        # words, not signs that read as names
    original, compressed, _ = c.predict(api_name="/generate", run_box=None, prompt="Hi", new_tokens=8, temperature=0)
    assert isinstance(original, str) and isinstance(compressed, str) and compressed


def test_untouched_option_controls_record_the_registry_defaults(app):
    """Leaving 'Method options' as the page draws them must run the method as registered (ACES on for
    saes-svd, never a fixed β = 0): checked on the run's own JSON, for every method."""
    c = client(app)
    for name, cls in REGISTRY.items():
        statuses = [out["status"] for out in finish(compress_job(c, method=name, ratio=0.3))]
        assert statuses[-1].startswith("Done"), (name, statuses[-1])
        result = json.loads(open(named(DOWNLOAD, c.predict(api_name="/export", run_box=None))["json_file"]).read())
        assert result["method"] == name and result["options"] == {o.name: o.default for o in cls.options}, name
    aces = [layer["extra"]["aces"] for layer in result["layers"]]          # the last method is saes-svd
    assert all(a["mode"] == "surrogate" and 0.25 <= a["beta"] <= 0.75 and len(a["points"]) >= 2 for a in aces)


def test_bad_input_gives_a_message_and_the_app_keeps_working(app, tiny_folder):
    c = client(app)
    out = finish(compress_job(c, method="svd", ratio=0.98))[-1]
    assert "leaves rank 0" in out["status"] and "leaves rank 0" in out["ratio_message"]
    out = finish(compress_job(c, model="no-such-org/no-such-model"))[-1]
    assert out["status"].startswith("Error:") and "no-such-org/no-such-model" in out["model_message"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="greater than maximum value"):     # the control's own bound, as a message
        compress_job(c, calib_samples=10**6).result()
    long = finish(compress_job(c, allocation="sensitivity", opt__sensitivity__fractions="0.5," * 2000))[-1]
    assert "longer than 200 characters" in long["status"] and "0.5,0.5" not in long["status"]   # not echoed back
    assert finish(compress_job(c))[-1]["status"].startswith("Done")


def test_stop_is_acknowledged_at_once_and_ends_the_job(app):
    c = client(app)
    job = compress_job(c, method="aa-svd", ratio=0.3, refine_steps=1000)
    for out in job:
        if "projection" in out[0] or "refining" in out[0]:
            break
    start = time.time()
    assert "Stopping" in c.predict(api_name="/stop")
    assert time.time() - start < 2
    while not job.done():
        time.sleep(0.1)
    assert job.outputs()[-1][0].startswith("Stopped") and time.time() - start < 30
    assert finish(compress_job(c))[-1]["status"].startswith("Done")


def test_stop_pressed_after_the_end_leaves_the_line_that_says_how_it_ended(app):
    c = client(app)
    done = finish(compress_job(c))[-1]["status"]
    assert done.startswith("Done")
    assert callbacks.stop(app.store, c.session_hash, done) == {"status": callbacks.SKIP}    # "Done ..." stays
    assert callbacks.stop(app.store, "a page that never ran anything", texts.READY) == \
        {"status": "Nothing is running."}
    refused = finish(compress_job(c, model="no-such-org/no-such-model"))[-1]["status"]
    assert refused.startswith("Error") and c.predict(api_name="/stop", status=refused) != "Nothing is running."
    failing = app.store.jobs.submit("a page whose only job failed", "compress", lambda job: 1 / 0)
    assert failing.wait(5) and failing.status == "failed"
    app.store.jobs.discard(failing)                                                      # as the page does
    assert callbacks.stop(app.store, "a page whose only job failed", "Error: ZeroDivisionError") == \
        {"status": callbacks.SKIP}


def test_one_job_per_session_and_sessions_wait_in_line(app):
    a, b = client(app), client(app)
    slow = compress_job(a, method="aa-svd", ratio=0.3, refine_steps=1000)
    for out in slow:
        if "projection" in out[0] or "refining" in out[0]:
            break
    busy = finish(compress_job(a))[-1]
    assert "already running" in busy["status"]
    other = compress_job(b, ratio=0.33)         # a request nobody made yet (an identical one would be shared)
    seen = []
    for out in other:
        seen.append(out[0])
        if "Waiting for the worker" in out[0]:
            break
    assert "Waiting for the worker: 1 job(s) ahead" in seen[-1]     # b waits while a's job holds the worker
    a.predict(api_name="/stop")
    while not other.done():
        time.sleep(0.1)
    assert other.outputs()[-1][0].startswith("Done") and slow.outputs()[-1][0].startswith("Stopped")


def test_download_is_written_once_and_loads_back(app, tmp_path):
    c = client(app)
    finish(compress_job(c, method="svd-llm"))
    first = named(DOWNLOAD, c.predict(api_name="/export", run_box=None))
    second = named(DOWNLOAD, c.predict(api_name="/export", run_box=None))
    assert first["model_file"] == second["model_file"] and "Download:" in first["download_info"]
    assert "The link works for 60 min, while this run is among the 4 most recent" in first["download_info"]
    with zipfile.ZipFile(first["model_file"]) as z:
        z.extractall(tmp_path / "unzipped")
    from svd_explorer import load_compressed

    loaded = load_compressed(tmp_path / "unzipped")
    assert torch.isfinite(loaded(tiny_ids(1)).logits).all()
    assert json.loads(open(first["json_file"]).read())["method"] == "svd-llm"


@pytest.mark.parametrize("error", ["safetensors", "tokenizers", "os"])
def test_a_download_whose_folder_goes_while_it_is_written_says_so(app, monkeypatch, error):
    """Under load the store may release a run (and delete its download folder) while its zip is written; each
    library writing into it fails with its own error (tokenizers raises a bare Exception, as CI once saw):
    the visitor must get a message, not a failure."""
    import shutil

    from safetensors import SafetensorError

    import svd_explorer.ui.callbacks as callbacks

    c = client(app)
    finish(compress_job(c, method="svd", ratio=0.3))
    raised = {"safetensors": SafetensorError("I/O error: No such file or directory (os error 2)"),
              "tokenizers": Exception("No such file or directory (os error 2)"),
              "os": FileNotFoundError("No such file or directory")}[error]

    def folder_goes(record, model, tokenizer, folder, **options):
        shutil.rmtree(folder.parent)             # what the store does when it releases the run
        raise raised

    monkeypatch.setattr(callbacks, "export", folder_goes)
    info = named(DOWNLOAD, c.predict(api_name="/export", run_box=None))["download_info"]
    assert "expired while it was written" in info


def test_a_download_that_fails_for_another_reason_is_logged_not_called_expired(app, monkeypatch, caplog):
    """Only a vanished folder means "expired"; any other failure is logged for the operator and the visitor
    gets one line without the server's paths."""
    import svd_explorer.ui.callbacks as callbacks

    c = client(app)
    finish(compress_job(c, method="svd", ratio=0.3))

    def broken(*args, **kwargs):
        raise Exception("No such file or directory: /srv/secret/place")

    monkeypatch.setattr(callbacks, "export", broken)
    with caplog.at_level("ERROR", logger=callbacks.LOG.name):
        info = named(DOWNLOAD, c.predict(api_name="/export", run_box=None))["download_info"]
    assert "could not be written" in info and "/srv" not in info and "expired" not in info
    assert any("download failed" in r.message for r in caplog.records)


def test_zero_shot_panel_evaluates_both_models(app, shared_data):
    c = client(app)
    finish(compress_job(c))
    outputs = [named(ZERO_SHOT, out)
               for out in c.submit(api_name="/zero_shot", run_box=None, tasks=["piqa"], limit=10)]
    last = outputs[-1]
    assert last["zero_status"].startswith("Done") and last["zero_table"]["data"][0][0] == "piqa"
    bars = json.loads(last["zero_plot"]["plot"])["data"]
    assert all("%" in cell for cell in last["zero_table"]["data"][0][1:])
    assert [b["name"] for b in bars] == ["original", "compressed"]


def test_an_uploaded_calibration_file_is_recorded_by_its_name_only():
    from types import SimpleNamespace

    from svd_explorer.ui.callbacks import without_server_paths

    path = "/tmp/gradio/0f3a/my notes.txt"
    record = SimpleNamespace(config={"calib": path}, compression=SimpleNamespace(calibration={"source": path}))
    without_server_paths(record)
    assert record.config["calib"] == record.compression.calibration["source"] == "my notes.txt"


def test_the_download_offers_the_factors_and_a_merged_checkpoint_each_with_its_size(app, tiny_folder):
    c = client(app)
    finish(compress_job(c, method="svd", ratio=0.3))
    factors = named(DOWNLOAD, c.predict(api_name="/export", run_box=None, download_layout="factors"))
    merged = named(DOWNLOAD, c.predict(api_name="/export", run_box=None, download_layout="merged"))
    assert "bfloat16 factors" in factors["download_info"] and "merged dense" in merged["download_info"]
    with zipfile.ZipFile(factors["model_file"]) as z:
        assert {"modeling_svd_explorer.py", "manifest.json", "README.md"} <= set(z.namelist())
    with zipfile.ZipFile(merged["model_file"]) as z:
        assert "svd_explorer.json" in z.namelist() and "manifest.json" not in z.namelist()
    with pytest.raises(Exception, match="not in the list of choices"):      # a stranger's value never reaches us
        c.predict(api_name="/export", run_box=None, download_layout="../../etc")
    assert callbacks.prepare_download(app.store, "nobody", None, "../../etc")["download_info"] == \
        "Run a compression first."


def test_runs_measured_on_different_texts_are_told_apart(recorded):
    a = recorded["saes-svd"] | {"evaluation": {"description": "wikitext: 8 windows", "windows": 8, "seq_len": 256},
                                "ppl_original": 51.6}
    b = recorded["ressvd"] | {"evaluation": {"description": "self: 2 windows", "windows": 2, "seq_len": 64},
                              "ppl_original": 75.8}
    fig = plots.comparison_figure([a, b])
    originals = [t for t in fig.data if t.name.startswith("original")]
    assert sorted(t.y[0] for t in originals) == [51.6, 75.8]            # one original point per evaluation set
    assert "not comparable" in fig.layout.title.text and "8 × 256" in fig.layout.title.text
    same = plots.comparison_figure([a, a | {"method": "svd"}])
    assert [t.name for t in same.data].count("original") == 1 and "not comparable" not in same.layout.title.text
