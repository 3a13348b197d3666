"""The layer-wise two-stream driver, used by every method.

Calibration hidden states travel through the decoder twice: the ORIGINAL stream (H_f, through the
untouched blocks) and the COMPRESSED stream (H_c, through the blocks compressed so far). For each
block the driver

  1. onloads the original block (a no-op unless the model is offloaded) and copies it;
  2. collects the statistics the method asks for and replaces the copy's projections by low-rank ones:
     - methods that need only original-stream statistics get them all from one pass of the original
       block (or from cached statistics, see stats_cache.py), which also yields the next H_f;
     - methods that need the compressed stream go group by group in execution order (q/k/v, o,
       gate/up, down), re-collecting statistics after each group is replaced, so that X_c is
       always the input the projection really receives; both blocks run on the same batch so
       cross statistics X_f X_cᵀ can be formed without storing activations;
  3. runs the refinement stage when it is on (refine.py), pushes both streams one block on, records
     the accumulated error, and stores the finished block (offloaded again in sequential mode).

The original model is never modified: the driver works on a shell copy (new module objects sharing
the original tensors) whose blocks are swapped for compressed ones. Memory stays bounded by the
original model, the compressed blocks so far, one dense block copy, one group's statistics and the
two streams. A method that reads only the original stream pushes the compressed stream through the
first batch only (it feeds nothing but the depth-error record); with cached statistics it needs no
pass at all, and both streams run over the first DEPTH_WINDOWS windows for that record.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache

from ..model.blocks import Layout, Projection, count_parameters, find_layout
from ..model.devices import Clock, describe_linalg, float64_device, model_device
from ..model.lowrank import LowRankLinear, check_ratio, dense_weight_and_bias, set_submodule
from ..model.offload import onloaded, release_memory, store_block, without_hooks
from .allocation import AllocationContext, get_allocation
from .kept_stream import KeptStream
from .linalg import singular_values, weighted_error
from .methods.base import Budget, Method
from .records import BlockRecord, CompressionRecord, ProjectionRecord, floats
from .refine import RefineData, RefineSettings, refine_block
from .stats import Accumulator, Statistics

CACHE_LIMIT_BYTES = 2 << 30  # largest original-stream input cache per block (see _Run.original_inputs)
DEPTH_WINDOWS = 4            # calibration windows the depth error is measured on when no stream is needed


class Cancelled(RuntimeError):
    """Raised between steps when the caller asked the run to stop."""


def cancel_check(event):
    """A function that raises Cancelled once `event` (a threading.Event, or None) is set."""
    def check():
        if event is not None and event.is_set():
            raise Cancelled("the run was cancelled")
    return check


class _Stop(Exception):
    """Internal: ends a forward pass once the wanted input was captured."""


# ---------------------------------------------------------------------------------------------
# Capturing block inputs
# ---------------------------------------------------------------------------------------------

@dataclass
class BlockCall:
    """The arguments a block is called with, except its hidden states."""

    args: tuple
    kwargs: dict
    hidden_as_kwarg: bool = False

    def rows(self, start: int, stop: int, batch: int) -> "BlockCall":
        """The same call for rows start:stop of a batch of `batch` sequences (batch-shaped tensors
        such as rotary tables and masks are sliced; shared ones are kept)."""
        def cut(v):
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch:
                return v[start:stop]
            if isinstance(v, tuple):
                return tuple(cut(x) for x in v)
            return v
        return BlockCall(tuple(cut(a) for a in self.args), {k: cut(v) for k, v in self.kwargs.items()},
                         self.hidden_as_kwarg)

    def __call__(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.hidden_as_kwarg:
            out = block(*self.args, **self.kwargs, hidden_states=hidden)
        else:
            out = block(hidden, *self.args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


def _drop_caches(value):
    return None if isinstance(value, Cache) else value


@torch.no_grad()
def capture_calls(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor, batch_size: int):
    """Per batch of windows: the hidden states entering block 0 and the call of every block.

    Each block's forward is swapped for a pass-through for one model call, so only the embeddings
    run (the blocks too where the model cannot take that, see _one_call), and the last block stops the
    model before the final norm and LM head. Per-block calls
    matter: some models give each block its own mask (sliding-window layers). Call it on a shell
    copy (shell_copy): the swap must never touch a model another thread may be running."""
    device = model_device(model)
    hidden, calls, run_blocks = [], [], False
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size].to(device)
        try:
            first, seen = _one_call(model, blocks, batch, run_blocks)
        except Exception:  # noqa: BLE001 - the model could not take its blocks' input back as their output
            if run_blocks:
                raise
            run_blocks = True
            first, seen = _one_call(model, blocks, batch, run_blocks)
        hidden.append(first)
        calls.append(seen)
    return hidden, calls


def _one_call(model, blocks, batch, run_blocks: bool = False):
    """One model call with every block's forward recorded. The blocks are skipped (their input returned as their
    output) unless `run_blocks`: families whose model unpacks what a block returns (hidden states and the
    indices or state the next block reads) need them run."""
    seen: list[BlockCall] = []
    first: list[torch.Tensor] = []
    originals = [b.forward for b in blocks]

    def passthrough(index):
        def forward(*args, **kwargs):
            as_kwarg = not args
            given = dict(kwargs)
            h = kwargs.pop("hidden_states") if as_kwarg else args[0]
            rest = tuple(_drop_caches(a) for a in (args if as_kwarg else args[1:]))
            seen.append(BlockCall(rest, {k: _drop_caches(v) for k, v in kwargs.items()}, as_kwarg))
            if index == 0:
                first.append(h)
            elif not run_blocks and getattr(h, "shape", None) != first[0].shape:
                raise RuntimeError("the model reshaped a skipped block's output")   # XLNet unpacks it: run them
            if index == len(blocks) - 1:
                raise _Stop
            return originals[index](*args, **given) if run_blocks else h
        return forward

    saved = [b.__dict__.get("forward") for b in blocks]
    for i, b in enumerate(blocks):
        b.forward = passthrough(i)
    try:
        model(input_ids=batch, use_cache=False)
    except _Stop:
        pass
    finally:
        for b, original in zip(blocks, saved):
            del b.forward
            if original is not None:
                b.forward = original
    if len(seen) != len(blocks) or not first:
        raise RuntimeError(f"expected {len(blocks)} block calls, saw {len(seen)}: the model skipped blocks")
    return first[0], seen


def capture_input(block: nn.Module, module: nn.Module, call: BlockCall, hidden: torch.Tensor) -> torch.Tensor:
    """Run `block` only until `module` is reached and return the input it gets."""
    holder = []

    def hook(_, args):
        holder.append(args[0])
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        call(block, hidden)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not holder:
        raise RuntimeError(f"{type(module).__name__} was not reached when running its block")
    return holder[0]


# ---------------------------------------------------------------------------------------------
# Precision and copies
# ---------------------------------------------------------------------------------------------

def shell_copy(model: nn.Module) -> nn.Module:
    """New module objects sharing every tensor of `model`: free in memory, safe to patch and to fill
    with compressed blocks while the original keeps serving other callers."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are fast here (CUDA, or a CPU with AMX / AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device, weights: torch.dtype = torch.float32) -> str:
    """The arithmetic of the calibration passes: the weights' own dtype when they are not float32."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, got {precision!r}")
    if weights != torch.float32:
        return str(weights).removeprefix("torch.")
    if precision == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return precision


def model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.device.type != "meta" and p.is_floating_point()),
                torch.float32)


@dataclass
class Passes:
    """How the calibration passes compute: device, float64 home, stream dtype and autocast."""

    device: torch.device
    home: torch.device
    stream_dtype: torch.dtype
    precision: str
    autocast: object

    @classmethod
    def of(cls, model: nn.Module, precision: str = "auto") -> "Passes":
        device, dtype = model_device(model), model_dtype(model)
        resolved = resolve_precision(precision, device, dtype)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=resolved == "bfloat16" and dtype == torch.float32)
        return cls(device, float64_device(device), dtype, resolved, autocast)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------

@dataclass
class PrepareContext:
    """What Method.prepare may read: the original model, its layout and the calibration windows."""

    model: nn.Module
    layout: Layout
    calib_ids: torch.Tensor
    check: object
    emit: object
    remember: object = None      # (kind, compute) -> tensors: the engine's cache beside the statistics

    def cached(self, kind: str, compute) -> dict:
        """compute() -> {name: tensor}, read back instead when this calibration set already measured it."""
        return compute() if self.remember is None else self.remember(kind, compute)


def budgets_for(method: Method, layout: Layout, ranks: dict) -> dict[str, Budget]:
    """The method's split of every allocated rank (dense projections are absent)."""
    out = {}
    for p in layout.projections:
        k = ranks.get(p.name)
        if k is not None:
            out[p.name] = method.split(int(k), p.out_features, p.in_features)
    return out


def uniform_ranks(layout: Layout, ratio: float) -> dict:
    return get_allocation("uniform").allocate(AllocationContext(layout, ratio, None)).ranks


def compress_model(model: nn.Module, method: Method, ratio: float, calib_ids: torch.Tensor, *,
                   ranks: dict | None = None, refine: RefineSettings | None = None, batch_size: int = 8,
                   precision: str = "auto", callback=None, cancel=None, statistics=None, placement=None,
                   prepared: bool = False, kept: KeptStream | None = None):
    """Compress `model` (never modified) with `method` at `ratio`; returns (compressed model, CompressionRecord).

    `ranks` (from an allocation) gives each projection's rank, None for dense; default uniform.
    `refine` switches the refinement stage on. `statistics` are cached original-stream statistics
    (stats_cache.py); `placement` keeps finished blocks offloaded (offload.py). `precision` is the
    arithmetic of the calibration passes: float32, or bfloat16 autocast as the reference GPU
    implementations run them (statistics and decompositions stay float32/float64 either way). `prepared`: the
    caller ran `method.prepare` already (the engine does, before the allocation). `kept`: the original blocks'
    outputs on these windows in these batches, left by the pass that computed `statistics` (kept_stream.py)."""
    check_ratio(ratio)
    clock = Clock(model_device(model))
    emit = callback or (lambda kind, data: None)
    layout = find_layout(model)
    if not layout.projections:
        raise ValueError("this model has no dense projection left to compress (it is compressed already)")
    ranks = uniform_ranks(layout, ratio) if ranks is None else ranks
    budgets = budgets_for(method, layout, ranks)
    check = cancel_check(cancel)
    if not prepared:     # a run prepares the method once, before its allocation reads it
        method.prepare(PrepareContext(model, layout, calib_ids, check, emit))
    run = _Run(method, model, budgets, calib_ids, batch_size, precision, emit, check, statistics, refine, placement,
               kept)
    emit("start", {"blocks": layout.num_blocks, "projections": [p.name for p in layout.projections],
                   "plan": {k: asdict(v) for k, v in budgets.items()}})
    for index in range(layout.num_blocks):
        run.block(index)
    result = run.record(model, layout, ratio, clock.seconds())
    emit("done", {"seconds": result.seconds})
    return run.target, result


class _Run:
    """State of one compression run: the two streams, the target model and the records."""

    def __init__(self, method, model, budgets, calib_ids, batch_size, precision, emit, check, statistics, refine,
                 placement, kept=None):
        self.method, self.budgets, self.emit, self.check, self.kept = method, budgets, emit, check, kept
        self.statistics, self.refine, self.placement = statistics, refine, placement
        passes = Passes.of(model, precision)
        self.device, self.home, self.stream_dtype = passes.device, passes.home, passes.stream_dtype
        self.precision, self.autocast = passes.precision, passes.autocast
        self.target = shell_copy(model)
        self.layout = find_layout(self.target)
        # The compressed stream feeds only the depth-error figure unless a fit or the refinement reads it:
        # then its first batch is enough, which saves one pass of every block over the calibration set.
        needs_c = method.sequential or refine is not None
        self.fast = statistics is not None and not needs_c
        ids = calib_ids[:DEPTH_WINDOWS] if self.fast else calib_ids
        with torch.no_grad():
            hidden, self.calls = capture_calls(self.target, self.layout.blocks, ids, batch_size)
        self.h_f = [h.to(self.stream_dtype) for h in hidden]
        self.h_c = self.h_f if needs_c else self.h_f[:max(1, math.ceil(DEPTH_WINDOWS / batch_size))]
        self.windows, self.batch_size = calib_ids.shape, batch_size
        self.depth_windows = sum(h.shape[0] for h in self.h_c)
        self.diverged = False
        self.layers: list[ProjectionRecord] = []
        self.blocks: list[BlockRecord] = []

    def block(self, index: int) -> None:
        clock = Clock(self.device)
        self.check()
        todo = [p for p in self.layout.block_projections(index) if p.name in self.budgets]
        self.emit("progress", {"block": index, "blocks": self.layout.num_blocks, "step": "starting"})
        kept = self.kept.take(index, len(self.h_f)) if self.kept is not None else None
        with onloaded(self.layout.blocks[index]) as reference:
            block, next_f, refine, next_c = (self.compress_block(index, reference, todo, kept) if todo
                                             else (reference, kept, None, None))
            if next_f is None:
                next_f = self.forward(reference, index, self.h_f)
            self.diverged = self.diverged or bool(todo)
            if next_c is None:
                with torch.no_grad():
                    next_c = self.forward(block, index, self.h_c) if self.diverged else next_f[:len(self.h_c)]
        if todo:
            self.layout.blocks[index] = store_block(block, self.placement, f"block{index}")
        rel, cos = stream_distance(next_c, next_f)
        self.h_f, self.h_c = next_f, next_c
        release_memory(full=self.placement is not None)
        record = BlockRecord(index, bool(todo), rel, cos, refine, clock.seconds())
        self.blocks.append(record)
        self.emit("block", asdict(record))

    def compress_block(self, index, reference, todo, next_f=None):
        """A compressed copy of `reference`, the next original stream (`next_f` when it was kept) and the next
        compressed stream when they were computed on the way, and the refinement record."""
        block = without_hooks(copy.deepcopy(reference))
        with torch.no_grad():
            if self.method.sequential:
                cached, computed = self.original_inputs(reference, index, todo)
                next_f = computed or next_f
                for g in range(len(self.layout.groups)):
                    members = [p for p in todo if p.group == g]
                    if members:
                        stats = self.group_statistics(block, reference, index, members[0], cached.get(g))
                        self.replace(block, reference, members, stats)
            else:
                all_stats, computed = self.original_statistics(reference, index, todo)
                next_f = computed or next_f
                for g, stats in all_stats.items():
                    self.replace(block, reference, [p for p in todo if p.group == g], stats)
        refine = next_c = None
        if self.refine is not None:
            next_f = next_f if next_f is not None else self.forward(reference, index, self.h_f)
            self.emit("progress", {"block": index, "blocks": self.layout.num_blocks, "step": "refining"})
            data = RefineData(self.h_c, next_f, [c[index] for c in self.calls], self.check, self.autocast)
            refine, next_c = refine_block(block, data, self.refine)
        return block, next_f, refine, next_c

    def forward(self, block, index, stream):
        out = []
        for i, h in enumerate(stream):
            self.check()
            with self.autocast:
                out.append(self.calls[i][index](block, h).to(self.stream_dtype))
        return out

    # -- statistics ---------------------------------------------------------------------------

    def stats_wanted(self) -> frozenset:
        """The method's statistics, plus a Gram for the error figure when it collects none itself."""
        wanted = self.method.stats
        return wanted if wanted & {"f", "c"} else wanted | {"f"}

    def original_statistics(self, reference, index, todo) -> tuple[dict, list | None]:
        """Every group's original-stream statistics: from the cache, or from one pass of the block."""
        groups = sorted({p.group for p in todo})
        if self.statistics is not None:
            return {g: self.statistics.get(index, g) for g in groups}, None
        self.emit("progress", {"block": index, "blocks": self.layout.num_blocks, "step": "statistics"})
        stats, next_f = block_statistics(reference, [c[index] for c in self.calls], self.h_f, first_members(todo),
                                         self.stats_wanted(), self.autocast, self.home, self.check, self.stream_dtype)
        return {g: stats[g] for g in groups}, next_f

    def original_inputs(self, reference, index, todo) -> tuple[dict, list | None]:
        """Every group's ORIGINAL-stream input from one pass of the reference block (which also gives
        the next H_f), so the group-by-group loop need not re-run the original block. Skipped when
        the method needs no original statistics or the inputs would exceed CACHE_LIMIT_BYTES."""
        firsts = first_members(todo)
        tokens = sum(h.shape[0] * h.shape[1] for h in self.h_f)
        size = 4 * tokens * sum(p.in_features for p in firsts.values())
        if not Accumulator(self.stats_wanted()).needs_original or size > CACHE_LIMIT_BYTES:
            return {}, None
        cached = {g: [] for g in firsts}
        handles = [reference.get_submodule(p.local).register_forward_pre_hook(
            lambda _, args, store=cached[g]: store.append(args[0])) for g, p in firsts.items()]
        try:
            next_f = self.forward(reference, index, self.h_f)
        finally:
            for handle in handles:
                handle.remove()
        return cached, next_f

    def group_statistics(self, block, reference, index, first: Projection, cached_f=None) -> Statistics:
        """Statistics of one group's input, both streams run on the same batch."""
        self.emit("progress", {"block": index, "blocks": self.layout.num_blocks,
                               "step": f"statistics of {first.kind}"})
        if index == 0 and first.group == 0 and self.statistics is not None:
            cached = self.statistics.get(0, 0)  # nothing is compressed upstream yet: X_c = X_f
            return Statistics.original_only(cached.tokens, cached.gram_f, cached.absmean)
        acc = Accumulator(self.stats_wanted(), self.home)
        module_c, module_f = block.get_submodule(first.local), reference.get_submodule(first.local)
        for i, call in enumerate(self.calls):
            self.check()
            call = call[index]
            with self.autocast:
                x_c = capture_input(block, module_c, call, self.h_c[i]) if acc.needs_compressed else None
                x_f = None
                if acc.needs_original:
                    x_f = cached_f[i] if cached_f else capture_input(reference, module_f, call, self.h_f[i])
            acc.add(x_f, x_c)
        return acc.finish()

    # -- replacing projections ----------------------------------------------------------------

    def replace(self, block, reference, members: list[Projection], stats: Statistics) -> None:
        for proj in members:
            self.check()
            self.emit("progress", {"block": proj.block, "blocks": self.layout.num_blocks,
                                   "step": f"fitting {proj.kind}"})
            self.layers.append(self.replace_one(block, reference, proj, stats))
            self.emit("projection", asdict(self.layers[-1]))

    def replace_one(self, block, reference, proj: Projection, stats: Statistics) -> ProjectionRecord:
        clock = Clock(self.device)
        budget = self.budgets[proj.name]
        weight, bias = dense_weight_and_bias(reference.get_submodule(proj.local))
        weight = weight.detach()
        fit = self.method.fit(weight.to(self.home), stats, budget, proj.name)
        layer = LowRankLinear.from_factors(
            fit.up.to(weight), fit.down.to(weight), bias.detach() if bias is not None else None,
            tuple(t.to(weight) for t in fit.residual) if fit.residual else None, dtype=weight.dtype)
        set_submodule(block, proj.local, layer.requires_grad_(False))
        stream = "compressed" if stats.gram_c is not None and self.method.sequential else "original"
        gram = stats.gram_c if stream == "compressed" else stats.gram_f
        error = fit.rel_error if fit.rel_error is not None else weighted_error(weight.to(self.home), fit.dense(), gram)
        raw = self.statistics.raw_spectrum(proj.name) if self.statistics is not None else None
        return ProjectionRecord(
            name=proj.name, block=proj.block, kind=proj.kind, shape=(proj.out_features, proj.in_features),
            rank=budget.rank, residual_rank=budget.residual_rank, params_before=proj.dense_params,
            params_after=budget.rank * proj.rank_cost, rel_error=error, error_inputs=stream,
            truncated=fit.truncated, spectrum_raw=raw or floats(singular_values(weight.to(self.home))),
            spectrum_truncated=floats(fit.spectrum), whitening=fit.whitening, extra=fit.extra,
            seconds=clock.seconds())

    def record(self, model, layout, ratio, seconds) -> CompressionRecord:
        linear_before = layout.dense_params
        removed = sum(r.params_before - r.params_after for r in self.layers)
        return CompressionRecord(
            self.method.name, ratio, dict(self.method.config), layout.source,
            params_before=count_parameters(model), params_after=count_parameters(self.target),
            linear_params_before=linear_before, linear_params_after=linear_before - removed, seconds=seconds,
            calibration={"windows": int(self.windows[0]), "seq_len": int(self.windows[1]),
                         "batch_size": self.batch_size, "precision": self.precision,
                         "statistics": "cached" if self.statistics is not None else "computed",
                         "depth_windows": int(self.depth_windows), "linalg": describe_linalg(self.device)},
            layers=self.layers, blocks=self.blocks)


def first_members(todo: list[Projection]) -> dict[int, Projection]:
    firsts = {}
    for p in todo:
        firsts.setdefault(p.group, p)
    return firsts


def block_statistics(block, calls, stream, firsts: dict[int, Projection], wanted, autocast, home, check,
                     stream_dtype=torch.float32):
    """({group: Statistics} of the original stream's inputs to each group, the block's outputs), one pass."""
    accs = {g: Accumulator(wanted, home) for g in firsts}
    handles = [block.get_submodule(p.local).register_forward_pre_hook(
        lambda _, args, acc=accs[g]: acc.add(args[0], None)) for g, p in firsts.items()]
    out = []
    try:
        for call, h in zip(calls, stream):
            check()
            with autocast:
                out.append(call(block, h).to(stream_dtype))
    finally:
        for handle in handles:
            handle.remove()
    return {g: acc.finish() for g, acc in accs.items()}, out


def stream_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Relative Frobenius error of stream a against stream b, and mean cosine distance per token."""
    num = den = cos = 0.0
    tokens = 0
    for x, y in zip(a, b):
        x, y = x.float(), y.float()
        num += (x - y).pow(2).sum(-1).double().sum().item()
        den += y.pow(2).sum(-1).double().sum().item()
        cos += torch.nn.functional.cosine_similarity(x, y, dim=-1).double().sum().item()
        tokens += x.shape[0] * x.shape[1]
    return (num / den) ** 0.5 if den > 0 else 0.0, 1.0 - cos / max(tokens, 1)
