"""`sensitivity`: ASVD's sensitivity-based truncation-rank search (Yuan et al., arXiv 2312.05821).

For every projection alone and every candidate kept fraction (ASVD: 0.4 ... 0.9 of the parameters),
the projection is compressed with the run's method (its original-stream form) and the perplexity of
the model is measured on development windows. All (projection, fraction, perplexity) triples are
sorted; a perplexity threshold is searched so that each projection takes the smallest fraction whose
perplexity stays under it (a projection with none stays dense), meeting the budget; what rounding
leaves is spent on the most sensitive projections first. The table costs one partial forward per
triple, so it is cached per model, calibration set, method and development set.
Where we differ from ASVD's code: perplexity is measured on development windows disjoint from the
calibration windows (ASVD uses the calibration windows themselves), and the threshold is the most
conservative one that meets the budget exactly.
"""
from __future__ import annotations

from .base import Allocated, Allocation, NeedsData, Option, fill, kept_params, target_params

DEFAULT_FRACTIONS = "0.4,0.5,0.6,0.7,0.8,0.9"


def parse_fractions(text: str) -> list[float]:
    try:
        values = sorted({float(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"sensitivity: fractions must be numbers separated by commas, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise ValueError("sensitivity: every kept fraction must be strictly between 0 and 1")
    return values


def ranks_at_threshold(layout, table: dict, threshold: float) -> dict:
    """Each projection's smallest kept fraction with perplexity <= threshold, as a rank (None: dense)."""
    from .base import max_rank

    ranks = {}
    for p in layout.projections:
        ok = [f for f, ppl in table[p.name].items() if ppl <= threshold]
        ranks[p.name] = None if not ok else min(max_rank(p), max(1, int(min(ok) * p.dense_params // p.rank_cost)))
    return ranks


def search_threshold(layout, table: dict, budget: int) -> tuple[float, dict]:
    """The smallest perplexity threshold whose ranks keep at most `budget` parameters."""
    thresholds = sorted({ppl for row in table.values() for ppl in row.values()})
    low, high = 0, len(thresholds) - 1
    if kept_params(layout, ranks_at_threshold(layout, table, thresholds[high])) > budget:
        raise ValueError("sensitivity: even the smallest candidate fraction everywhere keeps more parameters than "
                         "the ratio allows; add smaller fractions")
    while low < high:
        mid = (low + high) // 2
        if kept_params(layout, ranks_at_threshold(layout, table, thresholds[mid])) <= budget:
            high = mid
        else:
            low = mid + 1
    return thresholds[low], ranks_at_threshold(layout, table, thresholds[low])


class Sensitivity(Allocation):
    name = "sensitivity"
    title = "Sensitivity search (ASVD)"
    summary = "each projection compressed alone at a few ratios; the least sensitive give up the most"
    source = "ASVD's sensitivity-based truncation-rank search (hahnyuan/ASVD4LLM: sensitivity.py, binary_search.py)"
    cost = "one partial forward on development text per projection and candidate (cached)"
    options = (Option("fractions", DEFAULT_FRACTIONS, "kept fractions tried for every projection (ASVD: 0.4-0.9)"),)

    def validate(self):
        parse_fractions(self.config["fractions"])

    def allocate(self, ctx):
        if ctx.sensitivity is None:
            raise NeedsData("sensitivity: this run cannot provide development text")
        table = ctx.sensitivity(parse_fractions(self.config["fractions"]))
        budget = target_params(ctx.layout, ctx.ratio)
        threshold, ranks = search_threshold(ctx.layout, table, budget)
        worst = {name: max(row.values()) for name, row in table.items()}
        ranks = fill(ctx.layout, ranks, budget, lambda p, k: worst[p.name])
        dense = [p.name for p in ctx.layout.projections if ranks[p.name] is None]
        rounded = {n: {str(f): round(v, 3) for f, v in row.items()} for n, row in table.items()}
        return Allocated(ranks, {"threshold": threshold, "dense": dense, "table": rounded})
