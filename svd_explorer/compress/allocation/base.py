"""The interface every allocation implements, and the budget arithmetic they share.

An allocation decides each projection's rank (or leaves it dense) so that the whole model meets the
ratio exactly: the projections keep at most (1 − ratio) of their dense parameters, and whatever is
left over after rounding is spent rank by rank (`fill`) until no compressible projection can take one
more unit of rank. A rank never reaches break-even (mn/(m+n)): there the factors would store more
than the dense weight.
"""
from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from ...model.blocks import Layout, Projection
from ...model.lowrank import BudgetError, break_even_rank, check_ratio
from ..options import Configurable, Option

Ranks = dict[str, "int | None"]   # projection name -> rank kept, None = left dense


class NeedsData(ValueError):
    """The allocation decides from data (spectra, development text) the caller did not provide."""


@dataclass
class AllocationContext:
    """What an allocation may ask for; the engine fills in what the run can provide."""

    layout: Layout
    ratio: float
    method: object
    spectra: Callable[[], dict] | None = None        # name -> singular values of what the method truncates
    trial: Callable[[Ranks], float] | None = None    # development perplexity of a quick compression at these ranks
    sensitivity: Callable[[list[float], str], dict] | None = None  # (fractions, score) -> name -> {fraction: ppl}
    first_order: Callable[[], dict] | None = None    # name -> loss change of dropping each component (by σ, desc)
    emit: Callable = lambda kind, data: None
    check: Callable = lambda: None


@dataclass
class Allocated:
    ranks: Ranks
    info: dict = field(default_factory=dict)


class Allocation(Configurable, ABC):
    name: str = ""
    title: str = ""
    summary: str = ""
    source: str = ""
    cost: str = "none"      # what it costs before compression starts, in words
    dash: str = "solid"     # its line style in the comparison figures (plotly dash name)
    options: tuple[Option, ...] = ()

    @property
    def needs_statistics(self) -> bool:
        """Whether it reads the original-stream statistics before compression (spectra, a search): the engine
        then computes or reads them once, even for a method that would not."""
        return False

    @abstractmethod
    def allocate(self, ctx: AllocationContext) -> Allocated:
        """Each projection's rank (None: dense) for ctx.ratio, meeting the budget exactly."""

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "source": self.source,
                "cost": self.cost, "options": [o.describe() for o in self.options]}


# ---------------------------------------------------------------------------------------------
# Budget arithmetic
# ---------------------------------------------------------------------------------------------

def target_params(layout: Layout, ratio: float) -> int:
    """Parameters the compressed projections may keep: (1 − ratio) of their dense count."""
    check_ratio(ratio)
    return math.floor((1.0 - ratio) * layout.dense_params + 1e-6)


def max_rank(p: Projection) -> int:
    """Largest rank whose factors store fewer numbers than the dense weight."""
    return max(1, math.ceil(p.dense_params / p.rank_cost) - 1)


def rank_for_fraction(p: Projection, fraction: float) -> int:
    """Rank at which p's factors keep `fraction` of its dense parameters (at least 1, below break-even)."""
    return min(max_rank(p), max(1, int(fraction * p.dense_params // p.rank_cost)))


def floor_option(default: float) -> Option:
    """`floor`: the smallest share of each projection's parameters an allocation may leave it."""
    return Option("floor", default, "smallest share of each projection's parameters kept (0: rank 1)",
                  bounds=(0.0, 0.9))


def floor_rank(p: Projection, floor: float) -> int:
    """The smallest rank an allocation may give p: `floor` of its dense parameters (0: rank 1). Swift-SVD
    (arXiv 2604.01609) shows allocations by loss alone starving modules unless each keeps a floor."""
    return rank_for_fraction(p, floor) if floor > 0 else 1


def floor_refused(owner: str, floor: float, kept: int, budget: int) -> BudgetError:
    """The one-line error when the floors alone keep more than the budget."""
    what = f"a floor of {floor:g} of every projection's parameters" if floor > 0 else "rank 1 everywhere"
    fix = "lower the floor" if floor > 0 else "lower the ratio"
    return BudgetError(f"{owner}: {what} keeps {kept} parameters, more than the {budget} the ratio allows; {fix}")


def kept_params(layout: Layout, ranks: Ranks) -> int:
    return sum(p.dense_params if ranks.get(p.name) is None else ranks[p.name] * p.rank_cost
               for p in layout.projections)


def rank_at(p: Projection, ratio: float) -> int | None:
    """Rank removing `ratio` of p's parameters (floored, at least 1); None for ratio 0 (dense)."""
    if ratio <= 0:
        return None
    if ratio >= 1:
        raise BudgetError(f"{p.name}: a per-projection ratio of {ratio:.3f} removes everything")
    k = math.floor((1.0 - ratio) * break_even_rank(p.out_features, p.in_features) + 1e-9)
    if k < 1:
        largest = 1.0 - 1.0 / break_even_rank(p.out_features, p.in_features)
        raise BudgetError(f"ratio {ratio:g} leaves rank 0 for {p.name} ({p.out_features} x {p.in_features}); "
                          f"the largest ratio that keeps rank 1 there is {math.floor(largest * 1000) / 1000:g}")
    return min(k, max_rank(p))


def fill(layout: Layout, ranks: Ranks, target: int, priority: Callable[[Projection, int], float]) -> Ranks:
    """Spend what rounding left: one unit of rank at a time to the compressed projection with the
    highest priority(p, current rank) that still fits, until none fits. Raises if over budget."""
    ranks = dict(ranks)
    left = target - kept_params(layout, ranks)
    if left < 0:
        raise BudgetError(f"the allocation keeps {target - left} parameters, more than the {target} the ratio allows")
    heap = [(-priority(p, ranks[p.name]), i, p) for i, p in enumerate(layout.projections)
            if ranks.get(p.name) is not None and ranks[p.name] < max_rank(p)]
    heapq.heapify(heap)
    while heap:
        _, i, p = heapq.heappop(heap)
        if p.rank_cost > left:
            continue
        ranks[p.name] += 1
        left -= p.rank_cost
        if ranks[p.name] < max_rank(p):
            heapq.heappush(heap, (-priority(p, ranks[p.name]), i, p))
    return ranks


def rounding_priority(ratios: dict[str, float]):
    """Fill priority that keeps a per-projection ratio as closely as possible: the rank it lost to flooring."""
    def priority(p: Projection, k: int) -> float:
        return (1.0 - ratios[p.name]) * break_even_rank(p.out_features, p.in_features) - k
    return priority


def ranks_for_ratios(layout: Layout, ratios: dict[str, float], ratio: float) -> Ranks:
    """Per-projection ratios floored to ranks, then the budget filled exactly."""
    ranks = {p.name: rank_at(p, ratios[p.name]) for p in layout.projections}
    return fill(layout, ranks, target_params(layout, ratio), rounding_priority(ratios))
