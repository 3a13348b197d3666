"""The layer-wise two-stream driver, used by every method.

Calibration hidden states travel through the decoder twice: the ORIGINAL stream (H_f, through the
untouched blocks) and the COMPRESSED stream (H_c, through the blocks compressed so far). For each
block the driver

  1. keeps a copy of the original block as the reference;
  2. collects the statistics the method asks for and replaces the projections by low-rank ones:
     - methods that need only original-stream statistics get them all from one pass of the
       reference block, which also yields the next H_f;
     - methods that need the compressed stream go group by group in execution order (q/k/v, o,
       gate/up, down), re-collecting statistics after each group is replaced, so that X_c is
       always the input the projection really receives; both blocks run on the same batch so
       cross statistics X_f X_cᵀ can be formed without storing activations;
  3. lets the method refine the whole block (AA-SVD), then pushes both streams one block on and
     records the accumulated error.

Memory stays bounded by one block copy, the statistics of one group and the two streams.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .linalg import singular_values, weighted_error
from .lowrank import LowRankLinear, check_ratio, dense_weight_and_bias, set_submodule
from .methods.base import Budget, Method
from .models import Layout, Projection, count_parameters, find_layout
from .stats import Accumulator, Statistics


CACHE_LIMIT_BYTES = 2 << 30  # largest original-stream input cache per block (see _Run.original_inputs)


class Cancelled(RuntimeError):
    """Raised between projections when the caller asked the run to stop."""


def cancel_check(event):
    """A function that raises Cancelled once `event` (a threading.Event, or None) is set."""
    def check():
        if event is not None and event.is_set():
            raise Cancelled("the run was cancelled")
    return check


class _Stop(Exception):
    """Internal: ends a forward pass once the wanted input was captured."""


# ---------------------------------------------------------------------------------------------
# Records (everything the CLI writes to --json and the app draws)
# ---------------------------------------------------------------------------------------------

@dataclass
class ProjectionRecord:
    name: str
    block: int
    kind: str
    shape: tuple[int, int]
    rank: int | None
    residual_rank: int
    params_before: int
    params_after: int
    rel_error: float | None
    error_inputs: str | None          # "compressed" (X_c) or "original" (X_f)
    truncated: str | None             # which matrix was truncated, e.g. "W S"
    spectrum_raw: list[float]
    spectrum_truncated: list[float]
    whitening: dict | None = None
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class BlockRecord:
    block: int
    compressed: bool
    rel_error: float          # ‖H_c − H_f‖_F / ‖H_f‖_F after the block
    cosine_distance: float    # mean over tokens of 1 − cos(h_c, h_f)
    refine: dict | None = None
    seconds: float = 0.0


@dataclass
class RunResult:
    method: str
    ratio: float
    options: dict
    layout: str
    params_before: int = 0
    params_after: int = 0
    linear_params_before: int = 0
    linear_params_after: int = 0
    seconds: float = 0.0
    calibration: dict = field(default_factory=dict)
    layers: list[ProjectionRecord] = field(default_factory=list)
    blocks: list[BlockRecord] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["depth_error"] = [{"block": b.block, "rel_error": b.rel_error, "cosine_distance": b.cosine_distance}
                              for b in self.blocks]
        return out

    def ranks(self) -> dict[str, dict]:
        return {r.name: {"rank": r.rank, "residual_rank": r.residual_rank} for r in self.layers if r.rank}


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
    from transformers.cache_utils import Cache

    return None if isinstance(value, Cache) else value


@torch.no_grad()
def capture_calls(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor, batch_size: int):
    """Per calibration batch: the hidden states entering block 0 and the call of every block.

    Each block's forward is swapped for a pass-through for one model call, so only the embeddings
    run, and the last block stops the model before the final norm and LM head. Per-block calls
    matter: some models give each block its own mask (sliding-window layers)."""
    device = next(model.parameters()).device
    hidden, calls = [], []
    saved = [b.__dict__.get("forward") for b in blocks]
    for start in range(0, len(ids), batch_size):
        seen: list[BlockCall] = []
        first: list[torch.Tensor] = []

        def passthrough(index):
            def forward(*args, **kwargs):
                as_kwarg = not args
                h = kwargs.pop("hidden_states") if as_kwarg else args[0]
                rest = tuple(_drop_caches(a) for a in (args if as_kwarg else args[1:]))
                seen.append(BlockCall(rest, {k: _drop_caches(v) for k, v in kwargs.items()}, as_kwarg))
                if index == 0:
                    first.append(h)
                if index == len(blocks) - 1:
                    raise _Stop
                return h
            return forward

        for i, b in enumerate(blocks):
            b.forward = passthrough(i)
        try:
            model(input_ids=ids[start:start + batch_size].to(device), use_cache=False)
        except _Stop:
            pass
        finally:
            for b, original in zip(blocks, saved):
                del b.forward
                if original is not None:
                    b.forward = original
        if len(seen) != len(blocks) or not first:
            raise RuntimeError(f"expected {len(blocks)} block calls, saw {len(seen)}: the model skipped blocks")
        hidden.append(first[0])
        calls.append(seen)
    return hidden, calls


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
# The driver
# ---------------------------------------------------------------------------------------------

def clone_for_compression(model: nn.Module, layout: Layout) -> nn.Module:
    """A copy whose decoder blocks are independent; embeddings and the LM head stay shared."""
    inside = {id(t) for t in list(layout.blocks.parameters()) + list(layout.blocks.buffers())}
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in inside}
    return copy.deepcopy(model, memo)


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are fast here (CUDA, or a CPU with AMX / AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return precision


def compress_model(model: nn.Module, method: Method, ratio: float, calib_ids: torch.Tensor, *,
                   batch_size: int = 8, precision: str = "auto", callback=None, cancel=None,
                   inplace: bool = False):
    """Compress `model` (a copy unless `inplace`) with `method` at `ratio`; returns (model, RunResult).

    `precision` is the arithmetic of the calibration forward passes through the blocks: float32,
    or bfloat16 autocast as the reference GPU implementations run them (weights, statistics and
    decompositions stay in float32/float64 either way); auto picks bfloat16 where it is fast."""
    check_ratio(ratio)
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    start = time.perf_counter()
    emit = callback or (lambda kind, data: None)
    layout = find_layout(model)
    if not layout.projections:
        raise ValueError("this model has no dense projection left to compress (it is compressed already)")
    plan = method.plan(layout, ratio)
    target = model if inplace else clone_for_compression(model, layout)
    layout = find_layout(target)
    result = RunResult(method.name, ratio, dict(method.config), layout.source,
                       params_before=count_parameters(model),
                       linear_params_before=sum(p.dense_params for p in layout.projections))
    result.extras.update(getattr(method, "plan_info", {}) or {})
    emit("start", {"blocks": layout.num_blocks, "projections": [p.name for p in layout.projections],
                   "plan": {k: asdict(v) for k, v in plan.items()}, "extras": result.extras})

    with torch.no_grad():
        hidden, calls = capture_calls(target, layout.blocks, calib_ids, batch_size)
    run = _Run(method, layout, plan, calls, hidden, emit, cancel, result,
               torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"))
    for index in range(layout.num_blocks):
        run.block(index)

    result.params_after = count_parameters(target)
    result.linear_params_after = result.linear_params_before - sum(r.params_before - r.params_after
                                                                   for r in result.layers)
    result.seconds = time.perf_counter() - start
    result.calibration = {"windows": int(calib_ids.shape[0]), "seq_len": int(calib_ids.shape[1]),
                          "batch_size": batch_size, "precision": precision}
    emit("done", {"seconds": result.seconds})
    return target, result


@dataclass
class RefineData:
    """What a method needs to tune a finished block end to end (see AA-SVD)."""

    inputs: list[torch.Tensor]    # the block's inputs in the compressed stream, per batch
    targets: list[torch.Tensor]   # the ORIGINAL block's outputs on the original stream, per batch
    calls: list[BlockCall]        # the block's call arguments, per batch
    check: object                 # raises Cancelled when the run is stopped
    autocast: object              # the run's precision context

    def chunks(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor, BlockCall]]:
        """(inputs, targets, call) for micro-batches of at most `size` sequences, in a fixed order."""
        out = []
        for x, y, call in zip(self.inputs, self.targets, self.calls):
            rows = x.shape[0]
            for r in range(0, rows, size):
                stop = min(r + size, rows)
                out.append((x[r:stop], y[r:stop], call if (r, stop) == (0, rows) else call.rows(r, stop, rows)))
        return out


class _Run:
    """State of one compression run: the two streams and the records."""

    def __init__(self, method, layout, plan, calls, hidden, emit, cancel, result, autocast):
        self.method, self.layout, self.plan, self.autocast = method, layout, plan, autocast
        self.calls, self.emit, self.result = calls, emit, result
        self.h_f = hidden      # original stream, one tensor per batch
        self.h_c = hidden      # compressed stream: the same tensors until a block is compressed
        self.diverged = False
        self.check = cancel_check(cancel)

    def block(self, index: int) -> None:
        t0 = time.perf_counter()
        self.check()
        block = self.layout.blocks[index]
        todo = [p for p in self.layout.block_projections(index) if p.name in self.plan]
        reference = copy.deepcopy(block) if todo else block
        next_f = None
        with torch.no_grad():
            if todo and self.method.sequential:
                cached, next_f = self.original_inputs(reference, index, todo)
                for g in range(len(self.layout.groups)):
                    members = [p for p in todo if p.group == g]
                    if members:
                        stats = self.group_statistics(block, reference, index, members[0], cached.get(g))
                        self.replace(block, reference, members, stats)
            elif todo:
                all_stats, next_f = self.one_pass_statistics(reference, index, todo)
                for g, stats in all_stats.items():
                    self.replace(block, reference, [p for p in todo if p.group == g], stats)
            if next_f is None:
                next_f = self.forward(reference, index, self.h_f)
        refine = None
        if todo:
            data = RefineData(self.h_c, next_f, [c[index] for c in self.calls], self.check, self.autocast)
            refine = self.method.refine_block(block, data)
        self.diverged = self.diverged or bool(todo)
        with torch.no_grad():
            next_c = self.forward(block, index, self.h_c) if self.diverged else next_f
        rel, cos = stream_distance(next_c, next_f)
        self.h_f, self.h_c = next_f, next_c
        record = BlockRecord(index, bool(todo), rel, cos, refine, time.perf_counter() - t0)
        self.result.blocks.append(record)
        self.emit("block", asdict(record))

    def forward(self, block, index, stream):
        out = []
        for i, h in enumerate(stream):
            self.check()
            with self.autocast:
                out.append(self.calls[i][index](block, h).float())
        return out

    # -- statistics ---------------------------------------------------------------------------

    def stats_wanted(self) -> frozenset:
        """The method's statistics, plus a Gram for the error figure when it collects none itself."""
        wanted = self.method.stats
        return wanted if wanted & {"f", "c"} else wanted | {"f"}

    def original_inputs(self, reference, index, todo) -> tuple[dict, list | None]:
        """Every group's ORIGINAL-stream input from one pass of the reference block (which also gives
        the next H_f), so the group-by-group loop need not re-run the original block. Skipped when
        the method needs no original statistics or the inputs would exceed CACHE_LIMIT_BYTES."""
        firsts = {}
        for p in todo:
            firsts.setdefault(p.group, p)
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
        acc = Accumulator(self.stats_wanted())
        module_c = block.get_submodule(first.local)
        module_f = reference.get_submodule(first.local)
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

    def one_pass_statistics(self, reference, index, todo):
        """All groups' original-stream statistics from one pass, which also gives the next H_f."""
        accs = {p.group: Accumulator(self.stats_wanted()) for p in todo}
        firsts = {}
        for p in todo:
            firsts.setdefault(p.group, p)
        handles = [reference.get_submodule(p.local).register_forward_pre_hook(
            lambda _, args, acc=accs[g]: acc.add(args[0], None)) for g, p in firsts.items()]
        try:
            next_f = self.forward(reference, index, self.h_f)
        finally:
            for handle in handles:
                handle.remove()
        return {g: acc.finish() for g, acc in accs.items()}, next_f

    # -- replacing projections ----------------------------------------------------------------

    def replace(self, block, reference, members: list[Projection], stats: Statistics) -> None:
        for proj in members:
            self.check()
            t0 = time.perf_counter()
            budget: Budget = self.plan[proj.name]
            weight, bias = dense_weight_and_bias(reference.get_submodule(proj.local))
            weight = weight.detach()
            fit = self.method.fit(weight, stats, budget, proj.name)
            layer = LowRankLinear.from_factors(
                fit.up.to(weight.dtype), fit.down.to(weight.dtype),
                bias.detach() if bias is not None else None,
                tuple(t.to(weight.dtype) for t in fit.residual) if fit.residual else None, dtype=weight.dtype)
            set_submodule(block, proj.local, layer.requires_grad_(False))
            stream = "compressed" if stats.gram_c is not None else "original"
            gram = stats.gram_c if stats.gram_c is not None else stats.gram_f
            record = ProjectionRecord(
                name=proj.name, block=proj.block, kind=proj.kind, shape=(proj.out_features, proj.in_features),
                rank=budget.rank, residual_rank=budget.residual_rank, params_before=proj.dense_params,
                params_after=budget.rank * (proj.out_features + proj.in_features),
                rel_error=weighted_error(weight, fit.dense(), gram), error_inputs=stream,
                truncated=fit.truncated, spectrum_raw=floats(singular_values(weight)),
                spectrum_truncated=floats(fit.spectrum), whitening=fit.whitening, extra=fit.extra,
                seconds=time.perf_counter() - t0)
            self.result.layers.append(record)
            self.emit("projection", asdict(record))


def stream_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Relative Frobenius error of stream a against stream b, and mean cosine distance per token."""
    num = den = cos = 0.0
    tokens = 0
    for x, y in zip(a, b):
        num += (x - y).pow(2).sum(-1).double().sum().item()
        den += y.pow(2).sum(-1).double().sum().item()
        cos += torch.nn.functional.cosine_similarity(x, y, dim=-1).double().sum().item()
        tokens += x.shape[0] * x.shape[1]
    return (num / den) ** 0.5 if den > 0 else 0.0, 1.0 - cos / max(tokens, 1)


def floats(t: torch.Tensor, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in t.detach().double().cpu().tolist()]
