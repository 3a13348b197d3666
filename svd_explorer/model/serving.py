"""What a model costs to serve, measured: prefill and decode throughput, memory while generating, bytes.

Every timing is synchronised on the model's device and repeated; the record keeps the minimum (the least
disturbed run) and the median. Decoding uses the KV cache as generation does: a short prompt, then one
token per step for the whole batch. On a CPU there is no allocator to ask for a peak, so `memory_bytes`
is what the model holds while generating: its tensors plus the KV cache at the end (on an accelerator it
is the allocator's peak). `layer_timings` is the micro-benchmark behind the picture of why removing 20%
of the parameters need not make generation 20% faster: a factorised layer runs two thin matrix products,
which on small matrices cost more than one dense product until the rank is well below break-even.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .devices import Clock, model_device
from .lowrank import LowRankLinear, break_even_rank

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class CostSettings:
    """How hard to measure: the prefill length is the run's window; decoding is short by default so the
    measure fits a demo run (a few seconds on a 135M model on 2 CPU cores)."""

    prefill_tokens: int = 512
    prompt_tokens: int = 16
    new_tokens: int = 16
    batches: tuple[int, ...] = (1, 8)
    repeats: int = 3


def spread(samples: list[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples)}


@torch.no_grad()
def prefill_seconds(model: nn.Module, tokens: int, repeats: int, vocab: int) -> list[float]:
    """One forward over `tokens` tokens (batch 1, no cache), after a warm-up, `repeats` times."""
    device = model_device(model)
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(0)).to(device)
    model(input_ids=ids, use_cache=False)
    return [_timed(device, lambda: model(input_ids=ids, use_cache=False)) for _ in range(repeats)]


@torch.no_grad()
def decode_seconds(model: nn.Module, batch: int, settings: CostSettings, vocab: int) -> tuple[list[float], int]:
    """(seconds of `new_tokens` cached greedy steps for `batch` sequences, `repeats` times; bytes held at the
    end: the model's tensors and the KV cache, or the allocator's peak on an accelerator)."""
    device = model_device(model)
    ids = torch.randint(0, vocab, (batch, settings.prompt_tokens), generator=torch.Generator().manual_seed(1))
    ids = ids.to(device)
    _reset_peak(device)
    times, held = [], 0
    for _ in range(settings.repeats + 1):            # the first is a warm-up
        out = model(input_ids=ids, use_cache=True)
        clock = Clock(device)
        cache = _steps(model, out, settings.new_tokens)
        times.append(clock.seconds())
        held = _held_bytes(model, cache, device)
    return times[1:], held


def _steps(model: nn.Module, out, steps: int):
    cache = out.past_key_values
    for _ in range(steps):
        token = out.logits[:, -1:].argmax(-1)
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    return cache


def _timed(device, work) -> float:
    clock = Clock(device)
    work()
    return clock.seconds()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _held_bytes(model: nn.Module, cache, device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return tensor_bytes(model) + sum(t.numel() * t.element_size() for t in _cache_tensors(cache))


def _cache_tensors(cache) -> list[torch.Tensor]:
    layers = getattr(cache, "layers", None) or []
    return [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if isinstance(t, torch.Tensor)]


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as held now, a shared (tied) tensor once; a quantised tensor
    (a torchao subclass) counts what it stores: its values, scales and zero points."""
    seen = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[id(t)] = sum(part.numel() * part.element_size() for part in _stored_parts(t))
    return sum(seen.values())


def _stored_parts(t: torch.Tensor) -> list[torch.Tensor]:
    if hasattr(t, "__tensor_flatten__"):
        return [getattr(t, name) for name in t.__tensor_flatten__()[0]]
    return [t]


def stored_bytes(model: nn.Module) -> dict[str, int]:
    """What the weights would take in each save dtype (a tied tensor once), and as they are held now."""
    numbers = {id(t): t.numel() for t in model.parameters()}
    out = {name: sum(numbers.values()) * size for name, size in DTYPE_BYTES.items()}
    return out | {"held": sum(sum(p.numel() * p.element_size() for p in _stored_parts(t))
                              for t in model.parameters())}


def serving_cost(model: nn.Module, settings: CostSettings, vocab: int) -> dict:
    """Prefill tokens/s at the run's length, decode tokens/s per batch size, memory while generating, bytes."""
    prefill = prefill_seconds(model, settings.prefill_tokens, settings.repeats, vocab)
    out = {"prefill_seconds": spread(prefill), "prefill_tokens_per_s": settings.prefill_tokens / min(prefill),
           "bytes": stored_bytes(model), "tensor_bytes": tensor_bytes(model)}
    for batch in settings.batches:
        times, held = decode_seconds(model, batch, settings, vocab)
        out[f"decode_seconds_batch{batch}"] = spread(times)
        out[f"decode_tokens_per_s_batch{batch}"] = batch * settings.new_tokens / min(times)
        out[f"memory_bytes_batch{batch}"] = held
    return out


# ---------------------------------------------------------------------------------------------
# The micro-benchmark: one factorised layer against the dense one, as the rank varies
# ---------------------------------------------------------------------------------------------

@dataclass
class LayerTiming:
    shape: tuple[int, int]           # (out, in)
    rows: int                        # tokens per call
    dense_seconds: float
    ranks: list[int]
    lowrank_seconds: list[float]
    parameter_break_even: float      # mn / (m + n): where the factors store as much as the dense weight
    time_break_even: float | None    # the rank where the factorised layer becomes as slow as the dense one


@torch.no_grad()
def layer_timing(out_features: int, in_features: int, rows: int, device, dtype=torch.float32, points: int = 8,
                 repeats: int = 5) -> LayerTiming:
    """Median time of nn.Linear against LowRankLinear at `points` ranks up to min(m, n), on `rows` tokens."""
    x = torch.randn(rows, in_features, device=device, dtype=dtype)
    dense = nn.Linear(in_features, out_features, bias=False, device=device, dtype=dtype)
    top = min(out_features, in_features)
    ranks = sorted({max(1, round(top * (i + 1) / points)) for i in range(points)})
    low = [_median_time(LowRankLinear(in_features, out_features, r, device=device, dtype=dtype), x, repeats)
           for r in ranks]
    dense_time = _median_time(dense, x, repeats)
    return LayerTiming((out_features, in_features), rows, dense_time, ranks, low,
                       break_even_rank(out_features, in_features), _crossing(ranks, low, dense_time))


def _median_time(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    layer(x)
    return statistics.median(_timed(x.device, lambda: layer(x)) for _ in range(repeats))


def _crossing(ranks: list[int], times: list[float], dense: float) -> float | None:
    """The rank, linearly interpolated, where the factorised time first reaches the dense time."""
    if times[0] >= dense:
        return 0.0
    for (r0, t0), (r1, t1) in zip(zip(ranks, times), zip(ranks[1:], times[1:])):
        if t1 >= dense:
            return r0 + (dense - t0) * (r1 - r0) / (t1 - t0) if t1 != t0 else float(r1)
    return None


def layer_timings(shapes: list[tuple[int, int]], rows: int, device, dtype=torch.float32) -> list[dict]:
    return [asdict(layer_timing(m, n, rows, device, dtype)) for m, n in shapes]


def compare_cost(original: nn.Module, compressed: nn.Module, settings: CostSettings, vocab: int, check=None) -> dict:
    """Both models measured alike on the same device, and the micro-benchmark of every factorised shape at the
    prefill length and at batch-8 decoding (8 rows): what a run's record keeps under `cost`."""
    device = model_device(compressed)
    out = {"device": str(device), "settings": asdict(settings), "original": serving_cost(original, settings, vocab)}
    if check:
        check()
    out["compressed"] = serving_cost(compressed, settings, vocab)
    shapes = sorted({(m.out_features, m.in_features) for m in compressed.modules() if isinstance(m, LowRankLinear)})
    out["layers"] = layer_timings(shapes, settings.prefill_tokens, device) + layer_timings(shapes, 8, device)
    return out
