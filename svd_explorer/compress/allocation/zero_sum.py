"""`zero-sum`: one global ranking of every singular component by its first-order effect on the loss (ZS-SVD,
Abbasi et al., arXiv 2602.02848).

Each component i of each projection (in the space the method truncates, A = W T) is scored by the
first-order change of the development loss when it is dropped, ΔL_i ≈ −⟨G, u_i u_iᵀ W⟩ with G the original
model's mean gradient (compress/gradients.py). Every projection drops its components from the smallest
singular value up (so the truncation stays the method's own); among the projections' next components, the
zero-sum rule drops the one with the smallest |ΔL| from the side that brings the running sum of predicted
changes back towards zero (a rise when the sum is ≤ 0, a fall when it is > 0), until the parameters fit the
budget. Components beyond break-even are dropped first by every projection and start the sum.
Chosen here where the paper's code differs or is silent: gradients on the development windows (ZS-SVD: one
calibration sequence), averaged over windows of one; every projection stays factorised (no revert to
dense); the last removal's overshoot is given back to the components whose removal was predicted to hurt
most (`fill`); `floor` keeps a share of each projection's parameters (the paper: 0 at 20 and 40%).
"""
from __future__ import annotations

import heapq
import itertools

from .base import (
    Allocated,
    Allocation,
    NeedsData,
    fill,
    floor_option,
    floor_rank,
    floor_refused,
    kept_params,
    max_rank,
    target_params,
)


def zero_sum_ranks(layout, scores: dict, budget: int, floor: float) -> tuple[dict, float]:
    """(ranks, running sum of predicted loss changes) after the zero-sum removals (module docstring)."""
    ranks = {p.name: max_rank(p) for p in layout.projections}
    running = sum(float(scores[p.name][max_rank(p):].sum()) for p in layout.projections)
    lowest = {p.name: floor_rank(p, floor) for p in layout.projections}
    by_name, order = {p.name: p for p in layout.projections}, itertools.count()
    rises, falls = [], []

    def offer(name):
        if ranks[name] > lowest[name]:
            change = float(scores[name][ranks[name] - 1])
            heapq.heappush(rises if change >= 0 else falls, (abs(change), next(order), name))

    for name in ranks:
        offer(name)
    kept = kept_params(layout, ranks)
    while kept > budget and (rises or falls):
        side = rises if (running <= 0 and rises) or not falls else falls
        _, _, name = heapq.heappop(side)
        running += float(scores[name][ranks[name] - 1])
        ranks[name] -= 1
        kept -= by_name[name].rank_cost
        offer(name)
    if kept > budget:
        raise floor_refused("zero-sum", floor, kept, budget)
    return ranks, running


def predicted_change(layout, scores: dict, ranks: dict) -> float:
    """Σ ΔL of every component the ranks drop: the first-order loss change the allocation predicts."""
    return sum(float(scores[p.name][ranks[p.name]:].sum()) for p in layout.projections)


class ZeroSum(Allocation):
    name = "zero-sum"
    dash = "longdash"
    title = "Global first-order ranking (ZS-SVD)"
    summary = ("every singular component of the model ranked by the predicted loss change of dropping it "
               "(gradient × component); drops keep the running sum near zero")
    source = "Zero Sum SVD (Abbasi et al., arXiv 2602.02848; mint-vu/Zero-Sum-SVD)"
    cost = ("one backward pass per development window and one SVD per projection, before compression "
            "(cached beside the statistics)")
    options = (floor_option(0.25),)   # 0.25 of 0 / 0.1 / 0.25 on development text (bench/allocations.py select)

    @property
    def needs_statistics(self) -> bool:
        return True

    def allocate(self, ctx):
        if ctx.first_order is None:
            raise NeedsData("zero-sum: this run cannot provide gradients on development text")
        scores, budget = ctx.first_order(), target_params(ctx.layout, ctx.ratio)
        ranks, _ = zero_sum_ranks(ctx.layout, scores, budget, self.config["floor"])
        ranks = fill(ctx.layout, ranks, budget, lambda p, k: float(scores[p.name][k]))   # k < max_rank < len
        return Allocated(ranks, {"floor": self.config["floor"],
                                 "predicted_change": predicted_change(ctx.layout, scores, ranks)})
