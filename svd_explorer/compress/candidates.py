"""Scoring candidates on development text: where every searched setting is chosen.

Development windows come from the calibration domain but overlap no calibration window
(data.development_windows); evaluation text (WikiText-2, PTB, task data) is never read here.
A DevScorer keeps the original model's input to every block on those windows, so the perplexity of
the model with a few projections replaced is computed from the first changed block on: one
partial forward per candidate. Candidates are factorised with the method's original-stream form
(two-stream methods reduce to SVD-LLM whitening when the streams agree, see methods/base.py), from
the original-stream statistics, so a candidate needs no calibration pass of its own.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..model.blocks import find_layout
from ..model.lowrank import LowRankLinear, dense_weight_and_bias, set_submodule
from ..model.offload import onloaded
from ..text.metrics import batch_for, vocabulary
from .allocation.base import rank_for_fraction
from .decompositions import LastDecomposition, reusing
from .linalg import svd_by_gram
from .pipeline import Passes, capture_calls, shell_copy
from .stats import Statistics


class DevScorer:
    """Perplexity on development windows with some projections swapped, from cached block inputs."""

    def __init__(self, model, windows: torch.Tensor, statistics, method, batch_size: int = 4, precision="auto",
                 check=None):
        self.passes = Passes.of(model, precision)
        self.work = shell_copy(model)
        self.layout = find_layout(self.work)
        self.windows, self.batch_size = windows, batch_for(windows.shape[1], vocabulary(model), batch_size)
        self.statistics, self.method = statistics, method.original_stream_form()
        self.check = check or (lambda: None)
        self.inputs = self._block_inputs()
        self._dense = None
        self._references = None  # the original's next-token distributions on the windows (score="kl")
        self.spectra = {}       # name -> singular values of the matrix its candidates truncate (from their SVDs)

    @torch.no_grad()
    def _block_inputs(self) -> list[list[torch.Tensor]]:
        """inputs[b][i]: the hidden states entering block b for batch i, in the original model."""
        hidden, self.calls = capture_calls(self.work, self.layout.blocks, self.windows, self.batch_size)
        inputs, stream = [], [h.to(self.passes.stream_dtype) for h in hidden]
        for b, block in enumerate(self.layout.blocks):
            inputs.append(stream)
            with onloaded(block), self.passes.autocast:
                stream = [c[b](block, h).to(self.passes.stream_dtype) for c, h in zip(self.calls, stream)]
        return inputs

    def factors(self, name: str, rank: int) -> LowRankLinear:
        """The projection `name` at `rank`, fitted by the proxy method from original-stream statistics."""
        p = next(p for p in self.layout.projections if p.name == name)
        with onloaded(self.layout.blocks[p.block]) as block:
            weight, bias = dense_weight_and_bias(block.get_submodule(p.local))
            stats = self.statistics.get(p.block, p.group)
            stats = Statistics.original_only(stats.tokens, stats.gram_f, stats.absmean)
            budget = self.method.split(rank, p.out_features, p.in_features)
            fit = self.method.fit(weight.detach().to(self.passes.home), stats, budget, name)
            self.spectra[name] = fit.spectrum.cpu()
            return LowRankLinear.from_factors(
                fit.up.to(weight), fit.down.to(weight), bias.detach() if bias is not None else None,
                tuple(t.to(weight) for t in fit.residual) if fit.residual else None, dtype=weight.dtype)

    @torch.no_grad()
    def perplexity(self, replaced: dict[str, torch.nn.Module]) -> float:
        """Development perplexity with each named projection replaced by the given module."""
        total, count = self._run(self._first_block(replaced), replaced, _window_nll)
        return _exp(total / count)

    @torch.no_grad()
    def divergence(self, replaced: dict[str, torch.nn.Module]) -> float:
        """The original's development perplexity times exp(mean KL(original ‖ candidate) per token), in the
        same unit as `perplexity` (the dense value is the same) but read from every token's whole next-token
        distribution instead of the one observed token: a less noisy measure of the same damage."""
        reference = self._reference()
        total, count = self._run(self._first_block(replaced), replaced,
                                 lambda i, logits, ids: _window_kl(logits, reference[i]))
        return self.dense_perplexity() * _exp(total / count)

    def _first_block(self, replaced: dict) -> int:
        if not replaced:
            return self.layout.num_blocks - 1
        return min(next(p.block for p in self.layout.projections if p.name == n) for n in replaced)

    def _reference(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch, the original's next-token probabilities [B, T, V] and Σ p log p per token, kept once."""
        if self._references is None:
            self._references = []
            self._run(self.layout.num_blocks - 1, {}, self._keep_reference)
        return self._references

    def _keep_reference(self, i, logits, ids) -> tuple[float, int]:
        probs = torch.softmax(logits.float(), dim=-1)
        self._references.append((probs, torch.special.xlogy(probs, probs).sum(-1)))
        return 0.0, 1

    def _run(self, start: int, replaced: dict, score) -> tuple[float, int]:
        """(summed score, count) over the windows; `score(batch, logits, ids)` gives one batch's share."""
        total = count = 0
        with self._swapped(replaced), self._start_at(start):
            for i in range(len(self.calls)):
                self.check()
                self.batch = i
                ids = self.windows[i * self.batch_size:(i + 1) * self.batch_size].to(self.passes.device)
                with self.passes.autocast:
                    logits = self.work(input_ids=ids, use_cache=False).logits
                part, n = score(i, logits, ids)
                total, count = total + part, count + n
        return total, count

    @contextlib.contextmanager
    def _swapped(self, replaced: dict):
        saved = {name: self.work.get_submodule(name) for name in replaced}
        try:
            for name, module in replaced.items():
                set_submodule(self.work, name, module)
            yield
        finally:
            for name, module in saved.items():
                set_submodule(self.work, name, module)

    @contextlib.contextmanager
    def _start_at(self, start: int):
        """Blocks before `start` pass their input through; block `start` reads its cached input."""
        blocks = self.layout.blocks
        saved = [b.__dict__.get("forward") for b in blocks[:start + 1]]

        def passthrough(*args, **kwargs):
            return (kwargs["hidden_states"] if not args else args[0],)

        def from_cache(block):
            run = block.__dict__.get("forward") or block.forward

            def forward(*args, **kwargs):
                cached = self.inputs[start][self.batch]
                if args:
                    return run(cached, *args[1:], **kwargs)
                return run(**{**kwargs, "hidden_states": cached})
            return forward

        for b in blocks[:start]:
            b.forward = passthrough
        blocks[start].forward = from_cache(blocks[start])
        try:
            yield
        finally:
            for b, original in zip(blocks[:start + 1], saved):
                del b.forward
                if original is not None:
                    b.forward = original

    def plan_perplexity(self, ranks: dict) -> float:
        """Development perplexity of the whole model compressed at `ranks` (a depth-search candidate)."""
        replaced = {}
        for p in self.layout.projections:
            self.check()
            if ranks.get(p.name) is not None:
                replaced[p.name] = self.factors(p.name, ranks[p.name])
        return self.perplexity(replaced)

    def sensitivity(self, fractions: list[float], emit=None, score: str = "perplexity") -> dict[str, dict]:
        """name -> {kept fraction: development perplexity with only that projection compressed (1: dense)};
        score="kl": the `divergence` of each candidate instead."""
        emit = emit or (lambda kind, data: None)
        measure = self.divergence if score == "kl" else self.perplexity
        table = {}
        with reusing(LastDecomposition(svd_by_gram)):     # half the search's time was LAPACK's SVD
            for i, p in enumerate(self.layout.projections):
                table[p.name] = self._row(p, i, fractions, emit, measure)
        return table

    def _row(self, p, i: int, fractions: list[float], emit, measure) -> dict[float, float]:
        emit("progress", {"block": p.block, "blocks": self.layout.num_blocks,
                          "step": f"sensitivity of {p.kind} ({i + 1} of {len(self.layout.projections)})"})
        return {f: self.dense_perplexity() if f >= 1 else
                measure({p.name: self.factors(p.name, rank_for_fraction(p, f))}) for f in fractions}

    def dense_perplexity(self) -> float:
        """The original model's development perplexity (kept fraction 1), computed once."""
        if self._dense is None:
            self._dense = self.perplexity({})
        return self._dense


def _window_nll(i, logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    """Summed next-token loss of a batch, window by window: a window's logits [T, V] sliced by rows stay
    contiguous (no copy of the vocabulary-wide tensor, which is most of a late candidate's time)."""
    nll = sum(F.cross_entropy(row[:-1].float(), ids_[1:], reduction="sum").item() for row, ids_ in zip(logits, ids))
    return nll, ids[:, 1:].numel()


def _window_kl(logits: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
    """Summed KL(original ‖ candidate) over a batch's tokens: Σ p log p − Σ p·z + logsumexp(z) per token,
    window by window (no vocabulary-wide log-softmax or product kept: a third of a search's time went here)."""
    probs, plogp = reference
    kl = 0.0
    for row, p, h in zip(logits, probs, plogp):
        z = row.float().clamp_min(torch.finfo(torch.float32).min)    # our copy, used up in place below; a
        dot = torch.linalg.vecdot(p, z)                              # masked (-inf) logit has p = 0
        top = z.amax(-1, keepdim=True)
        kl += float((h - dot + top.squeeze(-1) + z.sub_(top).exp_().sum(-1).log()).sum())
    return kl, probs.shape[0] * probs.shape[1]


def _exp(mean_log: float) -> float:
    return math.exp(mean_log) if mean_log < 700 else float("inf")
