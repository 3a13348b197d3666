"""The gallery the page opens on, the starting points, and identical requests sharing one run."""
import gzip
import json
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import GALLERY_PROMPTS

from svd_explorer.compress.allocation import ALLOCATIONS
from svd_explorer.study import gallery
from svd_explorer.ui import callbacks, starts, texts
from svd_explorer.ui.layout import FIGURES, START
from svd_explorer.ui.limits import Limits
from svd_explorer.ui.state import GALLERY_PREFIX, Store


def test_a_gallery_keeps_every_run_and_each_raw_spectrum_once(tiny_gallery):
    read = gallery.read(tiny_gallery)
    assert [e.name for e in read.entries][:3] == ["svd/auto/0.2", "asvd/auto/0.2", "svd-llm/auto/0.2"]
    body = json.loads(gzip.decompress(tiny_gallery.read_bytes()))
    assert all("spectrum_raw" not in layer for e in body["entries"] for layer in e["result"]["layers"])
    first, other = read.entries[0].result["layers"][0], read.entries[2].result["layers"][0]
    assert first["spectrum_raw"] == other["spectrum_raw"] and len(first["spectrum_raw"]) == min(first["shape"])
    assert first["spectrum_truncated"] != other["spectrum_truncated"]        # svd-llm truncates a whitened matrix
    assert read.answer(read.entries[1], " Tell me ") == ("original says Tell me", "asvd 0.2 says Tell me")
    assert read.answer(read.entries[1], "something else") is None


def test_spectra_are_rounded_to_four_digits():
    assert gallery.rounded([0.123456789, 12345.678, 1e-9 / 3]) == [0.1235, 12350.0, 3.333e-10]


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.unlink(), "no precomputed gallery"),
    (lambda p: p.write_bytes(b"not gzip"), "could not be read"),
    (lambda p: p.write_bytes(gzip.compress(b'{"version": 99}')), f"not a version-{gallery.VERSION} gallery"),
    (lambda p: p.write_bytes(gzip.compress(json.dumps({"version": gallery.VERSION, "made": {}, "prompts": ["a"],
                                                       "original_answers": {"m": ["b"]}, "raw_spectra": {},
                                                       "entries": [{"name": "x"}]}).encode())), "damaged"),
])
def test_a_missing_or_damaged_gallery_is_one_line_and_the_page_still_works(tmp_path, tiny_gallery, tiny_folder,
                                                                          damage, words):
    path = tmp_path / "gallery.json.gz"
    path.write_bytes(tiny_gallery.read_bytes())
    damage(path)
    with pytest.raises(gallery.GalleryError, match=words):
        gallery.read(path)
    store = Store(str(tiny_folder), Limits.of(True), tmp_path / "dl", preload=False, gallery_path=path)
    opened = callbacks.opened(store, "s")
    assert words in opened["status"] and "\n" not in opened["status"] and not opened["run_box"]["choices"]
    shown = callbacks.show(store, "s", None, None, None, "rel_error", "ppl_compressed")
    assert "Run a compression" in shown["metrics"]


def test_a_gallery_larger_than_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "MAX_BYTES", 10)
    with pytest.raises(gallery.GalleryError, match="more than"):
        gallery.pack(tmp_path / "g.json.gz", {}, ["a"], {"m": ["b"]}, [], None)


@pytest.fixture
def store(tiny_folder, tiny_gallery, tmp_path):
    return Store(str(tiny_folder), Limits.of(True, models=(str(tiny_folder),)), tmp_path, preload=False,
                 gallery_path=tiny_gallery)


def test_the_page_opens_on_the_gallery_default_with_every_figure_drawn(store):
    opened = callbacks.opened(store, "visitor")
    assert opened["run_box"]["value"] == GALLERY_PREFIX + "svd-llm/auto/0.2" and "precomputed" in opened["status"]
    beside = opened["beside_box"]["value"]
    assert beside == [GALLERY_PREFIX + "svd/auto/0.2", GALLERY_PREFIX + "asvd/auto/0.2"]   # the others at its budget
    shown = callbacks.show(store, "visitor", opened["run_box"]["value"], 0, None, "rel_error", "ppl_compressed",
                           beside)
    assert set(FIGURES) <= set(shown)
    assert "Precomputed (gallery)" in shown["metrics"] and "tests/conftest.py" in shown["metrics"]
    for name in ("spectrum_plot", "depth_plot", "heatmap_plot", "rank_plot", "compare_plot"):
        assert shown[name].data, name                                      # pictures, not placeholders
    assert len(shown["depth_plot"].data) == 3 and len(shown["history"]) == 3
    compared = {t.name for t in shown["compare_plot"].data}
    assert {"svd", "asvd", "svd-llm"} <= compared
    assert shown["cost_table"].startswith("Measured on")                 # this gallery measured it; one that
    skipped = SimpleNamespace(entry=object(), result={"cost": {}})        # did not says why, and what to do
    assert texts.cost_markdown(callbacks._with_cost_note(skipped)) == texts.GALLERY_COST


def test_a_gallery_run_answers_the_example_prompts_from_the_file(store):
    run_id = GALLERY_PREFIX + "svd/auto/0.2"
    out = next(callbacks.generate(store, "v", run_id, GALLERY_PROMPTS[0], 64, 0))
    assert out["original_out"] == "original says Hi" and out["compressed_out"] == "svd 0.2 says Hi"
    assert "Stored answers of a precomputed run" in out["generate_note"]
    other = next(callbacks.generate(store, "v", run_id, "Write a poem", 64, 0))
    assert "example prompts" in other["compressed_out"]
    assert "no model" in next(callbacks.zero_shot(store, "v", run_id, ["piqa"], 10))["zero_status"]
    info = callbacks.prepare_download(store, "v", run_id)
    assert "precomputed gallery run" in info["download_info"] and info["json_file"].endswith(".json")
    assert json.loads(open(info["json_file"]).read())["method"] == "svd"


def test_a_starting_point_sets_the_controls_and_says_what_to_look_at(store):
    offered = starts.available(store.gallery)
    assert [s.title for s in offered] == ["Whitening against plain SVD"]     # the others need runs not in it
    out = callbacks.start(store, "v", offered[0].title)
    assert (out["method"], out["allocation"], out["ratio"]) == ("svd-llm", "auto", 0.2)
    assert out["run_box"]["value"] == GALLERY_PREFIX + "svd-llm/auto/0.2" and "Spectra" in out["start_info"]
    assert out["status"].startswith("Showing **gallery · svd-llm")        # the status line names the run shown
    assert set(out) <= set(START)                                          # every part reaches the page
    assert "needs the gallery" in callbacks.start(store, "v", "The ACES search")["start_info"]


def test_a_gallery_runs_options_reach_the_page_so_compress_runs_that_setting():
    """A sensitivity run made with measure=0.5, score=kl: the page's controls took only method, allocation and
    ratio, so Compress ran ASVD's six-fraction search instead (and its estimate borrowed the faster run's)."""
    entry = gallery.Entry("svd-llm/sensitivity/0.2", "svd-llm + sensitivity, 20%", {
        "method": "svd-llm", "ratio": 0.2, "config": {"allocation": "sensitivity", "options": {},
                                                     "allocation_options": {"measure": 0.5, "score": "kl"}}}, [])
    out = callbacks.setting_controls(entry)
    assert out["opt__sensitivity__measure"] == "0.5" and out["opt__sensitivity__score"] == "kl"   # as its box shows it
    assert out["opt__sensitivity__fractions"] == "0.4,0.5,0.6,0.7,0.8,0.9"       # left at its default, so reset
    page = {"method": "svd-llm", "allocation": "sensitivity", **out}
    assert callbacks.chosen_options(ALLOCATIONS, "sensitivity", page)["measure"] == "0.5"
    saes = gallery.Entry("saes-svd/auto/0.2", "saes", {"method": "saes-svd", "ratio": 0.2, "config": {
        "allocation": "auto", "options": {"beta": 0.4}}}, [])
    fixed = callbacks.setting_controls(saes)
    assert fixed["fix__saes_svd__beta"] is True and fixed["opt__saes_svd__beta"]["value"] == 0.4
    assert not any(k.startswith("opt__sensitivity") for k in fixed)              # 'auto' sends no allocation options
    typed = gallery.Entry("ressvd/auto/0.2", "r", {"method": "ressvd", "ratio": 0.2, "config": {
        "allocation": "auto", "options": {"residual": "off"}}}, [])                # as a command line records it
    assert callbacks.setting_controls(typed)["opt__ressvd__residual"] is False
    assert set(out) | set(fixed) <= set(START)


def gallery_bench():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gallery as bench
    return bench


def test_a_second_models_runs_answer_with_its_own_original_and_its_start_sets_the_model(tiny_gallery, tmp_path,
                                                                                       monkeypatch):
    body = json.loads(gzip.decompress(tiny_gallery.read_bytes()))
    other = json.loads(json.dumps(body["entries"][2]))                    # svd-llm/auto/0.2, as another model's
    other["result"]["config"]["model"] = other["result"]["model"] = "second-model"
    other["name"] = gallery.entry_name("svd-llm", "auto", 0.2, "second-model")
    first = body["entries"][2]["result"]["config"]["model"]                # its raw spectra are kept per model
    body["raw_spectra"] |= {k.replace(first + ":", "second-model:", 1): v for k, v in body["raw_spectra"].items()}
    body["entries"].append(other)
    body["original_answers"]["second-model"] = ["second says Hi", "second says Tell me"]
    path = tmp_path / "two.json.gz"
    path.write_bytes(gzip.compress(json.dumps(body).encode()))
    store = Store("src", Limits.of(True, models=("second-model",)), tmp_path / "dl", preload=False, gallery_path=path)
    assert other["name"] == "second-model/svd-llm/auto/0.2"
    assert store.gallery.answer(store.gallery.entry(other["name"]), "Hi")[0] == "second says Hi"
    assert store.gallery.answer(store.gallery.entry("svd/auto/0.2"), "Hi")[0] == "original says Hi"
    assert GALLERY_PREFIX + other["name"] not in callbacks.opened(store, "v")["beside_box"]["value"]   # one model
    monkeypatch.setattr(starts, "STARTS", (starts.Start("Second", other["name"], ("svd/auto/0.2",), "look"),))
    out = callbacks.start(store, "v", "Second")
    assert (out["model"], out["method"], out["ratio"]) == ("second-model", "svd-llm", 0.2)
    unlisted = Store("src", Limits.of(True, models=("src",)), tmp_path / "dl2", preload=False, gallery_path=path)
    assert "model" not in callbacks.start(unlisted, "v", "Second")      # a Space's box takes only its list
    del body["original_answers"]["second-model"]
    path.write_bytes(gzip.compress(json.dumps(body).encode()))
    with pytest.raises(gallery.GalleryError, match="no original answers"):
        gallery.read(path)


def test_the_first_run_is_chosen_on_development_text_and_time_alone():
    bench = gallery_bench()

    def run(name, ratio, dev, seconds, allocation="auto", model=bench.MODEL):
        return {"name": name, "result": {"ratio": ratio, "dev_ppl": dev, "dev_ppl_original": 10.0, "model": model,
                                         "timings": {"total": seconds}, "config": {"allocation": allocation}}}
    runs = [run("a", 0.1, 15, 60), run("b", 0.2, 19, 60), run("c", 0.2, 16, 60), run("slow", 0.3, 12, 400),
            run("bad", 0.4, 30, 60), run("searched", 0.3, 11, 60, "sensitivity"), run("gemma", 0.3, 12, 60,
                                                                                    model=bench.SECOND)]
    assert bench.default_entry(runs) == "c"          # most compressing that fits; ties go to the lower dev ppl
    # (and of the default model: the page opens on it)
    assert bench.default_entry([run("bad", 0.4, 30, 60)]) is None


def test_every_starting_point_names_runs_the_gallery_bench_makes():
    bench = gallery_bench()
    from svd_explorer.compress.methods import REGISTRY
    made = {gallery.entry_name(m, a, r) for m in REGISTRY for a in bench.ALLOCATIONS for r in bench.RATIOS}
    made |= {gallery.entry_name(m, a, r, bench.SECOND) for m in bench.SECOND_METHODS for a in bench.ALLOCATIONS
             for r in bench.SECOND_RATIOS}
    for point in starts.STARTS:
        assert {point.shown, *point.beside} <= made, point.title


# ---------------------------------------------------------------------------------------------
# A classroom: identical requests, one compression
# ---------------------------------------------------------------------------------------------

def test_identical_requests_share_one_job_and_a_leaver_stops_only_their_own_following(tmp_path):
    store = Store("src", Limits.of(True), tmp_path, preload=False)
    gate, calls = threading.Event(), []

    def work(job):
        calls.append(1)
        while not gate.is_set() and not job.cancel.is_set():
            time.sleep(0.01)
        return "result"

    first = store.jobs.submit("a", "compress", work, key="same")
    assert store.jobs.submit("b", "compress", work, key="same") is first
    other = store.jobs.submit("c", "compress", work, key="different")
    assert other is not first and first.followers == {"a", "b"}
    store.jobs.leave(first, "a")
    assert not first.cancel.is_set() and store.jobs.active("a") is None and store.jobs.active("b") is first
    gate.set()
    assert first.wait(5) and other.wait(5) and first.result == "result" and len(calls) == 2
    store.jobs.discard(first, "b")
    assert first.id not in store.jobs.jobs
    lonely = store.jobs.submit("d", "compress", lambda job: time.sleep(5), key="k")
    store.jobs.leave(lonely, "d")
    assert lonely.cancel.is_set()                             # nobody follows it any more: it stops


def test_the_only_follower_pressing_stop_is_told_the_run_stopped_not_that_it_goes_on(tmp_path):
    """A job that checks its stop flag every 1.5 s: the status said "it goes on for the other visitors", though
    there were none and the job was being cancelled."""
    store = Store("src", Limits.of(True), tmp_path, preload=False)

    def work(job):
        while True:
            time.sleep(0.5)
            if job.cancel.is_set():
                raise callbacks.Cancelled()

    job = store.jobs.submit("a", "compress", work, key="k")
    while job.status != "running":
        time.sleep(0.01)
    assert callbacks.stop(store, "a")["status"].startswith("Stopping")
    out = callbacks._finish(store, "a", job, None, "label", "k")
    assert out["status"].startswith("Stopped") and job.id not in store.jobs.jobs


def test_a_finished_identical_request_is_answered_at_once_with_the_shared_model(tmp_path):
    store = Store("src", Limits.of(True, models_kept=1), tmp_path, preload=False)
    model = object()
    first = store.add("a", "#1 run", "src", {"ratio": 0.2}, model, None, key="k")
    assert store.finished("k") is first and store.finished("other") is None
    out = callbacks._shared_result(store, "b", first, "#1 run")
    assert out["status"].startswith("Done at once") and store.get("b", out["run_box"]["value"]).model is model
    assert first.model is model                     # one model shared by two runs counts once against the cap


def test_the_page_opens_with_the_controls_and_options_of_the_gallery_default(tiny_gallery, tiny_folder, tmp_path):
    from svd_explorer.ui.layout import build_demo

    body = json.loads(gzip.decompress(tiny_gallery.read_bytes()))
    body["default"] = "asvd/auto/0.2"
    path = tmp_path / "gallery.json.gz"
    path.write_bytes(gzip.compress(json.dumps(body).encode()))
    demo = build_demo(default_model=str(tiny_folder), preload=False, limits=Limits.of(False), gallery=path)
    named = demo.components
    assert (named["method"].value, named["allocation"].value, named["ratio"].value) == ("asvd", "auto", 0.2)
    assert named["group__asvd"].visible and not named["group__svd-llm"].visible   # asvd's options, not svd-llm's


def test_a_new_download_waits_while_prepared_ones_fill_their_bound(tmp_path):
    """Identical runs shared by many visitors each had their own zip of the same model: disk without a bound."""
    store = Store("src", Limits.of(True, downloads_mb=1), tmp_path / "downloads", preload=False)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "old.zip").write_bytes(b"0" * (2 << 20))
    run = SimpleNamespace(model=object(), id="r1", slug="r1", result={}, entry=None)
    folder = tmp_path / "downloads" / "run-r1"
    folder.mkdir()
    out = callbacks._write_download(store, run, folder, False, "factors")
    assert "holds 1 MB of prepared downloads" in out["download_info"] and out["model_file"] is None
