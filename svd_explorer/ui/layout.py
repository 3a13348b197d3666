"""The page and its wiring. Components are registered under names; callbacks (callbacks.py) take named
inputs and return {name: value}, and `Page.on` turns both into Gradio's keyword inputs and component
outputs, so nothing is ever matched by position."""
from __future__ import annotations

import contextlib
import inspect
import logging
import tempfile
from functools import partial
from pathlib import Path

import gradio as gr

from ..compress.allocation import ALLOCATIONS
from ..compress.methods import REGISTRY
from ..compress.options import MAX_TEXT
from ..errors import finite_number
from ..figures import plots
from ..model.hub import DEFAULT_MODEL
from ..model.loading import EMBEDDED
from ..run.config import RunConfig
from ..text.generation import EXAMPLES
from . import callbacks as cb
from . import starts, texts
from .limits import Limits
from .state import Store

CSS = """
#status {min-height: 2.6em}
#budget table {width: 100%; font-size: 0.9em} #budget td, #budget th {white-space: nowrap; padding: 2px 8px}
.tab-wrapper button, .tabs button {white-space: nowrap}
"""

DEFAULT_METHOD = RunConfig().method
LOG = logging.getLogger("svd_explorer.ui")


def first_setting(store: Store) -> tuple[str, str, float]:
    """(method, allocation, ratio) the page opens with: the gallery's default run (chosen by bench/gallery.py
    on development text), else RunConfig's."""
    entry = store.gallery.entry(store.gallery.default) if store.gallery else None
    if entry is None:
        return DEFAULT_METHOD, "auto", RunConfig().ratio
    return entry.setting


class Page:
    """Named components, and events wired by name."""

    def __init__(self, store: Store):
        self.store, self.c = store, {}

    def __getitem__(self, name):
        return self.c[name]

    def add(self, name: str, component):
        """Register a component by name; a number control refuses what is not a number in one line (Gradio's
        own preprocess would fail on text with an error the page cannot show)."""
        if isinstance(component, (gr.Slider, gr.Number)):
            _guard_numbers(component, name)
        self.c[name] = component
        return component

    def on(self, trigger, fn, inputs: list[str], outputs: list[str], **kwargs):
        """Wire `fn(store, session, **named inputs) -> {name: value}` (or a generator of such) to `trigger`."""
        handler = self._generator(fn, outputs) if inspect.isgeneratorfunction(fn) else self._plain(fn, outputs)
        handler.__signature__ = inspect.Signature(
            [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)] +
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in inputs])
        handler.__annotations__ = {"request": gr.Request}
        return trigger(handler, inputs_kwargs={n: self.c[n] for n in inputs}, outputs=[self.c[n] for n in outputs],
                       **kwargs)

    def _convert(self, result: dict, outputs: list[str]) -> dict:
        out = {}
        for name, value in result.items():
            if name in outputs:
                out[self.c[name]] = gr.skip() if value is cb.SKIP else \
                    gr.update(**{k: v for k, v in value.items() if k != "__type__"}) \
                    if isinstance(value, dict) and value.get("__type__") == "update" else value
        return out

    def _plain(self, fn, outputs):
        def handler(request: gr.Request, **values):
            with _one_line(fn):
                self._checked(values)
                return self._convert(fn(self.store, request.session_hash, **values), outputs)
        return handler

    def _generator(self, fn, outputs):
        def handler(request: gr.Request, **values):
            with _one_line(fn):
                self._checked(values)
                for result in fn(self.store, request.session_hash, **values):
                    yield self._convert(result, outputs)
        return handler

    def _checked(self, values: dict) -> None:
        """Each value of the shape its control sends (an API caller may send a list for one choice, text or NaN
        for a number): one line naming the control, before any callback reads it."""
        for name, value in values.items():
            problem = shape_problem(self.c[name], value)
            if problem:
                raise gr.Error(f"{name.replace('_', ' ')}: {problem}", print_exception=False)


def shape_problem(component, value) -> str | None:
    """What is wrong with `value` for `component`, or None (None itself is left to the callback)."""
    if value is None:
        return None
    if isinstance(component, gr.Checkbox):
        return None if isinstance(value, bool) else "expects on or off"
    if isinstance(component, (gr.Slider, gr.Number)):
        return None if finite_number(value) else "expects a finite number"
    if isinstance(component, gr.CheckboxGroup) or getattr(component, "multiselect", False):
        return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "expects choices"
    if isinstance(component, (gr.Dropdown, gr.Radio, gr.Textbox)):
        return None if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "expects one value"
    return None


def _guard_numbers(component, name: str) -> None:
    """Wrap the component's preprocess: Gradio compares the payload with its bounds first, and text or a
    missing value there is a TypeError the page shows as a bare "Error"."""
    original, optional = component.preprocess, isinstance(component, gr.Number)

    def preprocess(payload):
        if not (finite_number(payload) or (payload is None and optional)):
            raise gr.Error(f"{name.replace('_', ' ')}: expects a finite number", print_exception=False)
        return original(payload)
    component.preprocess = preprocess


@contextlib.contextmanager
def _one_line(fn):
    """An error no callback expected reaches the visitor as one line, never a traceback; the log keeps it."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as err:
        LOG.exception("%s failed", getattr(fn, "__name__", fn))
        raise gr.Error(f"That request could not be handled ({type(err).__name__}); nothing was changed, and the "
                       f"page keeps working.", print_exception=False) from None


def build_demo(default_model: str = DEFAULT_MODEL, preload: bool = True, defaults: dict | None = None,
               limits: Limits | None = None, gallery: Path | None = None) -> gr.Blocks:
    """The whole app. `defaults` overrides the calibration/evaluation sizes (tests use tiny ones); `gallery`
    another gallery file than the installed one."""
    limits = limits or Limits.from_env()
    d = {"calib_samples": 16, "seq_len": 256, "eval_windows": 8, **(defaults or {})}
    downloads = Path(tempfile.gettempdir()) / "gradio" / "svd-explorer-downloads"
    store = Store(default_model, limits, downloads, preload, gallery)
    with gr.Blocks(title="SVD Explorer", delete_cache=(300, limits.download_seconds)) as demo:
        page = Page(store)
        _header(page, default_model)
        _options(page, d, limits)
        _tabs(page, limits)
        _wire(page, demo)
    demo.store, demo.limits, demo.components = store, limits, page.c     # components by name, for tests
    return demo


def launch(demo: gr.Blocks | None = None, **kwargs):
    """Queue and launch; host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set."""
    demo = demo or build_demo()
    limits = demo.limits
    demo.queue(max_size=limits.queue * 4, default_concurrency_limit=4)
    return demo.launch(theme=gr.themes.Soft(), css=CSS, max_file_size=f"{limits.upload_mb}mb", **kwargs)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def _header(page: Page, default_model: str) -> None:
    limits = page.store.limits
    models = [(f"{m} (embedded)" if m in EMBEDDED else m, m) for m in page.store.listed_models()]
    device = page.store.models.device
    method, allocation, ratio = first_setting(page.store)
    gr.Markdown("# SVD Explorer\nLow-rank (SVD-based) compression of causal language models: pick a model, a method, "
                "an allocation and a budget; watch the compression block by block; then compare the runs and talk "
                f"to the result. <small>Computing on **{device}**"
                f"{' · public Space: limits apply' if limits.public else ''}.</small>")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=520):
            with gr.Row():
                page.add("model", gr.Dropdown(models, value=default_model, allow_custom_value=not limits.public,
                                              label="Model", scale=3, info="embedded SmolLM2-135M or Gemma 3 270M" + (
                                                  "" if limits.public else ", a Hugging Face id or a local folder")))
                page.add("ratio", gr.Number(ratio, label="Ratio: share of parameters removed", step=0.05, scale=2,
                                            elem_id="ratio"))
            page.add("model_message", gr.Markdown(elem_id="model-message"))
            page.add("ratio_message", gr.Markdown(elem_id="ratio-message"))
            # one full-width row each: the longest method title is 66 characters and must not be cut at 1280 px
            page.add("method", gr.Dropdown([(c.title, n) for n, c in REGISTRY.items()], value=method,
                                           label="Method"))
            page.add("allocation", gr.Dropdown([("auto (the method's own)", "auto")] +
                                               [(c.title, n) for n, c in ALLOCATIONS.items()], value=allocation,
                                               label="Allocation: where the rank goes"))
            page.add("method_info", gr.Markdown(texts.method_markdown(method)))
            page.add("allocation_info", gr.Markdown(texts.allocation_markdown(allocation, method)))
            with gr.Row():
                page.add("compress", gr.Button("Compress", variant="primary", elem_id="compress"))
                page.add("stop", gr.Button("Stop", variant="stop", elem_id="stop"))
        with gr.Column(scale=4, min_width=420):
            page.add("status", gr.Markdown(texts.READY, elem_id="status"))
            page.add("budget", gr.Markdown(elem_id="budget"))
            page.add("disk_info", gr.Markdown(elem_id="disk"))


def _options(page: Page, d: dict, limits: Limits) -> None:
    with gr.Row(equal_height=False):
        with gr.Accordion("Calibration and evaluation", open=False, elem_id="acc-calibration"):
            choices = cb.calibration_choices()
            page.add("calib", gr.Dropdown(choices, value=choices[0][1], label="Calibration text"))
            page.add("calib_file", gr.File(label="…or your own text (.txt, .raw, .jsonl with 'text', .parquet)",
                                           file_types=[".txt", ".raw", ".jsonl", ".parquet"], type="filepath"))
            page.add("calib_file_message", gr.Markdown())
            page.add("calib_samples", gr.Slider(2, limits.calib_samples, value=d["calib_samples"], step=2,
                                                label="calibration windows"))
            page.add("seq_len", gr.Slider(16, limits.seq_len, value=d["seq_len"], step=16, label="tokens per window"))
            page.add("eval_windows", gr.Slider(0, limits.eval_windows, value=d["eval_windows"], step=1,
                                               label=cb.evaluation_label()))
        method, allocation, _ = first_setting(page.store)      # the options shown are those of the controls' values
        with gr.Accordion("Method options", open=False, elem_id="acc-method"):
            for name, cls in REGISTRY.items():
                with gr.Group(visible=name == method) as group:
                    for option in cls.options:
                        _option_controls(page, "opt", name, option)
                page.add(f"group__{name}", group)
        with gr.Accordion("Allocation options and refinement", open=False, elem_id="acc-allocation"):
            for name, cls in ALLOCATIONS.items():
                with gr.Group(visible=name == allocation) as group:
                    for option in cls.options:
                        _option_controls(page, "opt", name, option)
                page.add(f"agroup__{name}", group)
            page.add("refine", gr.Radio(["auto", "on", "off"], value="auto", label="block refinement (auto: on for "
                                                                                   "aa-svd only)"))
            with gr.Row():
                page.add("refine_steps", gr.Slider(0, limits.refine_steps, value=100, step=10,
                                                   label="steps per block"))
                page.add("refine_batch", gr.Slider(1, limits.refine_batch, value=1, step=1, label="windows per step"))
                page.add("refine_lr", gr.Number(3e-4, label="learning rate", minimum=1e-6, maximum=1e-1))
        with gr.Accordion("What the budget means", open=False, elem_id="acc-budget"):
            gr.Markdown(texts.EXPLAIN["budget"])


def _option_controls(page: Page, kind: str, owner: str, option) -> None:
    """One option's controls; an option whose unset value means 'chosen automatically' gets a 'fix' box that
    enables its field, so an untouched page never sends a value for it."""
    label = option.name.replace("_", " ")
    key = cb.option_key(kind, owner, option.name)
    if option.unset is not None:
        fix = page.add(cb.option_key("fix", owner, option.name),
                       gr.Checkbox(False, label=f"fix {label}", info=f"unticked: {option.unset}"))
        low, high = option.bounds or (None, None)
        field = page.add(key, gr.Number(None, label=label, info=option.help, interactive=False, minimum=low,
                                        maximum=high))
        middle = (low + high) / 2 if option.bounds else option.default
        fix.input(lambda on: gr.update(interactive=on, value=middle if on else None), fix, field, api_name=False,
                  queue=False)       # input, not change: a starting point sets both the box and the field
    elif option.choices and set(option.choices) == {True, False}:
        page.add(key, gr.Checkbox(option.default, label=label, info=option.help))
    elif option.choices:
        page.add(key, gr.Dropdown(list(option.choices), value=option.default, label=label, info=option.help))
    elif isinstance(option.default, str):
        page.add(key, gr.Textbox(option.default, label=label, info=option.help, max_length=MAX_TEXT))
    else:
        low, high = option.bounds or (None, None)
        page.add(key, gr.Number(option.default, label=label, info=option.help, minimum=low, maximum=high,
                                precision=0 if option.type is int else None))


def _starts(page: Page) -> None:
    """The starting points the gallery allows, one button each, and what to look at."""
    offered = starts.available(page.store.gallery)
    if not offered:
        return
    with gr.Row():
        gr.Markdown("**Starting points** (precomputed, instant):")
        for i, point in enumerate(offered):
            page.add(f"start__{i}", gr.Button(point.title, size="sm", elem_id=f"start-{i}"))
    page.add("start_info", gr.Markdown(elem_id="start-info"))


def _tabs(page: Page, limits: Limits) -> None:
    _starts(page)
    with gr.Row():
        gallery = cb.gallery_choices(page.store)           # offered to every visitor (and API client) from the start
        page.add("run_box", gr.Dropdown(choices=gallery, label="Run shown", interactive=True, elem_id="run-box",
                                        scale=2))
        page.add("beside_box", gr.Dropdown(choices=gallery, multiselect=True, scale=3, elem_id="beside-box",
                                           label="gallery runs drawn beside it (Depth error, Ranks, Compare runs)"))
    with gr.Tabs():
        with gr.Tab("Run"):
            page.add("metrics", gr.Markdown("Run a compression: its figures appear here."))
            with gr.Row():
                page.add("block_box", gr.Slider(0, 1, value=0, step=1, label="block", visible=False))
                page.add("kind_box", gr.Dropdown(choices=[], label="projection", visible=False))
        with gr.Tab("Spectra"):
            gr.Markdown(texts.EXPLAIN["spectra"])
            page.add("spectrum_plot", gr.Plot(plots.empty("the spectra appear as soon as a projection is done"),
                                              elem_id="spectrum"))
        with gr.Tab("Depth error"):
            gr.Markdown(texts.EXPLAIN["depth"])
            page.add("depth_metric", gr.Radio([("relative L2", "rel_error"), ("cosine distance", "cosine_distance")],
                                              value="rel_error", label="measure"))
            page.add("depth_plot", gr.Plot(plots.empty("run a compression"), elem_id="depth"))
            gr.Markdown(texts.EXPLAIN["heatmap"])
            page.add("heatmap_plot", gr.Plot(plots.empty("run a compression")))
        with gr.Tab("Ranks"):
            gr.Markdown(texts.EXPLAIN["ranks"])
            page.add("rank_plot", gr.Plot(plots.empty("run a compression"), elem_id="ranks"))
        _plugin_tabs(page)
        with gr.Tab("Refinement"):
            gr.Markdown(texts.EXPLAIN["refine"])
            page.add("refine_plot", gr.Plot(plots.empty("run aa-svd, or any method with refinement on")))
        with gr.Tab("Cost"):
            gr.Markdown(texts.EXPLAIN["cost"])
            page.add("cost_table", gr.Markdown("Run a compression: both models' serving cost appears here."))
            page.add("cost_plot", gr.Plot(plots.empty("run a compression"), elem_id="cost"))
        _compare_tab(page, limits)
        _generate_tab(page, limits)
        _zero_shot_tab(page, limits)
        _download_tab(page)


def _plugin_tabs(page: Page) -> None:
    """The tabs the registered methods declare (saes-svd's ACES search), each with its explanation."""
    for tab in cb.plugin_tabs():
        with gr.Tab(tab.title):
            gr.Markdown(tab.explanation)
            for i, name in enumerate(tab.figures):
                page.add(f"{name}_plot", gr.Plot(plots.empty(tab.missing), elem_id=None if i else name))


def _download_tab(page: Page) -> None:
    with gr.Tab("Download"):
        gr.Markdown(texts.EXPLAIN["download"])
        page.add("download_layout", gr.Radio(
            [("factors: the smallest folder; transformers loads it with trust_remote_code=True", "factors"),
             ("merged: a dense checkpoint any tool loads (same quality, no savings)", "merged")],
            value="factors", label="what the zip holds", elem_id="download-layout"))
        page.add("export", gr.Button("Prepare the download", elem_id="export"))
        page.add("download_info", gr.Markdown())
        page.add("model_file", gr.File(label="compressed model (.zip)"))
        page.add("json_file", gr.File(label="run result (.json)"))


def _compare_tab(page: Page, limits: Limits) -> None:
    with gr.Tab("Compare runs"):
        gr.Markdown(texts.EXPLAIN["compare"])
        page.add("compare_metric", gr.Radio([("perplexity", "ppl_compressed"), ("KL", "kl_to_original"),
                                             ("top-1 agreement", "top1_agreement")], value="ppl_compressed",
                                            label="quality"))
        page.add("compare_plot", gr.Plot(plots.empty("runs appear here"), elem_id="compare"))
        page.add("history", gr.Dataframe(headers=["run", "allocation", "ratio", "kept", "ppl", "KL", "top-1",
                                                  "seconds"], interactive=False))
        with gr.Row():
            page.add("sweep_folder", gr.Textbox(label="sweep folder on this machine", visible=not limits.public,
                                                max_length=500))
            page.add("sweep_zip", gr.File(label="…or a zip of a sweep folder (JSON results)", file_types=[".zip"],
                                          type="filepath"))
        page.add("open_sweep", gr.Button("Add the sweep to the comparison"))
        page.add("sweep_message", gr.Markdown())


def _generate_tab(page: Page, limits: Limits) -> None:
    with gr.Tab("Side by side"):
        gr.Markdown(texts.EXPLAIN["generate"] + " " + GENERATION_HINT)
        examples = page.store.gallery.prompts if page.store.gallery else EXAMPLES   # the ones it holds answers to
        page.add("prompt", gr.Textbox(value=examples[0], label="prompt", lines=2,
                                                max_length=limits.prompt_chars))
        gr.Examples(examples, inputs=page["prompt"])
        with gr.Row():
            page.add("new_tokens", gr.Slider(8, limits.new_tokens, value=64, step=8, label="new tokens"))
            page.add("temperature", gr.Slider(0, 1.5, value=0, step=0.1, label="temperature"))
        page.add("generate", gr.Button("Generate with both models", elem_id="generate"))
        page.add("generate_note", gr.Markdown(elem_id="generate-note"))
        with gr.Row():
            page.add("original_out", gr.Textbox(label="original", lines=8))
            page.add("compressed_out", gr.Textbox(label="compressed", lines=8))


GENERATION_HINT = ("Every gallery run in \"Run shown\" holds both models' greedy answers to the example prompts: "
                   "compare methods and budgets in a click (the answers of each method are tabulated in "
                   "docs/RESULTS.md, \"What a student sees side by side\"). Your own runs generate live.")


def _zero_shot_tab(page: Page, limits: Limits) -> None:
    with gr.Tab("Zero-shot"):
        gr.Markdown(texts.EXPLAIN["zero_shot"])
        tasks, note = cb.task_choices(page.store)
        gr.Markdown(note)
        page.add("tasks", gr.CheckboxGroup(tasks, value=[t for t in ("piqa", "arc_easy") if t in tasks],
                                           label="tasks that can run here"))
        page.add("limit", gr.Slider(10, limits.zero_shot_limit, value=50, step=10, label="examples per task"))
        page.add("zero_shot", gr.Button("Evaluate original and compressed", interactive=bool(tasks)))
        page.add("zero_status", gr.Markdown())
        page.add("zero_table", gr.Dataframe(headers=["task", "original", "compressed"], interactive=False))
        page.add("zero_plot", gr.Plot(plots.empty("run the tasks")))


# ---------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------

# Output names of the public endpoints (what gradio_client gets back, in this order).
BUDGET = ["budget", "ratio_message", "model_message"]
COMPRESS = ["status", "ratio_message", "model_message", "run_box", "spectrum_plot", "depth_plot", "heatmap_plot"]
PLUGIN_PLOTS = [f"{name}_plot" for tab in cb.plugin_tabs() for name in tab.figures]   # declared by methods
FIGURES = ["metrics", "spectrum_plot", "depth_plot", "heatmap_plot", "rank_plot", *PLUGIN_PLOTS, "refine_plot",
           "cost_table", "cost_plot", "compare_plot", "history"]
SHOW = ["run_box", "block_box", "kind_box", "depth_metric", "compare_metric", "beside_box"]
OPENED = ["status", "run_box", "beside_box", *cb.option_controls()]
START = ["start_info", "status", "run_box", "beside_box", "model", "method", "allocation", "ratio",
         *cb.option_controls()]
DOWNLOAD = ["download_info", "model_file", "json_file"]
ZERO_SHOT = ["zero_status", "zero_table", "zero_plot"]


def _wire(page: Page, demo: gr.Blocks) -> None:
    run_inputs = ["model", "method", "allocation", "ratio"] + cb.option_controls()
    compress_inputs = run_inputs + ["calib", "calib_file", "calib_samples", "seq_len", "eval_windows", "refine",
                                    "refine_steps", "refine_lr", "refine_batch", "depth_metric"]
    show_inputs, figures, budget_out = SHOW, FIGURES, BUDGET
    for trigger in ("model", "method", "allocation", "ratio"):
        page.on(page[trigger].change, cb.budget, run_inputs, budget_out, api_name=False)
    page.on(demo.load, cb.budget, run_inputs, budget_out, api_name="budget")
    page.on(demo.load, cb.disk, [], ["disk_info"], api_name=False)
    _wire_gallery(page, demo)

    def closed(request: gr.Request):
        cb.unload(page.store, request.session_hash)
    demo.unload(closed)
    page.on(page["method"].change, cb.method_changed, ["method", "allocation"],
            ["method_info", "allocation_info"] + [f"group__{n}" for n in REGISTRY], api_name="method_info")
    page.on(page["allocation"].change, cb.allocation_changed, ["method", "allocation"],
            ["allocation_info"] + [f"agroup__{n}" for n in ALLOCATIONS], api_name=False)
    page.on(page["calib_file"].change, cb.upload_checked, ["calib_file"], ["calib_file_message"], api_name=False)
    compress = page.on(page["compress"].click, cb.compress, compress_inputs, COMPRESS, api_name="compress",
                       concurrency_limit=None)
    compress.then(**_then(page, cb.run_selected, ["run_box"], ["block_box", "kind_box"])).then(
        **_then(page, cb.show, show_inputs, figures)).then(**_then(page, cb.disk, [], ["disk_info"]))
    page.on(page["stop"].click, cb.stop, ["status"], ["status"], api_name="stop", concurrency_limit=None, queue=False)
    selected = page.on(page["run_box"].input, cb.run_selected, ["run_box"], ["block_box", "kind_box"], api_name=False)
    selected.then(**_then(page, cb.show, show_inputs, figures))
    for control in ("block_box", "kind_box", "depth_metric", "compare_metric", "beside_box"):
        page.on(page[control].input, cb.show, show_inputs, figures, api_name=False)
    page.on(gr.Button("Redraw", visible=False).click, cb.show, show_inputs, figures, api_name="show_run")
    page.on(page["open_sweep"].click, cb.open_sweep, ["sweep_folder", "sweep_zip", "compare_metric"],
            ["sweep_message", "compare_plot", "compare_metric"], api_name="open_sweep")
    generation = page.on(page["generate"].click, cb.generate, ["run_box", "prompt", "new_tokens", "temperature"],
            ["original_out", "compressed_out", "generate_note"], api_name="generate", concurrency_limit=2)
    page["stop"].click(None, cancels=[generation], api_name=False)     # Stop also ends a generation
    page.on(page["zero_shot"].click, cb.zero_shot, ["run_box", "tasks", "limit"], ZERO_SHOT, api_name="zero_shot",
            concurrency_limit=None)
    page.on(page["export"].click, cb.prepare_download, ["run_box", "download_layout"], DOWNLOAD, api_name="export",
            concurrency_limit=1)


def _wire_gallery(page: Page, demo: gr.Blocks) -> None:
    """The page opens on the gallery; each starting point shows its runs. Both then draw every figure."""
    def then_show(event):
        event.then(**_then(page, cb.run_selected, ["run_box"], ["block_box", "kind_box"])).then(
            **_then(page, cb.show, SHOW, FIGURES))
    then_show(page.on(demo.load, cb.opened, [], OPENED, api_name=False))
    for i, point in enumerate(starts.available(page.store.gallery)):
        then_show(page.on(page[f"start__{i}"].click, partial(cb.start, title=point.title), [], START,
                          api_name=False))


def _then(page: Page, fn, inputs, outputs) -> dict:
    """Keyword arguments of a `.then(...)` step wired like Page.on."""
    captured = {}

    def trigger(handler, **kwargs):
        captured.update(fn=handler, **kwargs)
    page.on(trigger, fn, inputs, outputs)
    return captured | {"api_name": False}
