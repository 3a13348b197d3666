"""What the page does when a visitor acts: plain functions of (store, session, named inputs) that return
{name: value} for the named outputs (layout.py turns names into components). No linear algebra here:
the engine computes, the worker runs it, plots.py draws."""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from ..cache.statistics import size_limit
from ..compress.allocation import ALLOCATIONS, allocation_for
from ..compress.budget import budget_summary, embedding_counts
from ..compress.methods import REGISTRY, FigureTab
from ..compress.pipeline import Cancelled, cancel_check
from ..errors import ConfigError, ModelLoadError
from ..figures import plots
from ..files import cache_dir, folder_bytes
from ..model.blocks import count_parameters, find_layout, meta_model
from ..model.hub import DEFAULT_MODEL, EMBEDDED, hub_reachable
from ..model.loading import read_config
from ..model.lowrank import BudgetError, check_ratio
from ..model.offload import Placement
from ..run.config import with_preset
from ..run.engine import export, keeps_decompositions
from ..run.engine import run as run_engine
from ..run.engine import zero_shot as engine_zero_shot
from ..run.plan import Plan, plan
from ..run.timings import describe
from ..run.worker import Busy
from ..study.comparison import ComparisonError, aggregate, read_folder, read_zip
from ..text.generation import side_by_side
from ..text.sources import DataError, check_source, data_dir, resolve_evaluation
from ..text.zero_shot import available_tasks
from . import starts, texts
from .state import GALLERY_PREFIX, Store

LIVE = "live"                       # the run box's value while a run is in progress
TICK = 0.5                          # seconds between two updates of a followed job
LOG = logging.getLogger(__name__)
PROBLEMS = (ConfigError, ModelLoadError, DataError, ValueError, Busy)


class Skip:
    """Marks an output left as it is (layout.py turns it into gr.skip())."""


SKIP = Skip()


# ---------------------------------------------------------------------------------------------
# Reading the page's controls
# ---------------------------------------------------------------------------------------------

def option_key(kind: str, owner: str, option: str) -> str:
    """The input name of an option control, e.g. opt__saes_svd__beta or fix__saes_svd__beta."""
    return f"{kind}__{owner.replace('-', '_')}__{option}"


def chosen_options(registry, owner: str, values: dict) -> dict:
    """The options of `owner` as the page holds them; an option whose 'fix' box is unticked is left unset."""
    out = {}
    for option in registry[owner].options:
        if option.unset is not None and not values.get(option_key("fix", owner, option.name)):
            continue
        value = values.get(option_key("opt", owner, option.name))
        if value is not None and value != "":
            out[option.name] = value
    return out


def option_controls() -> list[str]:
    """The names of every option control the page holds (each method's and allocation's, 'fix' boxes too)."""
    return [option_key(kind, owner, o.name) for registry in (REGISTRY, ALLOCATIONS) for owner, cls in registry.items()
            for o in cls.options for kind in (("opt", "fix") if o.unset is not None else ("opt",))]


def setting_controls(entry) -> dict:
    """The option controls set to a gallery run's options, the ones it left at their default included, so that
    Compress then runs that setting (an option chosen automatically stays unfixed unless the run fixed it)."""
    method, allocation, _ = entry.setting
    config = entry.result.get("config", {})
    out = _owner_controls(REGISTRY, method, config.get("options") or {})
    if allocation != "auto":
        out |= _owner_controls(ALLOCATIONS, allocation, config.get("allocation_options") or {})
    return out


def _owner_controls(registry, owner: str, given: dict) -> dict:
    out = {}
    for option in registry[owner].options:
        value = _typed(option, given.get(option.name, option.default), owner)
        if option.unset is not None:
            out[option_key("fix", owner, option.name)] = value is not None
            value = {"__type__": "update", "value": value, "interactive": value is not None}
        out[option_key("opt", owner, option.name)] = value
    return out


def _typed(option, value, owner: str):
    """A recorded option value as its control shows it (a run from the command line records 'off', '0.7')."""
    try:
        return option.coerce(value, owner)
    except ValueError:
        return option.default


def page_plan(store: Store, v: dict) -> Plan:
    """The checked plan of the run the page describes; raises ConfigError naming the control."""
    limits = store.limits
    limits.check_values(calib_samples=v["calib_samples"], seq_len=v["seq_len"], eval_windows=v["eval_windows"],
                        refine_steps=v["refine_steps"], refine_batch=v["refine_batch"])
    source = (v["model"] or "").strip()
    limits.check_model(source)
    _known_method(v["method"])
    allocation = v["allocation"] or "auto"
    calib = v["calib_file"] or v["calib"]
    windows = int(v["eval_windows"] or 0)
    config = with_preset(
        "demo", model=source, method=v["method"], ratio=_ratio(v["ratio"]),
        options=chosen_options(REGISTRY, v["method"], v), allocation=allocation,
        allocation_options={} if allocation == "auto" else chosen_options(ALLOCATIONS, allocation, v),
        refine=v["refine"], refine_steps=int(v["refine_steps"]), refine_lr=_number(v["refine_lr"], "refine lr"),
        refine_batch=int(v["refine_batch"]), calib=calib, calib_samples=int(v["calib_samples"]),
        seq_len=int(v["seq_len"]), eval_source="auto" if windows else "none", eval_windows=windows,
        stats_cache="off" if limits.public and v["calib_file"] else None)     # a stranger's file is never kept
    return plan(config, limits.token)


def _ratio(value) -> float:
    try:
        return check_ratio(_number(value, "ratio"))
    except ConfigError:
        raise ConfigError("type a ratio between 0 and 1 (the share of the projections' parameters removed)",
                          "ratio") from None
    except BudgetError as err:
        raise ConfigError(str(err), "ratio") from None


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}"[:200], name.replace(" ", "_")) from None
    if number != number:
        raise ConfigError(f"{name} must be a number, got NaN", name.replace(" ", "_"))
    return number


def _known_method(name) -> str:
    if name not in REGISTRY:
        raise ConfigError(f"choose a method: {', '.join(REGISTRY)}")
    return name


def message(err: Exception) -> str:
    """One line for the page, never a traceback."""
    return " ".join(str(err).split()) or type(err).__name__


def beside(err: Exception) -> dict:
    """The message beside the field at fault: the ratio's, the model's, or none (then the status says it)."""
    field = "ratio" if isinstance(err, BudgetError) else getattr(err, "field", None)
    if field is None and isinstance(err, ModelLoadError):
        field = "model"
    return {f"{field}_message": f"⚠️ {message(err)}"} if field in ("ratio", "model") else {}


# ---------------------------------------------------------------------------------------------
# Before anything runs
# ---------------------------------------------------------------------------------------------

def layout_of(store: Store, source: str):
    """(layout, parameter count, embedding counts) of a model: from memory when loaded, else from its config
    (no weights)."""
    cached = store.models.peek(source)
    model = cached.model if cached is not None else meta_model(read_config(source, token=store.limits.token))
    return find_layout(model), count_parameters(model), embedding_counts(model)


def budget(store: Store, session: str, **v) -> dict:
    """The budget table and the messages beside the model and ratio fields."""
    out = {"budget": "", "ratio_message": "", "model_message": ""}
    try:
        ratio = _ratio(v["ratio"])
    except ConfigError as err:
        return out | {"ratio_message": f"⚠️ {message(err)}", "budget": "Type a ratio to see the budget."}
    try:
        store.limits.check_model(v["model"])
        layout, total, embeddings = layout_of(store, (v["model"] or "").strip())
    except PROBLEMS as err:
        return out | {"model_message": f"⚠️ {message(err)}", "budget": "The budget appears once the model is valid."}
    try:
        method = REGISTRY[_known_method(v["method"])](**chosen_options(REGISTRY, v["method"], v))
        name = v["allocation"] or "auto"
        allocation = allocation_for(method, name, {} if name == "auto" else chosen_options(ALLOCATIONS, name, v))
        summary = budget_summary(layout, total, ratio, method, allocation, embeddings)
    except PROBLEMS as err:
        return out | beside(err) | {"budget": f"The budget appears once the options are valid: {message(err)}"}
    return out | {"budget": texts.budget_markdown(summary, v["method"])}


def method_changed(store: Store, session: str, method: str, allocation: str) -> dict:
    if method not in REGISTRY:
        return {"method_info": f"Choose a method: {', '.join(REGISTRY)}."}
    return {"method_info": texts.method_markdown(method), "allocation_info": texts.allocation_markdown(
        allocation or "auto", method)} | {f"group__{name}": _visible(name == method) for name in REGISTRY}


def allocation_changed(store: Store, session: str, method: str, allocation: str) -> dict:
    return {"allocation_info": texts.allocation_markdown(allocation or "auto", method)} | \
        {f"agroup__{name}": _visible(name == allocation) for name in ALLOCATIONS}


def _visible(flag: bool) -> dict:
    return {"__type__": "update", "visible": flag}


def upload_checked(store: Store, session: str, calib_file) -> dict:
    """Say at once what is wrong with an uploaded calibration file (by its own name, never the server's path)."""
    if not calib_file:
        return {"calib_file_message": ""}
    name = Path(calib_file).name
    try:
        check_source(calib_file, "train")
    except DataError as err:
        return {"calib_file_message": f"⚠️ {message(err)}"}
    return {"calib_file_message": f"✓ {name} ({texts.size(Path(calib_file).stat().st_size)}) will be the "
                                  f"calibration text."}


def disk(store: Store, session: str) -> dict:
    """What the statistics cache holds on this server's disk, and its bound (the page says it before a run
    writes there)."""
    return {"disk_info": texts.disk_markdown(folder_bytes(cache_dir("stats")), size_limit(),
                                             None if store.limits.public else str(cache_dir("stats")),
                                             _keeps_decompositions(DEFAULT_MODEL))}


def _keeps_decompositions(model: str) -> bool | None:
    """Whether a run of `model` stores its SVDs under the cache's bound now (None: its config cannot be read)."""
    dense = _dense_params(model)
    return None if dense is None else keeps_decompositions(dense)


@functools.cache
def _dense_params(model: str) -> int | None:
    try:
        return find_layout(meta_model(read_config(model))).dense_params
    except ModelLoadError:
        return None


def calibration_choices() -> list[tuple[str, str]]:
    choices = []
    if data_dir() is not None:
        choices.append(("Wikipedia paragraphs (BoolQ passages, offline)", "boolq"))
    if hub_reachable():
        choices.append(("WikiText-2 train (Hugging Face hub)", "wikitext2"))
    choices.append(("Text sampled from the model itself (data-free)", "self"))
    return choices


def evaluation_label() -> str:
    """The evaluation slider says which text will really be used (decided before the run)."""
    source = resolve_evaluation("auto")
    if source == "wikitext2":
        where = "hub" if hub_reachable() else "local copy"
        return f"evaluation windows: WikiText-2 test ({where}); 0 = none"
    return "evaluation windows: text sampled from the model (WikiText-2 is not available here); 0 = none"


def task_choices(store: Store) -> tuple[list[str], str]:
    """The zero-shot tasks that can run here, and a sentence saying why the others cannot."""
    tasks = available_tasks()
    if not tasks:
        return [], ("No zero-shot task can run here: their files are not on this machine and the Hugging Face hub "
                    "is not reachable.")
    missing = [t for t in ["piqa", "arc_easy", "arc_challenge", "boolq", "openbookqa", "winogrande",
                           "lambada_openai", "hellaswag"] if t not in tasks]
    note = f"Tasks offered: those whose data is here ({', '.join(sorted(set(tasks.values())))})."
    if missing:
        note += f" Not available: {', '.join(missing)} (no local file and no hub)."
    return list(tasks), note


# ---------------------------------------------------------------------------------------------
# Following a job: the one loop every long action uses
# ---------------------------------------------------------------------------------------------

def follow(store: Store, session: str, job):
    """Yield the job every TICK seconds until it ends, then once more. If the visitor goes away (the
    generator is closed), they stop following it (the job stops when nobody else follows it)."""
    try:
        while not job.done and session in job.followers:
            yield job
            time.sleep(TICK)
        yield job
    except GeneratorExit:
        store.jobs.leave(job, session, "the page was closed")
        raise


STOP_WAIT = 30.0     # seconds a stopped job is waited for, so the status says it stopped (it checks every step)


def ended(job) -> str | None:
    """The status line of a job that did not finish, or None when it did."""
    if job.status == "cancelled":
        return f"Stopped ({job.stop_reason or 'you pressed Stop'}) after {job.elapsed:.0f} s. Nothing was kept; " \
               f"the app is ready for another run."
    if job.status == "failed":
        return f"Error: {job.error}"
    return None


def stop(store: Store, session: str, status: str | None = None) -> dict:
    """Stop the session's job. With none running and a line on the page that says how the last attempt
    ended (done, failed, refused or stopped), the line stays: overwriting it would hide that."""
    job = store.jobs.active(session)
    if job is None:
        return {"status": SKIP if status and status != texts.READY else "Nothing is running."}
    store.jobs.leave(job, session)
    if job.followers:
        return {"status": "You stopped following this run; it goes on for the other visitors who asked for it."}
    return {"status": "Stopping… (the job ends at its next step, within seconds)"}


# ---------------------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------------------

def load_interruptibly(store: Store, source: str, job):
    """The original model, loading in a helper thread so that Stop ends the job at once; an abandoned load
    still lands in the model cache for the next visitor."""
    job.emit("status", f"loading {source}")
    holder: dict = {}

    def load():
        try:
            holder["model"] = store.models.get(source, store.limits.token)
        except Exception as err:  # noqa: BLE001 - re-raised in the job
            holder["error"] = err

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    while thread.is_alive():
        if job.cancel.is_set():
            raise Cancelled("stopped while loading")
        thread.join(0.2)
    if "error" in holder:
        raise holder["error"]
    placement = holder["model"].placement or {}
    if placement:
        job.emit("status", f"placement: {Placement(**placement).sentence()}")
    return holder["model"]


def compress_work(store: Store, checked: Plan):
    def work(job):
        clock = time.time()
        lm = load_interruptibly(store, checked.config.model, job)
        job.emit("phase", {"name": "loading", "seconds": time.time() - clock})
        outcome = run_engine(checked, loaded=lm, emit=job.emit, cancel=job.cancel, keep_model=True,
                             measure_forward=False)
        return outcome.record, outcome.model, lm.tokenizer
    return work


def partial_result(job, method: str) -> dict:
    """The figures' input built from the events a running job has emitted so far."""
    layers = [d for _, k, d in job.events_since(0) if k == "projection"]
    blocks = [d for _, k, d in job.events_since(0) if k == "block"]
    return {"method": method, "layers": layers, "blocks": blocks,
            "depth_error": [{"block": b["block"], "rel_error": b["rel_error"],
                             "cosine_distance": b["cosine_distance"]} for b in blocks]}


def request_key(config) -> str:
    """What a visitor asked for, as text: two requests with equal keys get the same run."""
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def compress(store: Store, session: str, **v):
    """Validate, queue (or join an identical run), follow (with live figures), then show the finished run."""
    try:
        checked = page_plan(store, v)
        config, key = checked.config, request_key(checked.config)
        label = store.next_label(session, config.label())
        store.jobs.check_free(session)
        shared = store.finished(key)
        if shared is not None:
            yield _shared_result(store, session, shared, label)
            return
        job = store.jobs.submit(session, "compress", compress_work(store, checked), key=key)
        job.estimate = job.estimate or store.estimate(checked)
    except PROBLEMS as err:
        yield {"status": f"Error: {message(err)}"} | beside(err)
        return
    live = _run_choices(store, session) + [(f"{label} (running)", LIVE)]
    yield {"status": texts.job_status(job, store.jobs.position(job), None),
           "ratio_message": "", "model_message": "", "run_box": {"__type__": "update", "choices": live, "value": LIVE}}
    total, drawn = None, 0
    for _ in follow(store, session, job):
        total = total or _total_projections(job)
        partial = partial_result(job, config.method)
        yield _live_view(store, session, job, total, v, partial, len(partial["layers"]) > drawn)
        drawn = len(partial["layers"])
    yield _finish(store, session, job, config, label, key)


def _total_projections(job) -> int | None:
    start = next((data for _, kind, data in job.events_since(0) if kind == "start"), None)
    return len(start["plan"]) if start else None


def _shared_result(store: Store, session: str, shared, label: str) -> dict:
    """The same request finished for another visitor and its model is still held: this visitor gets it."""
    run = store.add(session, label, shared.source, shared.result, shared.model, shared.tokenizer, shared.record,
                    shared.key)
    return {"status": f"Done at once: another visitor asked for exactly this run "
                      f"{texts.duration(int(time.time() - shared.created))} ago and its result is shared; it was "
                      f"computed {_result_line(run.result, 0)}", "ratio_message": "", "model_message": "",
            "run_box": _choices_update(store, session, run.id)}


def _result_line(result: dict, seconds: float) -> str:
    """'in 96 s: text 3, compression 80, evaluation 13. Perplexity 34.2 → 51.0.'"""
    line = f"in {describe(result.get('timings')) or format(seconds, '.0f') + ' s'}."
    if result.get("ppl_compressed") is not None:
        line += f" Perplexity {result['ppl_original']:.1f} → {result['ppl_compressed']:.1f}."
    return line


def _live_view(store: Store, session: str, job, total, v, partial: dict, redraw: bool) -> dict:
    """The status every tick; the figures only when a projection finished since they were last drawn
    (redrawing three figures twice a second kept a 2-core Space's page too busy to show Stop at once)."""
    out = {"status": texts.job_status(job, store.jobs.position(job), total)}
    if redraw:
        last = partial["layers"][-1]
        others = [(x.label, x.result) for x in store.session_runs(session)][-4:]
        out |= {"spectrum_plot": plots.spectrum_figure(partial, last["block"], last["kind"]),
                "depth_plot": plots.depth_figure(others + [("this run", partial)],
                                                 v.get("depth_metric") or "rel_error"),
                "heatmap_plot": plots.error_heatmap(partial)}
    return out


def _finish(store: Store, session: str, job, config, label: str, key: str) -> dict:
    left = session not in job.followers
    alone = left and not job.followers
    if alone:                               # the last follower pressed Stop: the job is ending, say how it ended
        job.wait(STOP_WAIT)
    problem = ended(job) if not left or job.done else "Stopping… (the job ends at its next step)" if alone else \
        "You stopped following the run; it goes on for the other visitors who asked for it."
    store.jobs.discard(job, session if job.followers else None)
    if problem is not None:
        latest = store.get(session, None)
        return {"status": problem, "run_box": _choices_update(store, session, latest.id if latest else None)}
    record, model, tokenizer = job.result
    without_server_paths(record)
    result = record.to_dict()
    run = store.add(session, label, config.model, result, model, tokenizer, record, key)
    done = f"Done {_result_line(result, job.elapsed)}{texts.expected_when_asked(job)}"
    if job.session != session:
        done += " (An identical run another visitor asked for: one compression served you both.)"
    return {"status": done, "run_box": _choices_update(store, session, run.id)}


def without_server_paths(record) -> None:
    """An uploaded calibration file is recorded by its own name (in the page, the JSON and the manifest),
    never by its temporary path on the server."""
    for holder, key in ((record.config, "calib"), (record.compression.calibration, "source")):
        value = holder.get(key)
        if isinstance(value, str) and os.sep in value:
            holder[key] = Path(value).name


def _run_choices(store: Store, session: str) -> list[tuple[str, str]]:
    """The session's runs, then the gallery's."""
    return [(r.label, r.id) for r in store.session_runs(session)] + gallery_choices(store)


def gallery_choices(store: Store) -> list[tuple[str, str]]:
    return [(r.label, r.id) for r in store.gallery_runs.values()]


# ---------------------------------------------------------------------------------------------
# The gallery and the starting points
# ---------------------------------------------------------------------------------------------

def opened(store: Store, session: str) -> dict:
    """The page just opened: the gallery's default run is shown, the other methods at its budget beside it;
    without a gallery the status says why in one line."""
    gallery = store.gallery
    if gallery is None or not gallery.entries:
        return {"status": f"{texts.READY} (No precomputed gallery: {store.gallery_problem or 'it is empty'}.)",
                "run_box": _choices_update(store, session, None)}
    shown = gallery.entry(gallery.default) or gallery.entries[0]
    beside = [e.name for e in gallery.entries if e.result["ratio"] == shown.result["ratio"] and e.name != shown.name
              and e.allocation == "auto" and e.model == shown.model]
    return _showing(store, session, shown.name, beside) | setting_controls(shown) | {
        "status": texts.gallery_status(shown.label)}


def start(store: Store, session: str, title: str) -> dict:
    """A starting point: its run shown (the status line says which), its others beside it, the controls (model
    included) set to its setting."""
    chosen = next((s for s in starts.available(store.gallery) if s.title == title), None)
    if chosen is None:
        return {"start_info": "This starting point needs the gallery, which is not installed here."}
    shown = store.gallery.entry(chosen.shown)
    method, allocation, ratio = shown.setting
    model = {"model": shown.model} if store.offers(shown.model) else {}    # a Space may not list it
    return _showing(store, session, chosen.shown, list(chosen.beside)) | model | setting_controls(shown) | {
        "start_info": f"**{chosen.title}.** {chosen.look}", "method": method, "allocation": allocation,
        "ratio": ratio, "status": texts.gallery_status(shown.label)}


def _showing(store: Store, session: str, shown: str, beside: list[str]) -> dict:
    return {"run_box": _choices_update(store, session, GALLERY_PREFIX + shown),
            "beside_box": {"__type__": "update", "choices": gallery_choices(store),
                           "value": [GALLERY_PREFIX + name for name in beside]}}


def _choices_update(store: Store, session: str, value) -> dict:
    return {"__type__": "update", "choices": _run_choices(store, session), "value": value}


BESIDE_MAX = 12     # gallery runs drawn beside the one shown (the page itself asks for 6 at most)


def beside_ids(store: Store, beside_box) -> list[str]:
    """The gallery runs chosen to be drawn beside the run shown: known ids, each once, at most BESIDE_MAX (a
    caller repeating ids filled the figure cache every visitor shares)."""
    known = [i for i in (beside_box or []) if isinstance(i, str) and i in store.gallery_runs]
    return list(dict.fromkeys(known))[:BESIDE_MAX]


def beside_runs(store: Store, beside_box) -> list:
    return [store.gallery_runs[i] for i in beside_ids(store, beside_box)]


# ---------------------------------------------------------------------------------------------
# Figures of a run
# ---------------------------------------------------------------------------------------------

def run_selected(store: Store, session: str, run_box) -> dict:
    """The block slider and projection list for the run shown (hidden while there is no run)."""
    run = store.get(session, run_box) if run_box != LIVE else None
    if run is None or not run.result.get("layers"):
        return {"block_box": {"__type__": "update", "visible": False},
                "kind_box": {"__type__": "update", "visible": False}}
    blocks = sorted({layer["block"] for layer in run.result["layers"]})
    names = plots.kinds(run.result)
    return {"block_box": {"__type__": "update", "visible": True, "minimum": blocks[0],
                          "maximum": max(blocks[-1], blocks[0] + 1), "value": blocks[0]},
            "kind_box": {"__type__": "update", "visible": True, "choices": names,
                         "value": plots.first_kind(run.result, blocks[0])}}


def plugin_tabs() -> list[FigureTab]:
    """The tabs the registered methods declare, once each (two methods may share one)."""
    return list({tab.title: tab for cls in REGISTRY.values() for tab in cls.figures}.values())


def show(store: Store, session: str, run_box, block_box, kind_box, depth_metric, compare_metric,
         beside_box=None) -> dict:
    """Every figure of the run shown, and the comparison of the session's runs, the gallery runs drawn
    beside it and the gallery run shown. Figures that depend on the gallery alone (a visitor without runs
    of their own) are drawn once for everyone: a class opening the page together waits for none."""
    if store.session_runs(session) or store.sweeps.get(session):
        return _figures(store, session, run_box, block_box, kind_box, depth_metric, compare_metric, beside_box)
    key = (run_box, block_box, kind_box, depth_metric, compare_metric, tuple(beside_ids(store, beside_box)))
    return store.gallery_figures(key, lambda: _figures(store, session, run_box, block_box, kind_box, depth_metric,
                                                       compare_metric, beside_box))


def _figures(store: Store, session: str, run_box, block_box, kind_box, depth_metric, compare_metric,
             beside_box) -> dict:
    run = store.get(session, run_box) if run_box != LIVE else None
    runs = beside_runs(store, beside_box) + store.session_runs(session)
    if run is not None and run.entry is not None and run not in runs:
        runs.append(run)
    compare = {"compare_plot": _comparison(store, session, runs, compare_metric),
               "history": texts.history_rows(runs)}
    if run is None:
        blank = plots.empty("run a compression")
        return compare | {name: blank for name in ("spectrum_plot", "depth_plot", "heatmap_plot", "rank_plot",
                                                  "refine_plot", "cost_plot")} | \
            {"cost_table": "Run a compression: both models' serving cost appears here."} | \
            {f"{name}_plot": plots.empty(tab.missing) for tab in plugin_tabs() for name in tab.figures} | \
            {"metrics": "Run a compression: its figures appear here."}
    r = _with_cost_note(run)
    block = int(block_box or 0)
    kind = kind_box or plots.first_kind(r, block)
    others = [(x.label, x.result) for x in runs if x.id != run.id][-6:]
    return compare | {
        "metrics": texts.metrics_markdown(run.label, r, store.gallery.describe() if run.entry else None),
        "spectrum_plot": plots.spectrum_figure(r, block, kind),
        "depth_plot": plots.depth_figure(others + [(run.label, r)], depth_metric or "rel_error"),
        "heatmap_plot": plots.error_heatmap(r), "rank_plot": plots.rank_depth_figure(others + [(run.label, r)]),
        "refine_plot": plots.refine_figure(r, block), "cost_table": texts.cost_markdown(r),
        "cost_plot": plots.cost_figure(r)} | {
        f"{name}_plot": plots.PLUGIN_FIGURES[name](r, block, kind, tab.missing)
        for tab in plugin_tabs() for name in tab.figures}


def _with_cost_note(run) -> dict:
    """A precomputed run without serving cost says why, and how to get it."""
    if run.entry is None or (run.result.get("cost") or {}).get("original"):
        return run.result
    return run.result | {"cost": {"skipped": texts.GALLERY_COST}}


def _comparison(store: Store, session: str, runs, metric):
    rows = [x.result for x in runs]
    sweep = store.sweeps.get(session)
    if sweep and metric == "ppl_compressed":
        return plots.pareto_figure(aggregate(sweep), rows)
    return plots.comparison_figure(rows, metric or "ppl_compressed")


def open_sweep(store: Store, session: str, sweep_folder, sweep_zip, compare_metric) -> dict:
    """Add a sweep (a folder on this machine, or an uploaded zip) to the comparison."""
    try:
        if sweep_zip:
            rows = read_zip(sweep_zip)
        elif sweep_folder and not store.limits.public:
            rows = read_folder(Path(sweep_folder).expanduser())
        else:
            raise ComparisonError("upload a zip of a sweep folder" + ("" if store.limits.public else
                                                                     " or type the folder's path"))
    except (ComparisonError, OSError) as err:
        return {"sweep_message": f"⚠️ {message(err)}"}
    done = [r for r in rows if r.get("status", "done") == "done"]
    configurations = len(aggregate(done))               # kept only once it aggregates
    store.keep_sweep(session, done)
    runs = store.session_runs(session)
    return {"sweep_message": f"✓ {len(done)} finished runs in {configurations} configurations.",
            "compare_plot": _comparison(store, session, runs, "ppl_compressed"), "compare_metric": "ppl_compressed"}


# ---------------------------------------------------------------------------------------------
# Side by side, zero-shot, download
# ---------------------------------------------------------------------------------------------

def generate(store: Store, session: str, run_box, prompt, new_tokens, temperature):
    run = store.get(session, run_box) if run_box != LIVE else None
    if run is not None and run.entry is not None:
        yield stored_answers(store, run, prompt or "")
        return
    model = run.model if run is not None else None      # one reference: the store may release it meanwhile
    if model is None:
        why = "run a compression first" if run is None else \
            "this run's compressed model was released to save memory (figures stay): run it again"
        yield {"original_out": f"({why})", "compressed_out": f"({why})"}
        return
    try:
        store.limits.check_values(new_tokens=new_tokens, prompt_chars=len(prompt or ""))
        yield {"original_out": "(loading the original model…)", "compressed_out": "(waiting for the original…)",
               "generate_note": ""}
        original = store.models.get(run.source, store.limits.token)
        yield {"original_out": "(generating…)", "compressed_out": "(generating…)"}
        seen = ["", ""]
        for seen in side_by_side([original.model, model], run.tokenizer, prompt or "", int(new_tokens),
                                 float(temperature or 0)):
            yield {"original_out": seen[0], "compressed_out": seen[1] or "(nothing yet…)"}
        yield {"original_out": seen[0] or EMPTY_ANSWER, "compressed_out": seen[1] or EMPTY_ANSWER}
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the page says it in one line
        if not isinstance(err, PROBLEMS):
            LOG.exception("generation failed")
        yield {"original_out": f"Error: {message(err)}", "compressed_out": f"Error: {message(err)}"}


def stored_answers(store: Store, run, prompt: str) -> dict:
    """A gallery run's greedy answers to an example prompt (it has no model to generate with)."""
    pair = store.gallery.answer(run.entry, prompt)
    if pair is None:
        why = ("(a precomputed run answers only the example prompts below: pick one, or press Compress to run this "
               "setting here and talk to it)")
        return {"original_out": why, "compressed_out": why}
    return {"original_out": pair[0] or EMPTY_ANSWER, "compressed_out": pair[1] or EMPTY_ANSWER,
            "generate_note": "Stored answers of a precomputed run: greedy, the new-token and temperature controls "
                             "do not apply (press Compress to run this setting here and talk to it)."}


EMPTY_ANSWER = "(the model stopped at once: it emitted an end token)"


def zero_shot(store: Store, session: str, run_box, tasks, limit):
    run = store.get(session, run_box) if run_box != LIVE else None
    model = run.model if run is not None else None
    if model is None:
        yield {"zero_status": "Run a compression first (one whose model is still in memory; a precomputed gallery "
                              "run holds no model)."}
        return
    try:
        store.limits.check_values(zero_shot_limit=limit)
        allowed, _ = task_choices(store)
        chosen = [t for t in (tasks or []) if t in allowed]
        if not chosen:
            raise ConfigError("choose at least one of the tasks offered")
        job = store.jobs.submit(session, "zero-shot", _zero_shot_work(store, run, model, chosen, int(limit)))
    except PROBLEMS as err:
        yield {"zero_status": f"Error: {message(err)}"}
        return
    for _ in follow(store, session, job):
        yield {"zero_status": texts.job_status(job, store.jobs.position(job), None)}
    problem = ended(job)
    store.jobs.discard(job, session)
    if problem is not None:
        yield {"zero_status": problem}
        return
    scores = job.result
    rows = [[t] + [texts.accuracy(scores[m].get(t)) for m in ("original", "compressed")] for t in chosen]
    note = " BoolQ was scored after calibrating on BoolQ passages." if "boolq" in chosen and \
        run.result.get("calibration", {}).get("source") in ("boolq", "auto") else ""
    yield {"zero_status": f"Done: {len(chosen)} task(s), {int(limit)} examples each, {job.elapsed:.0f} s.{note}",
           "zero_table": rows, "zero_plot": plots.zero_shot_figure(scores)}


def _zero_shot_work(store: Store, run, model, tasks: list[str], limit: int):
    def work(job):
        original = load_interruptibly(store, run.source, job)
        lm = type(original)(original.model, run.tokenizer, original.source, original.description)
        return engine_zero_shot(lm, model, tasks, limit, None, job.emit, cancel_check(job.cancel))
    return work


DOWNLOAD_LAYOUTS = ("factors", "merged")


def prepare_download(store: Store, session: str, run_box, download_layout="factors") -> dict:
    """Write the run's folder as a zip once per layout (reused until it expires) and its JSON; say how big."""
    run = store.get(session, run_box) if run_box != LIVE else None
    if run is None:
        return {"download_info": "Run a compression first."}
    if download_layout not in DOWNLOAD_LAYOUTS:
        return {"download_info": f"Choose what the zip holds: {' or '.join(DOWNLOAD_LAYOUTS)}."}
    folder, ready = store.download_folder(run)
    try:
        return _write_download(store, run, folder, ready, download_layout)
    except Exception:
        # Under load the store may release this run and delete its folder while it is written; each library
        # writing into it (tokenizers, safetensors, zipfile) then fails with its own error type.
        if not folder.exists():
            return {"download_info": "The download expired while it was written: prepare it again."}
        LOG.exception("download failed")      # the page gets one line without server paths; the log the rest
        return {"download_info": "The download could not be written (the server logged why): prepare it again."}


def _write_download(store: Store, run, folder, ready: bool, layout: str) -> dict:
    model = run.model
    result_path = folder / f"run-{run.slug}.json"
    if not ready:
        result_path.write_text(json.dumps(run.result, indent=1))
    if model is None:
        why = "is a precomputed gallery run (no weights)" if run.entry else \
            "had its compressed model released to save memory"
        return {"download_info": f"This run {why}: only its JSON result is available.",
                "json_file": str(result_path), "model_file": None}
    archive = folder / f"compressed-{run.id}-{layout}.zip"
    bound = store.limits.downloads_mb
    if not archive.exists() and bound and store.bytes_on_disk() > bound * 2**20:
        return {"download_info": f"The server holds {bound} MB of prepared downloads, its bound: they expire "
                                 f"within {store.limits.download_seconds // 60 or 1} min, try again then.",
                "json_file": str(result_path), "model_file": None}
    if not archive.exists():
        export(run.record, model, run.tokenizer, folder / layout, merged=layout == "merged")
        shutil.make_archive(str(archive.with_suffix("")), "zip", folder / layout)
        shutil.rmtree(folder / layout)
    return {"download_info": _sizes(store, run, archive.stat().st_size, layout), "model_file": str(archive),
            "json_file": str(result_path)}


def _sizes(store: Store, run, download_bytes: int, layout: str = "factors") -> str:
    original = run.result.get("original_bytes")
    if original is None and run.source in EMBEDDED:
        original = store.models.peek(run.source).file_bytes if store.models.peek(run.source) else None
    held = "bfloat16 factors" if layout == "factors" else "the merged dense checkpoint, bfloat16"
    line = f"Download: **{texts.size(download_bytes)}** (zip of {held})"
    if original:
        line += f"; the original model's file: **{texts.size(original)}**."
    kept = store.limits
    return line + (f" The link works for {texts.duration(kept.download_seconds)}, while this run is among the "
                   f"{kept.models_kept} most recent kept on the server. {texts.EXPLAIN['sizes']}")


def unload(store: Store, session: str) -> None:
    store.drop_session(session)
