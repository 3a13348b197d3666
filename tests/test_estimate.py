"""The whole run's estimate: a prior from measured runs scaled by the work asked for, refined by phase."""
import time

import pytest

from svd_explorer.run import estimate
from svd_explorer.run.worker import Job
from svd_explorer.ui import texts


def record(method="svd-llm", allocation="auto", ratio=0.2, params=1000, calib=16, seq=256, evals=8,
           refine=None, calib_text="BoolQ passages", **timings):
    return {"method": method, "ratio": ratio, "params_before": params, "refine": refine,
            "config": {"allocation": allocation, "calib_samples": calib, "seq_len": seq, "eval_windows": evals,
                       "dev_windows": 0, "refine_steps": 100, "refine_batch": 1, "cost": "cost" in timings},
            "calibration": {"description": calib_text}, "evaluation": {"description": "wikitext test"},
            "timings": {"loading": 0.0, **timings}}


def request(calib=16, seq=256, evals=8, refine="off", sampled=0, loaded=True, cost=False):
    config = {"calib_samples": calib, "seq_len": seq, "eval_windows": evals, "refine": refine, "refine_steps": 100,
              "refine_batch": 1, "cost": cost}
    return estimate.work(config, sampled, loaded)


def test_the_prior_scales_the_most_alike_run_by_the_work_asked_for():
    measured = [estimate.Measured.of(record(statistics=10.0, compression=20.0, evaluation=4.0)),
                estimate.Measured.of(record(method="svd", compression=2.0, evaluation=40.0))]
    same = estimate.prior("svd-llm", "auto", 0.2, 1000, request(), measured)
    assert same == pytest.approx({"statistics": 10.0, "compression": 20.0, "evaluation": 4.0})
    double = estimate.prior("svd-llm", "auto", 0.3, 2000, request(calib=32, evals=4), measured)
    assert double == pytest.approx({"statistics": 40.0, "compression": 80.0, "evaluation": 4.0})


def test_a_run_of_the_same_model_comes_first():
    """Per parameter a model with a large vocabulary evaluates slower: its own run, not a likelier setting's;
    a method's own phase still comes from that method's run."""
    small = record(evaluation=4.0, compression=10.0, allocation="sensitivity")
    large = record(method="aa-svd", evaluation=40.0, compression=99.0)
    small["config"]["model"], large["config"]["model"] = "small", "large"
    measured = [estimate.Measured.of(small), estimate.Measured.of(large)]
    on_large = estimate.prior("svd-llm", "sensitivity", 0.2, 1000, request(), measured, "large")
    assert (on_large["evaluation"], on_large["compression"]) == (40.0, 10.0)
    assert estimate.prior("svd-llm", "sensitivity", 0.2, 1000, request(), measured, "small")["evaluation"] == 4.0


def test_a_method_phase_is_not_borrowed_but_a_shared_phase_is():
    """aa-svd computes no statistics of its own: no other method's statistics time is added to it; the
    loading, sampling and cost measured by another run are."""
    measured = [estimate.Measured.of(record(method="aa-svd", compression=30.0, refinement=60.0,
                                            refine={"steps": 100})),
                estimate.Measured.of(record(method="svd-llm", calib=16, evals=8, calib_text="self: 16 x 256",
                                            loading=12.0, text=40.0, statistics=10.0, compression=5.0, cost=20.0))]
    prior = estimate.prior("aa-svd", "auto", 0.2, 1000, request(refine="on", sampled=4096, loaded=False,
                                                                cost=True), measured)
    assert "statistics" not in prior
    assert prior == pytest.approx({"loading": 12.0, "text": 40.0, "compression": 30.0, "refinement": 60.0,
                                   "cost": 20.0})
    assert estimate.prior("svd", "auto", 0.2, 1000, request(), []) is None


def test_time_left_follows_the_phases_as_they_end():
    prior = {"text": 10.0, "statistics": 20.0, "compression": 30.0, "refinement": 30.0, "evaluation": 10.0}
    assert estimate.left(prior, {}, 0.0) == pytest.approx(100.0)
    assert estimate.left(prior, {}, 4.0) == pytest.approx(96.0)
    assert estimate.left(prior, {}, 50.0) == pytest.approx(90.0)         # a slow phase never eats the rest
    # text and statistics read back from a cache say nothing of the machine's speed ...
    assert estimate.left(prior, {"text": 0.1, "statistics": 1.0}, 0.0) == pytest.approx(70.0)
    # ... a compression twice as slow as estimated doubles what is left
    assert estimate.left(prior, {"text": 10.0, "statistics": 20.0, "compression": 60.0, "refinement": 60.0},
                         0.0) == pytest.approx(20.0)
    # compression and refinement run together, and the pipeline's own extrapolation replaces them
    assert estimate.left(prior, {"text": 10.0, "statistics": 20.0}, 25.0) == pytest.approx(45.0)
    assert estimate.left(prior, {"text": 10.0, "statistics": 20.0}, 25.0, pipeline_left=5.0) == pytest.approx(15.0)
    assert estimate.left(prior, dict.fromkeys(prior, 1.0), 0.0) == 0.0
    assert estimate.speed(prior, {"compression": 1e6}) == estimate.SPEED_BOUNDS[1]


def test_the_status_line_carries_the_estimate_from_the_first_second():
    job = Job("a", "compress")
    job.estimate = {"text": 10.0, "compression": 50.0}
    assert "this run takes about 60 s here" in texts.job_status(job, 0, None)
    job.status, job.started = "running", time.time()
    job.emit("status", "preparing the calibration text")
    assert "about 60 s left of about 60 s" in texts.job_status(job, 0, None)
    job.emit("phase", {"name": "text", "seconds": 10.0})
    assert "about 50 s left" in texts.job_status(job, 0, None)
    assert "Expected about 60 s" in texts.expected_when_asked(job)
    job.estimate = None
    assert "left" not in texts.job_status(job, 0, None) and texts.expected_when_asked(job) == ""


def test_the_page_starts_from_the_gallery_runs_and_its_reference_run():
    """A gallery's entries and its reference run (the page's default from a clone without data: loading,
    sampled text, serving cost) are what the page's estimate starts from; without a gallery, nothing."""
    from svd_explorer.study.gallery import Entry, Gallery
    from svd_explorer.ui.state import measured_runs
    entry = Entry("svd-llm/auto/0.2", "gallery", record(statistics=10.0, compression=20.0), [])
    reference = record(calib_text="self: 16 x 256", loading=15.0, text=40.0, statistics=10.0, compression=20.0,
                       cost=18.0)
    measured = measured_runs(Gallery({"reference": reference}, [], [], [entry]))
    assert len(measured) == 2 and measured_runs(None) == []
    prior = estimate.prior("svd-llm", "auto", 0.2, 1000, request(sampled=4096, loaded=False, cost=True), measured)
    assert prior == pytest.approx({"loading": 15.0, "text": 40.0, "statistics": 10.0, "compression": 20.0,
                                   "cost": 18.0})


def test_an_allocation_search_is_estimated_from_runs_of_that_allocation_only():
    searched = record(allocation="sensitivity", method="svd", compression=5.0)
    searched["timings"]["allocation"] = 40.0
    measured = [estimate.Measured.of(searched), estimate.Measured.of(record(compression=20.0))]
    prior = estimate.prior("svd-llm", "sensitivity", 0.2, 1000, request(), measured)
    assert prior["allocation"] == pytest.approx(40.0) and prior["compression"] == pytest.approx(20.0)
    assert "allocation" not in estimate.prior("svd-llm", "zero-sum", 0.2, 1000, request(), measured)


def test_a_setting_measured_without_a_search_is_not_given_another_methods_search_time():
    """fwsvd measures its gradients in the allocation phase; ressvd at its own allocation has none: its
    estimate must not borrow fwsvd's."""
    fwsvd = record(method="fwsvd", compression=5.0)
    fwsvd["timings"]["allocation"] = 20.0
    measured = [estimate.Measured.of(fwsvd), estimate.Measured.of(record(method="ressvd", compression=5.0))]
    assert "allocation" not in estimate.prior("ressvd", "auto", 0.2, 1000, request(), measured)
    assert estimate.prior("fwsvd", "auto", 0.2, 1000, request(), measured)["allocation"] == pytest.approx(20.0)
