"""Gradio layout and callbacks. No linear algebra here: the engine computes, the worker runs it in the
background, plots.py draws, this file wires them to the page."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import psutil

from . import engine, plots
from .data import data_dir
from .evaluation import LOCAL_FILES
from .export import save_compressed
from .generation import EXAMPLES, side_by_side
from .lowrank import check_ratio
from .methods import REGISTRY, get_method
from .models import DEFAULT_MODEL, EMBEDDED, ModelCache, find_layout, layout_from_config
from .pipeline import cancel_check
from .worker import Busy, JobManager

MODELS_KEPT_PER_SESSION = 2   # compressed models kept in memory per session; older runs keep their figures
SEED_METHODS = ("ressvd", "aa-svd", "saes-svd")
RUN_LABEL = "Run shown"
LIVE_LABEL = "Run shown (the figures below follow the run in progress)"

EXPLAIN = {
    "budget": "Each projection W (m×n) becomes two thin matrices A (m×k) and B (k×n): k(m+n) numbers instead of "
              "mn. That only saves memory below the **break-even rank** mn/(m+n). The ratio is the share of the "
              "projections' parameters removed, so k = ⌊(1−ratio)·mn/(m+n)⌋; embeddings and the LM head stay dense.",
    "spectra": "Grey: the singular values of the raw weight W; blue: those of the matrix the method actually "
               "truncates (W for plain SVD, W·diag(s) for ASVD, W·S for the whitening methods, M(β) for SAES), "
               "each divided by its largest. Everything right of the red line is thrown away. LLM weights have "
               "flat spectra, so plain SVD discards a lot. Whitening multiplies W by the square root S of the "
               "input statistics: the tail then measures the output error on real inputs and usually falls "
               "faster, so the same rank keeps more of what matters. **Look for** the energy share beyond the "
               "kept rank, and how much steeper blue is than grey.",
    "depth": "Blocks are compressed one after the other. The compressed model's hidden states drift away from the "
             "original model's; this is their relative distance after every block, measured on the calibration "
             "text. Methods that only fit each layer locally (SVD-LLM) let the error pile up; AA-SVD and SAES-SVD "
             "fit each layer to what the **original** model produced, from the inputs the compressed model "
             "really feeds it, so they pull the drift back; ResSVD leaves the first blocks untouched (zero "
             "error) and compresses the last ones harder. **Look for** the level at the last block, which is "
             "what the LM head sees. Earlier runs are overlaid in thin lines. A sudden *drop* usually means the "
             "hidden states' norm jumped (LLMs grow a few huge 'massive activation' channels), not that the error "
             "shrank: the cosine distance is blind to norms.",
    "heatmap": "Relative error ‖(W−W')X‖/‖WX‖ of each compressed projection on its calibration inputs X (the "
               "compressed model's inputs for the methods that use them, else the original's). **Look for** the "
               "projection kinds that are hardest to compress and whether they get harder with depth.",
    "aces": "SAES-SVD fits each projection to a mix of two targets: its own output on the inputs it receives "
            "(β = 0) and the full-precision model's output (β → 1), which compensates the error accumulated "
            "upstream. ACES picks β per projection, inside [0.25, 0.75], so that the target is as low-rank as "
            "possible: the share of its energy the kept rank captures is highest. The light curve is the "
            "paper's cheap estimate with a fixed subspace, dots are the candidates tried, the star the choice "
            "with its exact share. Right below: the chosen β through depth.",
    "refine": "After every projection of a block is replaced, AA-SVD tunes the whole block (both factors of every "
              "projection, and the norms) with a few gradient steps, so that the compressed block fed the "
              "compressed model's hidden states reproduces the original block's output. Left: the loss per step "
              "of one block; right: every block's calibration loss before and after. A block whose loss would "
              "rise is restored.",
    "compare": "Every run of this session: quality against the share of the whole model's parameters kept. "
               "Perplexity and the KL divergence from the original model's next-token distribution: lower is "
               "better; top-1 agreement (how often both models' most likely next token is the same): higher.",
    "generate": "The same prompt, sampling settings and seed through the original and the compressed model, "
                "token by token (with the model's chat template when it has one). Temperature 0 is greedy.",
    "zero_shot": "Accuracy on multiple-choice benchmarks through lm-eval, from local files when the data folder "
                 "has them (no network). Chance is 50% for PIQA, BoolQ and WinoGrande and 25% for ARC and "
                 "OpenBookQA. Each task runs on the first *limit* examples: keep it small on a CPU.",
}


@dataclass
class Run:
    id: str
    session: str
    label: str
    source: str
    result: dict
    model: object = None
    tokenizer: object = None


class Store:
    """Server-side state shared by all sessions: loaded models, background jobs, finished runs."""

    def __init__(self, default_model: str, preload: bool):
        self.default_model = default_model
        self.models = ModelCache(size=2)
        self.jobs = JobManager(workers=1)
        self.runs: dict[str, Run] = {}
        self.lock = threading.Lock()
        if preload:
            threading.Thread(target=self._preload, daemon=True).start()

    def _preload(self):
        try:
            self.models.get(self.default_model)
        except Exception:  # noqa: BLE001 - the page reports load errors when the model is used
            pass

    def add(self, run: Run) -> None:
        with self.lock:
            self.runs[run.id] = run
            mine = [r for r in self.runs.values() if r.session == run.session and r.model is not None]
            for old in mine[:-MODELS_KEPT_PER_SESSION]:
                old.model = None

    def session_runs(self, session: str) -> list[Run]:
        with self.lock:
            return [r for r in self.runs.values() if r.session == session]

    def get(self, session: str, run_id) -> Run | None:
        run = self.runs.get(run_id) if run_id else None
        if run is None or run.session != session:
            runs = self.session_runs(session)
            return runs[-1] if runs and not run_id else None
        return run

    def drop_session(self, session: str) -> None:
        self.jobs.cancel_session(session)
        with self.lock:
            for key in [k for k, r in self.runs.items() if r.session == session]:
                del self.runs[key]
        self.jobs.forget(session)


# ---------------------------------------------------------------------------------------------
# Helpers that turn engine results into page content
# ---------------------------------------------------------------------------------------------

def _m(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def budget_markdown(summary: dict, method_name: str) -> str:
    kept = summary["params_after"] / summary["params"]
    scope = (f"in the last {summary['compressed_blocks']} of {summary['blocks']} blocks"
             if summary["compressed_blocks"] < summary["blocks"] else f"in all {summary['blocks']} blocks")
    lines = [f"**{method_name} at ratio {summary['ratio']:g}** removes {_m(summary['linear_params'] - summary['linear_params_after'])} "
             f"of the {_m(summary['linear_params'])} projection parameters {scope}: model "
             f"{_m(summary['params'])} → **{_m(summary['params_after'])}** ({100 * kept:.1f}% kept).", "",
             "| projection | shape | rank kept | break-even |", "|---|---|---|---|"]
    for kind, info in summary["kinds"].items():
        m, n = info["shape"]
        lines.append(f"| {kind} | {m}×{n} | {info['rank']} | {info['break_even_rank']:.0f} |")
    return "\n".join(lines)


def metrics_markdown(run: Run) -> str:
    r = run.result
    kept = r["params_after"] / r["params_before"]
    out = [f"### {run.label}", f"{r['model']} · parameters {_m(r['params_before'])} → **{_m(r['params_after'])}** "
           f"({100 * kept:.1f}% kept) · compression {r['seconds']:.0f} s"]
    if r.get("ppl_compressed") is not None:
        ev = r["evaluation"]
        out += ["", f"| {ev['source']} test, {ev['windows']}×{ev['seq_len']} tokens | original | compressed |",
                "|---|---|---|", f"| perplexity | {r['ppl_original']:.2f} | **{r['ppl_compressed']:.2f}** |",
                f"| KL to the original | 0 | {r['kl_to_original']:.3f} |",
                f"| top-1 agreement | 100% | {100 * r['top1_agreement']:.1f}% |"]
    extras = r.get("extras") or {}
    if extras.get("compressed_blocks"):
        out.append(f"\nCompressed blocks: {extras['compressed_blocks'][0]}–{extras['compressed_blocks'][-1]} at "
                   f"{extras['block_ratio']:.2f} each.")
    return "\n".join(out)


def history_rows(runs: list[Run]) -> list[list]:
    return [[r.label, r.result["method"], r.result["ratio"], round(r.result["params_after"] / r.result["params_before"], 3),
             _round(r.result.get("ppl_compressed")), _round(r.result.get("kl_to_original"), 3),
             _round(r.result.get("top1_agreement"), 3), round(r.result["seconds"], 1)] for r in runs]


def _round(v, digits=2):
    return None if v is None else round(v, digits)


def partial_result(job, method: str) -> dict:
    """The figures' input built from the events a running job has emitted so far."""
    layers, blocks = [], []
    for _, kind, data in job.events_since(0):
        if kind == "projection":
            layers.append(data)
        elif kind == "block":
            blocks.append(data)
    return {"method": method, "layers": layers, "blocks": blocks,
            "depth_error": [{"block": b["block"], "rel_error": b["rel_error"],
                             "cosine_distance": b["cosine_distance"]} for b in blocks]}


def progress_markdown(job, total_projections: int | None, position: int) -> str:
    if job.status == "queued":
        return f"Waiting for the worker: {position} job(s) ahead of yours."
    events = job.events_since(0)
    statuses = [d for _, k, d in events if k == "status"]
    done = [d for _, k, d in events if k == "projection"]
    blocks = [d for _, k, d in events if k == "block"]
    start = next((t for t, k, _ in events if k == "start"), None)
    text = f"Running: {statuses[-1] if statuses else 'starting'} · {job.elapsed:.0f} s elapsed"
    if done and total_projections:
        last = done[-1]
        spent = time.time() - start if start else job.elapsed
        left = spent / len(done) * (total_projections - len(done))
        text = (f"Running: block {last['block']} · {last['kind']} · projection {len(done)} of {total_projections} "
                f"· {len(blocks)} block(s) done · {job.elapsed:.0f} s elapsed · about {left:.0f} s left")
    return text


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

def _option_component(option):
    label = option.name.replace("_", " ")
    if option.choices and set(option.choices) == {True, False}:
        return gr.Checkbox(value=option.default, label=label, info=option.help)
    if option.choices:
        return gr.Dropdown(choices=list(option.choices), value=option.default, label=label, info=option.help)
    if isinstance(option.default, str):
        return gr.Textbox(value=option.default, label=label, info=option.help)
    return gr.Number(value=option.default, label=label, info=option.help,
                     precision=0 if isinstance(option.default, int) and not isinstance(option.default, bool) else None)


def _options(method_name: str, specs: list, values) -> dict:
    out = {}
    for (owner, option), value in zip(specs, values):
        if owner != method_name or value is None or value == "":
            continue
        if isinstance(option.default, int) and not isinstance(option.default, bool):
            value = int(value)
        out[option.name] = value
    return out


def _calibration_choices():
    choices = []
    if data_dir() is not None:
        choices.append(("Wikipedia paragraphs (BoolQ passages, offline)", "boolq"))
    choices.append(("Text sampled from the model itself (data-free)", "self"))
    choices.append(("WikiText-2 train (Hugging Face hub)", "wikitext2"))
    return choices


def _method_markdown(name: str) -> str:
    cls = REGISTRY[name]
    note = " *Reimplemented from the paper; numbers may differ from its tables.*" if name in SEED_METHODS else ""
    return f"**{cls.title}** — {cls.summary}  \n<small>{cls.paper}.{note}</small>"


def build_demo(default_model: str = DEFAULT_MODEL, preload: bool = True, defaults: dict | None = None) -> gr.Blocks:
    """The whole app. `defaults` overrides the calibration/evaluation sizes (tests use tiny ones)."""
    d = {"calib_samples": 16, "seq_len": 256, "eval_windows": 8, **(defaults or {})}
    store = Store(default_model, preload)
    specs = [(name, option) for name, cls in REGISTRY.items() for option in cls.options]
    model_choices = [(f"{k} (embedded)", k) for k in EMBEDDED] + (
        [(default_model, default_model)] if default_model not in EMBEDDED else [])

    with gr.Blocks(title="SVD Explorer") as demo:
        gr.Markdown("# SVD Explorer\nLow-rank (SVD-based) compression of causal language models: pick a model, a "
                    "method and a budget, watch the compression block by block, then compare and talk to the "
                    "result.")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                model_box = gr.Dropdown(choices=model_choices, value=default_model, allow_custom_value=True,
                                        label="Model", info="the embedded SmolLM2-135M, a Hugging Face id (needs the "
                                        "network) or a local folder (also one saved by this app)")
                method_box = gr.Dropdown(choices=[(cls.title, name) for name, cls in REGISTRY.items()],
                                         value="svd-llm", label="Method")
                method_md = gr.Markdown(_method_markdown("svd-llm"))
                ratio = gr.Slider(0.01, 0.99, value=0.2, step=0.01, label="Ratio: share of the projections' "
                                  "parameters removed")
                with gr.Row():
                    compress_btn = gr.Button("Compress", variant="primary", elem_id="compress")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown("Ready.", elem_id="status")
                budget_md = gr.Markdown(elem_id="budget")
                with gr.Accordion("What the budget means", open=False):
                    gr.Markdown(EXPLAIN["budget"])
                with gr.Accordion("Calibration and evaluation", open=False):
                    calib = gr.Dropdown(choices=_calibration_choices(), value=_calibration_choices()[0][1],
                                        label="Calibration text")
                    calib_file = gr.File(label="…or your own text (.txt, .raw, .jsonl with 'text', .parquet)",
                                         file_types=[".txt", ".raw", ".jsonl", ".parquet"], type="filepath")
                    calib_samples = gr.Slider(2, 64, value=d["calib_samples"], step=2, label="calibration windows")
                    seq_len = gr.Slider(16, 1024, value=d["seq_len"], step=16, label="tokens per window")
                    eval_windows = gr.Slider(0, 40, value=d["eval_windows"], step=1,
                                             label="evaluation windows (WikiText-2 test; 0 = none)")
                with gr.Accordion("Method options", open=False):
                    groups, option_boxes = {}, []
                    for name, cls in REGISTRY.items():
                        with gr.Group(visible=name == "svd-llm") as group:
                            for option in cls.options:
                                option_boxes.append(_option_component(option))
                        groups[name] = group
            with gr.Column(scale=2):
                run_box = gr.Dropdown(choices=[], label=RUN_LABEL, interactive=True)
                with gr.Tabs():
                    with gr.Tab("Run"):
                        metrics_md = gr.Markdown("Run a compression: its figures appear here.")
                        with gr.Row():
                            block_box = gr.Slider(0, 1, value=0, step=1, label="block")
                            kind_box = gr.Dropdown(choices=[], label="projection")
                    with gr.Tab("Spectra"):
                        gr.Markdown(EXPLAIN["spectra"])
                        spectrum_plot = gr.Plot(plots.empty("the spectra appear as soon as a projection is done"),
                                                elem_id="spectrum")
                    with gr.Tab("Error through depth"):
                        gr.Markdown(EXPLAIN["depth"])
                        depth_metric = gr.Radio([("relative L2", "rel_error"), ("cosine distance", "cosine_distance")],
                                                value="rel_error", label="measure")
                        depth_plot = gr.Plot(plots.empty("run a compression"), elem_id="depth")
                        gr.Markdown(EXPLAIN["heatmap"])
                        heatmap_plot = gr.Plot(plots.empty("run a compression"))
                    with gr.Tab("ACES search"):
                        gr.Markdown(EXPLAIN["aces"])
                        aces_plot = gr.Plot(plots.empty("run saes-svd"))
                        aces_depth_plot = gr.Plot(plots.empty("run saes-svd"))
                    with gr.Tab("Refinement"):
                        gr.Markdown(EXPLAIN["refine"])
                        refine_plot = gr.Plot(plots.empty("run aa-svd"))
                    with gr.Tab("Compare runs"):
                        gr.Markdown(EXPLAIN["compare"])
                        compare_metric = gr.Radio([("perplexity", "ppl_compressed"), ("KL", "kl_to_original"),
                                                   ("top-1 agreement", "top1_agreement")], value="ppl_compressed",
                                                  label="quality")
                        compare_plot = gr.Plot(plots.empty("runs appear here"))
                        history = gr.Dataframe(headers=["run", "method", "ratio", "kept", "ppl", "KL", "top-1",
                                                        "seconds"], interactive=False)
                    with gr.Tab("Side by side"):
                        gr.Markdown(EXPLAIN["generate"])
                        prompt = gr.Textbox(value=EXAMPLES[0], label="prompt", lines=2)
                        gr.Examples(EXAMPLES, inputs=prompt)
                        with gr.Row():
                            max_tokens = gr.Slider(8, 256, value=64, step=8, label="new tokens")
                            temperature = gr.Slider(0, 1.5, value=0, step=0.1, label="temperature")
                        generate_btn = gr.Button("Generate with both models")
                        with gr.Row():
                            original_out = gr.Textbox(label="original", lines=8)
                            compressed_out = gr.Textbox(label="compressed", lines=8)
                    with gr.Tab("Zero-shot"):
                        gr.Markdown(EXPLAIN["zero_shot"])
                        tasks = gr.CheckboxGroup(list(LOCAL_FILES) + ["hellaswag"], value=["piqa", "arc_easy"],
                                                 label="tasks (hellaswag needs the hub)")
                        limit = gr.Slider(10, 500, value=50, step=10, label="examples per task")
                        zero_btn = gr.Button("Evaluate original and compressed")
                        zero_status = gr.Markdown()
                        zero_table = gr.Dataframe(headers=["task", "original", "compressed"], interactive=False)
                        zero_plot = gr.Plot(plots.empty("run the tasks"))
                    with gr.Tab("Download"):
                        gr.Markdown("The compressed model as a folder (safetensors + manifest), zipped: unzip and "
                                    "`svd_explorer.load_compressed(folder)`; and the run's full JSON result.")
                        export_btn = gr.Button("Prepare the download")
                        model_file = gr.File(label="compressed model (.zip)")
                        json_file = gr.File(label="run result (.json)")

        # -- callbacks ----------------------------------------------------------------------------

        def show_budget(source, method_name, ratio_value, *values):
            try:
                method = get_method(method_name, **_options(method_name, specs, values))
                cached = store.models.peek(source)
                if cached is not None:
                    layout, total = find_layout(cached.model), sum(p.numel() for p in cached.model.parameters())
                elif source in EMBEDDED or source == store.default_model:
                    lm = store.models.get(source)
                    layout, total = find_layout(lm.model), sum(p.numel() for p in lm.model.parameters())
                else:
                    layout, total = layout_from_config(source)
                return budget_markdown(engine.budget_summary(layout, total, ratio_value, method), method_name)
            except Exception as err:  # noqa: BLE001 - shown in the page
                return f"Error: {err}"

        def show_method(method_name):
            return [_method_markdown(method_name)] + [gr.update(visible=name == method_name) for name in groups]

        def figures(session, run_id, block, kind, depth_m, compare_m):
            run = store.get(session, run_id)
            runs = store.session_runs(session)
            if run is None:
                blank = plots.empty("run a compression")
                return ["Run a compression: its figures appear here.", blank, blank, blank, blank, blank, blank,
                        plots.comparison_figure([r.result for r in runs], compare_m), history_rows(runs)]
            r = run.result
            block = int(block or 0)
            kind = kind or (plots.kinds(r) or [None])[0]
            others = [(x.label, x.result) for x in runs if x.id != run.id][-4:]
            return [metrics_markdown(run), plots.spectrum_figure(r, block, kind),
                    plots.depth_figure(others + [(run.label, r)], depth_m), plots.error_heatmap(r),
                    plots.aces_figure(r, block, kind), plots.aces_depth_figure(r), plots.refine_figure(r, block),
                    plots.comparison_figure([x.result for x in runs], compare_m), history_rows(runs)]

        figure_outputs = [metrics_md, spectrum_plot, depth_plot, heatmap_plot, aces_plot, aces_depth_plot,
                          refine_plot, compare_plot, history]

        def on_show(request: gr.Request, run_id, block, kind, depth_m, compare_m):
            return figures(request.session_hash, run_id, block, kind, depth_m, compare_m)

        def on_compress(request: gr.Request, source, method_name, ratio_value, calib_value, calib_path,
                        samples, length, windows, depth_m, *values):
            session = request.session_hash
            skip = [gr.skip()] * 6
            relabel = skip[:4] + [gr.update(label=RUN_LABEL), gr.skip()]  # the run box stops saying "in progress"
            try:
                check_ratio(ratio_value)
                method = get_method(method_name, **_options(method_name, specs, values))
            except ValueError as err:
                yield [f"Error: {err}"] + skip
                return
            source = (source or "").strip()

            def work(job):
                job.emit("status", f"loading {source}")
                lm = store.models.get(source, memory_limit_bytes=psutil.virtual_memory().available)
                result = engine.run_compression(
                    lm, method, ratio_value, calib=calib_path or calib_value, calib_samples=int(samples),
                    seq_len=int(length), eval_source="auto" if windows else "none", eval_windows=int(windows),
                    log=job.emit, cancel=job.cancel, keep_model=True, measure_forward=False)
                return result, lm

            try:
                job = store.jobs.submit(session, "compress", work)
            except Busy as err:
                yield [f"Error: {err}"] + skip
                return
            total, drawn = None, 0.0
            while not job.done:
                time.sleep(0.25)
                if total is None:
                    start = next((data for _, kind, data in job.events_since(0) if kind == "start"), None)
                    total = len(start["plan"]) if start else None
                if time.time() - drawn < 1.0:
                    continue
                drawn = time.time()
                partial = partial_result(job, method_name)
                status_text = progress_markdown(job, total, store.jobs.position(job))
                if partial["layers"]:
                    last = partial["layers"][-1]
                    others = [(x.label, x.result) for x in store.session_runs(session)][-4:]
                    yield [status_text, gr.skip(), plots.spectrum_figure(partial, last["block"], last["kind"]),
                           plots.depth_figure(others + [("this run", partial)], depth_m),
                           plots.error_heatmap(partial), gr.update(label=LIVE_LABEL), gr.skip()]
                else:
                    yield [status_text] + skip
            if job.status == "done":
                result, lm = job.result
                model = result.pop("_model")
                count = len(store.session_runs(session)) + 1
                run = Run(uuid.uuid4().hex[:8], session, f"#{count} {method_name} {ratio_value:g}", source, result,
                          model, lm.tokenizer)
                store.add(run)
                choices = [(r.label, r.id) for r in store.session_runs(session)]
                blocks = sorted({l["block"] for l in result["layers"]})
                yield [f"Done in {job.elapsed:.0f} s.", metrics_markdown(run),
                       plots.spectrum_figure(result, blocks[0], plots.kinds(result)[0]), gr.skip(), gr.skip(),
                       gr.update(choices=choices, value=run.id, label=RUN_LABEL),
                       gr.update(minimum=blocks[0], maximum=max(blocks[-1], blocks[0] + 1), value=blocks[0])]
            elif job.status == "cancelled":
                done = len(partial_result(job, method_name)["layers"])
                yield [f"Stopped after {done} projection(s) ({job.elapsed:.0f} s). The partial model was "
                       f"discarded; the app is ready for another run."] + relabel
            else:
                yield [f"Error: {job.error}"] + relabel

        def on_stop(request: gr.Request):
            stopped = store.jobs.cancel_session(request.session_hash)
            return "Stopping at the next projection…" if stopped else "Nothing is running."

        def on_kinds(request: gr.Request, run_id):
            run = store.get(request.session_hash, run_id)
            names = plots.kinds(run.result) if run else []
            return gr.update(choices=names, value=names[0] if names else None)

        def on_generate(request: gr.Request, run_id, text, tokens, temp):
            run = store.get(request.session_hash, run_id)
            if run is None:
                yield "Error: run a compression first", ""
                return
            if run.model is None:
                yield "Error: this run's model was released to save memory: pick one of your last two runs", ""
                return
            original = store.models.get(run.source)
            try:
                for texts in side_by_side([original.model, run.model], run.tokenizer, text, int(tokens), float(temp)):
                    yield texts
            except ValueError as err:
                yield f"Error: {err}", ""

        def on_zero_shot(request: gr.Request, run_id, chosen, count):
            from .evaluation import run_tasks

            session = request.session_hash
            run = store.get(session, run_id)
            if run is None or run.model is None:
                yield "Error: run a compression first (one of your last two runs)", gr.skip(), gr.skip()
                return
            if not chosen:
                yield "Error: choose at least one task", gr.skip(), gr.skip()
                return

            def work(job):
                original = store.models.get(run.source)
                scores = {}
                for label, model in (("original", original.model), ("compressed", run.model)):
                    scores[label] = run_tasks(model, run.tokenizer, chosen, limit=int(count),
                                              on_task=lambda t, label=label: job.emit("status", f"{label}: {t}"),
                                              should_stop=cancel_check(job.cancel))
                return scores

            try:
                job = store.jobs.submit(session, "evaluate", work)
            except Busy as err:
                yield f"Error: {err}", gr.skip(), gr.skip()
                return
            while not job.done:
                time.sleep(0.5)
                statuses = [dd for _, k, dd in job.events_since(0) if k == "status"]
                yield (f"Running: {statuses[-1] if statuses else 'starting'} · {job.elapsed:.0f} s", gr.skip(), gr.skip())
            if job.status != "done":
                yield f"Error: {job.error or 'stopped'}", gr.skip(), gr.skip()
                return
            scores = job.result
            rows = [[t] + [_accuracy(scores[m].get(t)) for m in ("original", "compressed")] for t in chosen]
            yield f"Done: {len(chosen)} task(s), {int(count)} examples each, {job.elapsed:.0f} s", rows, \
                plots.zero_shot_figure(scores)

        def on_export(request: gr.Request, run_id):
            run = store.get(request.session_hash, run_id)
            if run is None:
                raise gr.Error("run a compression first")
            folder = Path(tempfile.mkdtemp(prefix=f"svd-explorer-{run.id}-"))
            result_path = folder / f"run-{run.id}.json"
            result_path.write_text(json.dumps(run.result, indent=1))
            if run.model is None:
                gr.Warning("this run's model was released to save memory: only its JSON result is available")
                return None, str(result_path)
            info = {"base": {"source": run.source, "revision": run.result.get("model_revision")},
                    "method": run.result["method"], "ratio": run.result["ratio"], "options": run.result["options"],
                    "calibration": run.result["calibration"]}
            save_compressed(run.model, run.tokenizer, folder / "model", info)
            archive = shutil.make_archive(str(folder / f"compressed-{run.id}"), "zip", folder / "model")
            shutil.rmtree(folder / "model")
            return archive, str(result_path)

        def on_unload(request: gr.Request):
            store.drop_session(request.session_hash)

        # -- events -------------------------------------------------------------------------------
        budget_inputs = [model_box, method_box, ratio] + option_boxes
        for trigger in (model_box.change, method_box.change, ratio.change):
            trigger(show_budget, budget_inputs, budget_md, api_name=False)
        demo.load(show_budget, budget_inputs, budget_md, api_name="budget")
        method_box.change(show_method, method_box, [method_md] + list(groups.values()), api_name="method_info")
        show_inputs = [run_box, block_box, kind_box, depth_metric, compare_metric]
        compress_event = compress_btn.click(
            on_compress, [model_box, method_box, ratio, calib, calib_file, calib_samples, seq_len, eval_windows,
                          depth_metric] + option_boxes,
            [status, metrics_md, spectrum_plot, depth_plot, heatmap_plot, run_box, block_box],
            api_name="compress", concurrency_limit=16)
        compress_event.then(on_kinds, run_box, kind_box, api_name=False).then(
            on_show, show_inputs, figure_outputs, api_name=False)
        stop_btn.click(on_stop, None, status, api_name="stop", concurrency_limit=None)
        run_box.input(on_kinds, run_box, kind_box, api_name=False).then(on_show, show_inputs, figure_outputs,
                                                                        api_name=False)
        for control in (block_box, kind_box, depth_metric, compare_metric):
            control.input(on_show, show_inputs, figure_outputs, api_name=False)
        gr.Button("Redraw", visible=False).click(on_show, show_inputs, figure_outputs, api_name="show_run")
        generate_btn.click(on_generate, [run_box, prompt, max_tokens, temperature], [original_out, compressed_out],
                           api_name="generate", concurrency_limit=2)
        zero_btn.click(on_zero_shot, [run_box, tasks, limit], [zero_status, zero_table, zero_plot],
                       api_name="zero_shot", concurrency_limit=16)
        export_btn.click(on_export, run_box, [model_file, json_file], api_name="export", concurrency_limit=2)
        demo.unload(on_unload)
    demo.store = store  # for tests and the launcher
    return demo


def _accuracy(scores: dict | None) -> str:
    if not scores or scores.get("acc") is None:
        return "-"
    stderr = scores.get("acc_stderr")
    return f"{100 * scores['acc']:.1f}%" + (f" ± {100 * stderr:.1f}" if stderr else "")


def launch(demo: gr.Blocks | None = None, **kwargs):
    """Queue and launch; host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set."""
    demo = demo or build_demo()
    demo.queue(max_size=32, default_concurrency_limit=4)
    return demo.launch(theme=gr.themes.Soft(), **kwargs)


__all__ = ["build_demo", "launch"]
