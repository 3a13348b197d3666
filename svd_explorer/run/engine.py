"""A whole run, the only place one is orchestrated: the CLI, the app, the benchmarks and the sweeps call it.

run(config) validates the RunConfig, decides where the weights live, loads the model, draws the
calibration (and, when a search needs it, development) windows, gets the original-stream statistics
(cached when useful), allocates the ranks, compresses, measures and saves, and returns a RunRecord.
Progress goes to one `emit(kind, data)` callback: "status" lines, "progress" within a phase, and the
pipeline's "start" / "projection" / "block" / "done" events.
"""
from __future__ import annotations

import copy
import hashlib
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache.statistics import (
    MemoryStatistics,
    cache_key,
    cached_columns,
    cached_tensors,
    collect,
    evict,
    key_folder,
    load_or_compute,
    size_limit,
)
from ..compress.allocation import AllocationContext, NeedsData
from ..compress.candidates import DevScorer
from ..compress.decompositions import DecompositionStore, digest, reusing
from ..compress.gradients import dropped_component_scores, mean_gradients
from ..compress.kept_stream import KeptStream, limit_bytes
from ..compress.pipeline import Passes, PrepareContext, cancel_check, compress_model
from ..compress.quantize import quantize
from ..compress.stats import Statistics
from ..files import cache_dir
from ..model.blocks import count_parameters, find_layout
from ..model.devices import Clock, describe_linalg, model_device
from ..model.loading import LoadedModel, load_model
from ..model.lowrank import dense_weight_and_bias
from ..model.offload import Placement, device_map, fixed_mmap_threshold, is_offloaded, onloaded
from ..model.saving import folder_bytes, save_compressed, save_merged, versions
from ..model.serving import CostSettings, compare_cost, serving_cost
from ..text.metrics import batch_for, evaluate, vocabulary
from ..text.sources import development_windows, resolve_calibration, resolve_evaluation, text_windows
from ..text.zero_shot import run_tasks
from .config import RunConfig, command_line
from .plan import Plan
from .plan import plan as make_plan
from .records import RunRecord
from .timings import Phases

EVAL_SEED_OFFSET = 1       # 'self' evaluation text must differ from 'self' calibration text
DEV_SEQ_LEN = 256          # tokens of a search's development window (or the run's, if shorter)


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux, VmHWM of its own address space: ru_maxrss keeps the
    high-water mark across fork and exec, so a run started from a large process (a test runner) would
    report its parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, others KiB


@torch.no_grad()
def forward_seconds(model, windows: torch.Tensor, batch_size: int) -> float:
    """One plain forward of `model` over `windows` (after a one-batch warm-up), in seconds; a batch holds at
    most the evaluation's logits bound (a 262k-token vocabulary at 2048 tokens: one window a batch)."""
    device = model_device(model)
    batch_size = batch_for(windows.shape[1], vocabulary(model), batch_size)
    model(input_ids=windows[:1].to(device), use_cache=False)
    clock = Clock(device)
    for i in range(0, len(windows), batch_size):
        model(input_ids=windows[i:i + batch_size].to(device), use_cache=False)
    return clock.seconds()


def _quiet(kind, data):
    pass


def stoppable(emit, check):
    """`emit` that first raises Cancelled when the run was stopped: every phase that reports progress
    (sampling text from the model, statistics, evaluation) then also ends within one step of Stop."""
    def stopping_emit(kind, data):
        if kind == "progress":
            check()
        emit(kind, data)
    return stopping_emit


def _progress_emitter(emit, what: str):
    """progress(done, total) -> a 'progress' event with a sentence, at most a few per second."""
    last = [0.0]

    def progress(done, total):
        now = time.time()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            emit("progress", {"step": f"{what}: {done} of {total}", "done": done, "total": total})
    return progress


# ---------------------------------------------------------------------------------------------
# Loading, with the placement decided first
# ---------------------------------------------------------------------------------------------

def load_for(plan: Plan, emit=_quiet) -> tuple[LoadedModel, Placement]:
    """The model of `plan`, in memory or offloaded as the plan decided (stated in the log)."""
    config, placement = plan.config, plan.placement
    if plan.saved_folder:
        lm = load_model(config.model, dtype=plan.dtype, device=plan.device)
        lm.placement = placement.describe()
        return lm, placement
    emit("status", f"placement: {placement.sentence()}")
    if placement.offloaded:
        fixed_mmap_threshold()
    emit("status", f"loading {config.model}")
    lm = load_model(config.model, revision=config.revision, dtype=plan.dtype, device=plan.device, token=plan.token,
                    device_map=device_map(plan.meta, plan.layout.blocks_path, placement),
                    offload_folder=placement.folder)
    lm.placement = placement.describe()
    return lm, placement


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def calibration_windows(lm: LoadedModel, source: str, samples: int, seq_len: int, seed: int, emit=_quiet):
    """Random windows of the resolved calibration source: (token ids [samples, seq_len], description)."""
    return text_windows(resolve_calibration(source), lm.model, lm.tokenizer, samples, seq_len, seed,
                        split="train", consecutive=False,
                        progress=_progress_emitter(emit, "sampling calibration text from the model (tokens)"))


def evaluation_windows(lm: LoadedModel, source: str, windows: int | None, seq_len: int, seed: int, emit=_quiet):
    source = resolve_evaluation(source)
    if source == "none" or windows == 0:
        return None, "none"
    return text_windows(source, lm.model, lm.tokenizer, windows or 0, seq_len, seed + EVAL_SEED_OFFSET,
                        split="test", consecutive=True,
                        progress=_progress_emitter(emit, "sampling evaluation text from the model (tokens)"))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What run() returns: the typed record, and the compressed model when the caller keeps it."""

    record: RunRecord
    model: object = None
    loaded: LoadedModel | None = None
    extras: dict = field(default_factory=dict)


def as_plan(plan: Plan | RunConfig, token=None) -> Plan:
    """A RunConfig is planned here (the Python API's one-liner); a Plan is used as it is, never checked again."""
    return plan if isinstance(plan, Plan) else make_plan(plan, token)


def run(plan: Plan | RunConfig, *, loaded: LoadedModel | None = None, emit=None, cancel=None,
        keep_model: bool = False, measure_forward: bool = True, token=None) -> Outcome:
    """Compress and measure as `plan` says; `loaded` reuses a model already in memory (the app)."""
    check = cancel_check(cancel)
    heard = emit or _quiet
    emit = stoppable(heard, check)
    plan = as_plan(plan, token)
    config = plan.config
    phases = Phases(plan.device, on_end=lambda name, seconds: heard("phase", {"name": name, "seconds": seconds}))
    with phases("loading"):
        lm, placement = _model_and_placement(plan, loaded, emit)
    check()
    emit("status", f"model: {lm.description}")
    with phases("text"):
        texts = _Texts.draw(plan, lm, emit, check)
    forward = None
    if measure_forward:
        emit("status", "timing one plain forward over the calibration set")
        with phases("forward"):
            forward = forward_seconds(lm.model, texts.calib_ids, config.batch_size)
    compressed, out = _compress(plan, lm, placement, texts, emit, check, cancel, phases)
    out.calib_forward_seconds = forward
    served = _quantized(compressed, config.quantize, emit)
    with phases("evaluation"):
        _measure(out, config, lm, served, texts.eval_ids, emit, check)
    if config.cost:
        with phases("cost"):
            out.cost = _serving_cost(config, lm, served, placement, emit, check)
    else:
        out.cost = {"skipped": "not measured: serving cost was switched off (--no-cost)"}
    if config.output:
        with phases("saving"):
            _save(out, config, compressed, lm.tokenizer, emit)
    out.peak_rss_mb, out.timings = peak_rss_mb(), phases.breakdown()
    return Outcome(out, served if keep_model else None, lm)


def _save(out: RunRecord, config: RunConfig, compressed, tokenizer, emit) -> None:
    emit("status", f"saving to {config.output}" + (" (merged into dense weights)" if config.merge else ""))
    out.output = str(config.output)
    out.output_bytes = export(out, compressed, tokenizer, config.output, config.save_dtype, config.merge)


def _model_and_placement(plan: Plan, loaded: LoadedModel | None, emit) -> tuple[LoadedModel, Placement]:
    """The model to compress: loaded now as the plan decided, or the one the caller holds."""
    if loaded is None:
        return load_for(plan, emit)
    if loaded.placement:
        return loaded, Placement(**loaded.placement)
    return loaded, Placement("memory", str(Passes.of(loaded.model).device), 0, 0, "the model was already loaded")


@dataclass
class _Texts:
    """The token windows of one run: calibration (and how long drawing it took) and evaluation."""

    calib_ids: torch.Tensor
    calib_desc: str
    prep_seconds: float
    eval_ids: torch.Tensor | None
    eval_desc: str
    eval_source: str

    @classmethod
    def draw(cls, plan: Plan, lm: LoadedModel, emit, check) -> "_Texts":
        """The windows of the sources the plan resolved (the run reads what its plan decided)."""
        config = plan.config
        clock = Clock()
        emit("status", "preparing the calibration text")
        calib = calibration_windows(lm, plan.calibration, config.calib_samples, config.seq_len, config.seed, emit)
        prep = clock.seconds()
        emit("status", f"calibration: {calib[1]}")
        check()
        emit("status", "preparing the evaluation text")
        evaluation = evaluation_windows(lm, plan.evaluation, config.eval_windows, config.seq_len, config.seed, emit)
        emit("status", f"evaluation: {evaluation[1]}")
        return cls(*calib, prep, *evaluation, plan.evaluation)


def _compress(plan: Plan, lm, placement, texts: _Texts, emit, check, cancel, phases: Phases):
    """(compressed model, its RunRecord before measuring): statistics, allocation, the pipeline."""
    config, method, allocation, refine = plan.config, plan.method, plan.allocation, plan.refine
    study = _Study(config, lm, method, texts.calib_ids, texts.calib_desc, emit, check,
                   keep_outputs=not placement.offloaded)     # offloading is for models that barely fit
    with phases("statistics"):
        statistics = study.statistics(needed_by_allocation=allocation.needs_statistics)
    with phases("allocation"):
        method.prepare(_prepare_context(lm, texts.calib_ids, check, emit, remember=study.remember))
        allocated = allocation.allocate(study.context(allocation))
    emit("status", f"compressing with {method.name} at ratio {config.ratio:g} ({allocation.name} allocation"
                   f"{', refinement on' if refine else ''})")
    with reusing(study.decompositions()) as stored:
        compressed, record = compress_model(
            lm.model, method, config.ratio, texts.calib_ids, ranks=allocated.ranks, refine=refine,
            batch_size=config.batch_size, precision=config.precision, callback=emit, cancel=cancel,
            statistics=statistics, placement=placement if placement.offloaded else None, prepared=True,
            kept=study.kept)
    _split_compression(phases, record)
    record.extras.update(allocated.info)
    record.calibration.update(source=config.calib, description=texts.calib_desc, samples=config.calib_samples,
                              seed=config.seed, statistics=study.statistics_state,
                              statistics_seconds=phases.seconds["statistics"],
                              decompositions=stored.describe() if stored else "not stored",
                              original_outputs=study.kept.describe(),
                              **({"prepared": study.prepared} if study.prepared else {}))
    return compressed, _record(
        config, lm, record, placement, texts, allocation_seconds=phases.seconds["allocation"],
        allocation={"name": allocation.name, "options": dict(allocation.config), **_allocation_summary(allocated)},
        refine=refine.describe() if refine else None)


def _split_compression(phases: Phases, record) -> None:
    """The pipeline's time, told apart: refinement (each block's own clock) and the rest."""
    refinement = sum((b.refine or {}).get("seconds", 0.0) for b in record.blocks)
    phases.add("compression", record.seconds - refinement)
    phases.add("refinement", refinement)


def _record(config: RunConfig, lm: LoadedModel, record, placement: Placement, texts: _Texts, **decided) -> RunRecord:
    """The run's record around the pipeline's: where and how it ran, what it will be evaluated on, and what
    the run `decided` (allocation, refinement)."""
    passes = Passes.of(lm.model)
    return RunRecord(
        **decided,
        config=config.to_dict(), model=lm.source, model_revision=lm.revision, compression=record,
        calib_prep_seconds=texts.prep_seconds, placement=placement.describe(), device=str(passes.device),
        dtype=str(passes.stream_dtype).removeprefix("torch."), linalg=describe_linalg(passes.device),
        versions=versions(), original_bytes=lm.file_bytes,
        evaluation={"source": texts.eval_source, "description": texts.eval_desc,
                    "windows": 0 if texts.eval_ids is None else len(texts.eval_ids), "seq_len": config.seq_len})


def _measure(out: RunRecord, config: RunConfig, lm: LoadedModel, compressed, eval_ids, emit, check) -> None:
    """Perplexity, KL and top-1 on the evaluation text, then development text, other sets and tasks."""
    if eval_ids is not None:
        emit("status", "evaluating the original and the compressed model")
        out.scores = _scores(evaluate(compressed, eval_ids, reference=lm.model, should_stop=check,
                                      progress=_progress_emitter(emit, "evaluation windows")))
    if config.dev_windows:
        check()
        ids, desc = held_out_windows(config, lm)
        emit("status", "evaluating on development text")
        out.dev_ppl, out.dev_ppl_original = _perplexities(lm, compressed, ids, desc, check)
    for source in config.extra_eval:
        check()
        ids, desc = evaluation_windows(lm, source, config.eval_windows, config.seq_len, config.seed, emit)
        emit("status", f"evaluating on {source}")
        out.extra_ppl[source], out.extra_ppl_original[source] = _perplexities(lm, compressed, ids, desc, check)
    if config.tasks:
        out.tasks = zero_shot(lm, compressed, list(config.tasks), config.limit, config.task_data, emit, check)


def _quantized(compressed, scheme: str, emit):
    """The model the run measures: the compressed one, or a quantised copy of it (the saved folder keeps the
    factors: quantised tensors have no safetensors form, and the model card says how to quantise again)."""
    if scheme == "none":
        return compressed
    emit("status", f"quantising the compressed model's blocks to {scheme} (torchao, weight-only)")
    return quantize(copy.deepcopy(compressed), scheme)


def _serving_cost(config: RunConfig, lm: LoadedModel, compressed, placement: Placement, emit, check) -> dict:
    """Prefill and decode speed, memory and bytes of both models; an offloaded run would time its disk."""
    if placement.offloaded:
        return {"skipped": "not measured: the blocks are offloaded, so a timing would measure the transfers"}
    emit("status", "measuring serving cost: prefill and decode speed of both models")
    settings = CostSettings(prefill_tokens=config.seq_len)
    return compare_cost(lm.model, compressed, settings, lm.model.config.vocab_size, check)


def held_out_windows(config: RunConfig, lm: LoadedModel):
    """The run's reported development windows: overlapping neither its calibration nor its search windows."""
    return development_windows(resolve_calibration(config.calib), lm.model, lm.tokenizer, config.dev_windows,
                               config.seq_len, config.seed, (config.calib_samples, config.seq_len),
                               searched=search_windows(config))


def _perplexities(lm: LoadedModel, compressed, ids, description: str, check) -> tuple[float, float]:
    """(compressed, original) perplexity on `ids`; the original's is kept on the loaded model for the next run
    that compares against it, by the tokens themselves (two seeds' development windows share a description,
    not their text)."""
    key = ("ppl", description, hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest())
    if key not in lm.scores:
        lm.scores[key] = evaluate(lm.model, ids, should_stop=check)["ppl"]
    return evaluate(compressed, ids, should_stop=check)["ppl"], lm.scores[key]


def prepare_statistics(plan: Plan | RunConfig, emit=None, loaded: LoadedModel | None = None) -> dict:
    """What a sweep does once per seed: time one plain forward over the calibration set and fill the
    statistics cache (when it is on); `loaded` is the plan's model when the caller holds it already."""
    emit = emit or _quiet
    plan = as_plan(plan)
    config = plan.config
    lm = loaded or load_for(plan, emit)[0]
    calib_ids, calib_desc = calibration_windows(lm, config.calib, config.calib_samples, config.seq_len, config.seed,
                                                emit)
    forward = forward_seconds(lm.model, calib_ids, config.batch_size)
    state, clock = "off", Clock()
    if config.stats_cache != "off":
        study = _Study(config, lm, plan.method, calib_ids, calib_desc, emit, lambda: None)
        _, state = load_or_compute(study._root(), study.key, lm.model, calib_ids, config.batch_size,
                                   config.precision, emit)
    return {"calib_forward_seconds": forward, "seconds": clock.seconds(), "state": state}


def keeps_decompositions(dense_params: int, limit: float | None = None) -> bool:
    """Whether a model's SVDs are stored beside its statistics: when they would take at most a quarter of the
    cache's bound (8 bytes a dense parameter, an upper estimate: SmolLM2-135M's take 448 MB, estimated 849)."""
    return 8 * dense_params <= (size_limit() if limit is None else limit) / 4


def search_windows(config: RunConfig) -> tuple[int, int]:
    """(count, length) of the development windows every search scores on; reports avoid them."""
    return config.search_windows, min(DEV_SEQ_LEN, config.seq_len)


def _scores(scores: dict) -> dict:
    return {"ppl_original": scores["ppl_reference"], "ppl_compressed": scores["ppl"],
            "kl_to_original": scores["kl_to_original"], "top1_agreement": scores["top1_agreement"]}


def _prepare_context(lm, calib_ids, check, emit, remember=None):
    return PrepareContext(lm.model, find_layout(lm.model), calib_ids, check, emit, remember)


def _allocation_summary(allocated) -> dict:
    """What the record keeps of an allocation: its choice, not its whole sensitivity table."""
    return {"info": {k: v for k, v in allocated.info.items() if k != "table"},
            "dense": sum(1 for r in allocated.ranks.values() if r is None)}


class _Study:
    """Original-stream statistics, development text and the allocation context of one run, made lazily."""

    def __init__(self, config, lm, method, calib_ids, calib_desc, emit, check, keep_outputs: bool = False):
        self.config, self.lm, self.method, self.calib_ids, self.calib_desc = config, lm, method, calib_ids, calib_desc
        self.emit, self.check = emit, check
        self.cached = None
        # the statistics pass's block outputs, filled only when this run computes statistics
        self.kept = KeptStream(find_layout(lm.model).num_blocks, limit_bytes() if keep_outputs else 0)
        self.statistics_state = "computed in the pass"
        self.prepared = {}         # kind -> cache state of what the method measured before the blocks
        self.scorer, self.dev_ids = None, None
        self.key = cache_key(lm.source, lm.revision, calib_desc, digest(calib_ids), config.calib_samples,
                             config.seq_len, config.seed, config.batch_size, Passes.of(lm.model, config.precision))

    def statistics(self, needed_by_allocation: bool):
        """Cached statistics when the method reads only the original stream or the allocation needs them."""
        wanted = needed_by_allocation or not self.method.sequential
        if self.config.stats_cache == "off":
            if needed_by_allocation:
                self.cached = _in_memory(collect(self.lm.model, self.calib_ids, self.config.batch_size,
                                                 self.config.precision, self.emit, self.check, self.kept),
                                         self.lm.model)
                self.statistics_state = "computed once for the allocation (no cache)"
            return self.cached
        root = self._root()
        if not wanted and not (key_folder(root, self.key) / "manifest.json").exists():
            return None
        self.cached, state = load_or_compute(root, self.key, self.lm.model, self.calib_ids, self.config.batch_size,
                                             self.config.precision, self.emit, self.check, self.kept)
        self.statistics_state = f"cache {state}"
        return self.cached

    def remember(self, kind: str, compute) -> dict:
        """A method's model-level measurement (fwsvd's Fisher importances), cached in the statistics' folder
        (so the size limit evicts it with them)."""
        if self.config.stats_cache == "off":
            self.prepared[kind] = "computed (no cache)"
            return compute()
        tensors, state = cached_tensors(key_folder(self._root(), self.key), kind, {"statistics": self.key}, compute)
        self._bounded()
        self.prepared[kind] = f"cache {state}"
        self.emit("status", f"{self.method.name}: {kind} " + ("read from the cache" if state == "hit" else state))
        return tensors

    def decompositions(self) -> DecompositionStore | None:
        """Where this run's SVDs are reused from and kept: beside its cached statistics, when the method reads
        only the original stream (its matrices do not depend on the ratio) and they would take at most a
        quarter of the cache's size limit."""
        if self.method.sequential or self.cached is None or self.cached.path is None:
            return None
        return DecompositionStore(key_folder(self._root(), self.key) / "decompositions") \
            if keeps_decompositions(find_layout(self.lm.model).dense_params) else None

    def _bounded(self) -> None:
        """The cache back under its size bound after this run stored something beside its statistics."""
        evict(self._root(), keep=key_folder(self._root(), self.key))

    def _root(self):
        return cache_dir("stats") if self.config.stats_cache is None else _folder(self.config.stats_cache)

    def context(self, allocation) -> AllocationContext:
        layout = find_layout(self.lm.model)
        return AllocationContext(layout, self.config.ratio, self.method, spectra=self._spectra,
                                 trial=lambda ranks: self._scorer().plan_perplexity(ranks),
                                 sensitivity=self._sensitivity, first_order=self._first_order, emit=self.emit,
                                 check=self.check)

    def _spectra(self) -> dict:
        names = [p.name for p in find_layout(self.lm.model).projections]
        if self.scorer is not None and all(name in self.scorer.spectra for name in names):
            return dict(self.scorer.spectra)     # the sensitivity candidates' SVDs already gave every spectrum
        return {p.name: self.method.truncated_spectrum(weight, stats, p.name).cpu()
                for p, weight, stats in self._projections()}

    def _projections(self):
        """(projection, its dense weight on the stream's device, its original-stream statistics), in order."""
        layout = find_layout(self.lm.model)
        home = Passes.of(self.lm.model).home
        for p in layout.projections:
            self.check()
            with onloaded(layout.blocks[p.block]) as block:
                weight = dense_weight_and_bias(block.get_submodule(p.local))[0].detach().to(home)
            s = self.cached.get(p.block, p.group)
            yield p, weight, Statistics.original_only(s.tokens, s.gram_f, s.absmean)

    def _development(self) -> torch.Tensor:
        """The development windows searches score on (drawn once per run, disjoint from the calibration)."""
        if self.dev_ids is None:
            source = resolve_calibration(self.config.calib)
            self.dev_ids, desc = development_windows(source, self.lm.model, self.lm.tokenizer,
                                                     *search_windows(self.config), self.config.seed,
                                                     (self.config.calib_samples, self.config.seq_len))
            self.emit("status", f"development text: {desc}")
            self.dev_description = desc
        return self.dev_ids

    def _scorer(self):
        if self.scorer is None:
            self.scorer = DevScorer(self.lm.model, self._development(), self.cached, self.method,
                                    precision=self.config.precision, check=self.check)
        return self.scorer

    def _first_order(self) -> dict:
        """name -> the first-order loss change of dropping each singular component of what the method's
        original-stream form truncates, from the original model's mean gradient on the development windows
        (kept beside the statistics: it depends on neither the ratio nor the allocation's options)."""
        if is_offloaded(self.lm.model):
            raise NeedsData("the first-order scores need the whole model in memory for a backward pass; use "
                            "--offload none")
        windows, form = self._development(), self.method.original_stream_form()

        def compute():
            self.emit("status", f"first-order scores: gradients of the loss on {len(windows)} development windows")
            gradients = mean_gradients(self.lm.model, find_layout(self.lm.model).projections, windows, self.check)
            return {p.name: dropped_component_scores(weight, form.truncated_directions(weight, stats, p.name),
                                                     gradients.pop(p.name).to(weight.device)).cpu()
                    for p, weight, stats in self._projections()}
        if self.config.stats_cache == "off":
            return compute()
        key = {"statistics": self.key, "method": form.name, "options": form.config,
               "development": self.dev_description}
        scores, state = cached_tensors(key_folder(self._root(), self.key), "first-order", key, compute)
        self._bounded()
        self.prepared["first-order"] = f"cache {state}"
        return scores

    def _sensitivity(self, fractions, score="perplexity"):
        scorer = self._scorer()
        proxy = scorer.method     # methods with one original-stream form (SVD-LLM for aa-svd, saes-svd) share a table
        key = {"statistics": self.key, "method": proxy.name, "options": proxy.config,
               "development": self.dev_description, **({"score": score} if score != "perplexity" else {})}
        if self.config.stats_cache == "off":
            return scorer.sensitivity(fractions, self.emit, score)
        table = cached_columns(self._root(), "sensitivity", key, fractions,
                               lambda missing: scorer.sensitivity(missing, self.emit, score))
        self._bounded()
        return table


def _folder(path: str):
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_memory(collected, model):
    tensors, spectra, tokens = collected
    return MemoryStatistics(tensors, tokens, spectra, Passes.of(model).home)


# ---------------------------------------------------------------------------------------------
# What the CLI and the app both need
# ---------------------------------------------------------------------------------------------

def manifest_info(record: RunRecord) -> dict:
    """What a saved folder's manifest records of the run that made it (built here only)."""
    c = record.compression
    return {"base": {"source": record.model, "revision": record.model_revision}, "method": c.method,
            "ratio": c.ratio, "options": c.options, "allocation": record.allocation, "refine": record.refine,
            "calibration": c.calibration, "ranks": c.ranks(), "config": record.config, "scores": record.scores,
            "evaluation": record.evaluation, "command": command_line(RunConfig.from_dict(record.config)),
            "cost": {k: v for k, v in record.cost.items() if k != "layers"},
            "quantize": RunConfig.from_dict(record.config).quantize}


def export(record: RunRecord, model, tokenizer, folder, save_dtype: str = "bfloat16", merged: bool = False):
    """Save a finished run's compressed model (its factors, or merged into dense weights) with its manifest and
    model card; returns the folder's size in bytes."""
    (save_merged if merged else save_compressed)(model, tokenizer, folder, manifest_info(record), save_dtype)
    return folder_bytes(folder)


def zero_shot(lm: LoadedModel, compressed, tasks: list[str], limit, task_data, emit=_quiet, check=None) -> dict:
    """lm-eval accuracies of the original and the compressed model, task by task (the original's are kept on
    the loaded model for the next run that compares against it)."""
    def scores(label, model, names):
        return run_tasks(model, lm.tokenizer, names, limit=limit, data=task_data, should_stop=check,
                         on_task=lambda t: emit("status", f"zero-shot, {label} model: {t}"))

    known = lm.scores.setdefault(("tasks", limit, task_data), {})
    known.update(scores("original", lm.model, [t for t in tasks if t not in known]))
    return {"original": {t: known[t] for t in tasks}, "compressed": scores("compressed", compressed, tasks)}


def evaluate_model(plan: Plan | RunConfig, emit=None, cancel=None) -> dict:
    """Perplexity (and zero-shot tasks) of one model, as `python -m svd_explorer evaluate` reports them."""
    emit = emit or _quiet
    check = cancel_check(cancel)
    plan = as_plan(plan)
    config = plan.config
    lm, placement = load_for(plan, emit)
    emit("status", f"model: {lm.description}")
    if config.quantize != "none":
        emit("status", f"quantising the blocks to {config.quantize} (torchao, weight-only)")
        quantize(lm.model, config.quantize)
    result = {"model": lm.source, "params": count_parameters(lm.model), "placement": placement.describe(),
              "quantize": config.quantize}
    ids, desc = evaluation_windows(lm, config.eval_source, config.eval_windows, config.seq_len, config.seed, emit)
    if ids is not None:
        emit("status", f"evaluation: {desc}")
        result.update(ppl=evaluate(lm.model, ids, should_stop=check)["ppl"],
                      evaluation={"description": desc, "windows": len(ids), "seq_len": config.seq_len})
    for source in config.extra_eval:
        ids, desc = evaluation_windows(lm, source, config.eval_windows, config.seq_len, config.seed, emit)
        result.setdefault("extra_ppl", {})[source] = evaluate(lm.model, ids, should_stop=check)["ppl"]
    if config.dev_windows:
        ids, desc = held_out_windows(config, lm)
        result.update(dev_ppl=evaluate(lm.model, ids, should_stop=check)["ppl"], development=desc)
    if config.tasks:
        result["tasks"] = run_tasks(lm.model, lm.tokenizer, list(config.tasks), limit=config.limit,
                                    data=config.task_data, should_stop=check)
    if config.cost and not placement.offloaded:
        emit("status", "measuring serving cost: prefill and decode speed")
        settings = CostSettings(prefill_tokens=config.seq_len)
        result["cost"] = serving_cost(lm.model, settings, lm.model.config.vocab_size)
    if lm.manifest:
        result["manifest"] = {k: lm.manifest.get(k) for k in ("base", "method", "ratio", "options", "allocation")}
    return result
