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

`measure=F` (ours, not ASVD's) measures each projection at the one kept fraction F and extrapolates
the others from the spectrum of the matrix the method truncates: the log-perplexity increase of a
projection is taken proportional to the share of that spectrum's energy dropped (its local truncation
loss), with the factor measured at F. One partial forward per projection instead of one per
fraction; the threshold search is the same. F was chosen on development windows held out from the
search windows (README). `measure=F1,F2` measures at each Fi and interpolates the log increase linearly
in the dropped share between them (through the origin below the first; the nearest point's
proportion beyond the last): one forward per projection and measured fraction.
"""
from __future__ import annotations

import math

from .base import Allocated, Allocation, NeedsData, Option, fill, kept_params, rank_for_fraction, target_params
from .solver import Candidate, solve

DEFAULT_FRACTIONS = "0.4,0.5,0.6,0.7,0.8,0.9"
MAX_FRACTIONS = 12      # each costs one forward per projection with measure=all: a bound a stranger cannot push
SCORES = ("perplexity", "kl")
SOLVERS = ("threshold", "exact")
DENSE = 1.0         # the kept fraction of a projection left dense: its row holds the model's own perplexity


def parse_fractions(text: str, what: str = "fractions") -> list[float]:
    """Sorted distinct kept fractions from "0.4,0.5,...", each strictly between 0 and 1, at most MAX_FRACTIONS."""
    try:
        values = sorted({float(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"sensitivity {what}: expected kept fractions separated by commas, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise ValueError(f"sensitivity {what}: every kept fraction must be strictly between 0 and 1")
    if len(values) > MAX_FRACTIONS:
        raise ValueError(f"sensitivity {what}: at most {MAX_FRACTIONS} kept fractions, got {len(values)}")
    return values


def parse_measure(text: str) -> list[float] | None:
    """None for "all" (every fraction measured), else the kept fractions measured (the rest extrapolated)."""
    return None if str(text).strip() == "all" else parse_fractions(text, "measure (all, or kept fractions)")


def dropped_share(p, spectrum, fraction: float) -> float:
    """Share of the truncated matrix's energy (Σσ²) dropped when `p` keeps `fraction` of its parameters."""
    energy = spectrum.double().pow(2)
    return float(energy[rank_for_fraction(p, fraction):].sum() / energy.sum().clamp_min(1e-300))


def extrapolated_row(p, spectrum, measured: dict, dense: float, fractions: list[float]) -> dict:
    """{fraction: perplexity} from measurements {kept fraction: perplexity}: log(ppl / dense) as a function
    of the dropped share of the spectrum's energy, linear between measured points and through the origin
    below the first; beyond the last, the last point's proportion (one point: proportional throughout)."""
    points = sorted((dropped_share(p, spectrum, f), math.log(v / dense)) for f, v in measured.items())
    return {f: dense * math.exp(log_increase(points, dropped_share(p, spectrum, f))) for f in fractions}


def log_increase(points: list[tuple[float, float]], share: float) -> float:
    """Piecewise-linear through (0, 0) and `points` (share, log increase), sorted by share; proportional
    to the last point beyond it."""
    for (s0, y0), (s1, y1) in zip([(0.0, 0.0), *points], points):
        if share <= s1:
            return y0 + (y1 - y0) * (share - s0) / max(s1 - s0, 1e-12)
    last_share, last_log = points[-1]
    return last_log * share / max(last_share, 1e-12)


def ranks_at_threshold(layout, table: dict, threshold: float) -> dict:
    """Each projection's smallest kept fraction with perplexity <= threshold, as a rank (None: dense)."""
    ranks = {}
    for p in layout.projections:
        ok = [f for f, ppl in table[p.name].items() if ppl <= threshold]
        ranks[p.name] = None if not ok else rank_for_fraction(p, min(ok))
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


def candidates(layout, table: dict, dense_score: dict) -> dict[str, list[Candidate]]:
    """Each projection's table row as knapsack candidates, damage log(score / its dense score), plus dense."""
    out = {}
    for p in layout.projections:
        base = dense_score[p.name]
        rows = [Candidate(rank_for_fraction(p, f), rank_for_fraction(p, f) * p.rank_cost,
                          max(math.log(v / base), 0.0)) for f, v in table[p.name].items() if f < DENSE]
        out[p.name] = rows + [Candidate(None, p.dense_params, 0.0)]
    return out


class Sensitivity(Allocation):
    name = "sensitivity"
    dash = "dashdot"
    title = "Sensitivity search (ASVD)"
    summary = "each projection compressed alone at a few ratios; the least sensitive give up the most"
    source = "ASVD's sensitivity-based truncation-rank search (hahnyuan/ASVD4LLM: sensitivity.py, binary_search.py)"
    cost = ("one partial forward on development text per projection and candidate fraction, or per projection "
            "and measured fraction with measure=F (cached)")
    options = (Option("fractions", DEFAULT_FRACTIONS, "kept fractions tried for every projection (ASVD: 0.4-0.9)"),
               Option("measure", "all", "all: every fraction measured (ASVD); a fraction such as 0.5: only that one, "
                      "the others extrapolated from the projection's spectrum (one forward per projection); "
                      "several, such as 0.3,0.5: interpolated between them (one forward per projection each)"),
               Option("score", "perplexity", "what a candidate is scored by: development perplexity (ASVD), or kl: "
                      "the original's perplexity times exp(mean KL from the original's next-token distribution)",
                      SCORES),
               Option("solver", "threshold", "threshold: the smallest score threshold that meets the budget (ASVD, "
                      "bounds the worst projection); exact: an integer program that minimises the summed log-score "
                      "increase (development perplexity 32.4 against the threshold's 37.3 with svd-llm at 20%, "
                      "bench/allocations.py select; threshold stays the default: ASVD's own search)", SOLVERS))

    @property
    def needs_statistics(self) -> bool:
        return True

    def validate(self):
        parse_fractions(self.config["fractions"])
        parse_measure(self.config["measure"])

    def allocate(self, ctx):
        if ctx.sensitivity is None:
            raise NeedsData("sensitivity: this run cannot provide development text")
        table, dense_scores = self.table(ctx, parse_fractions(self.config["fractions"]),
                                         parse_measure(self.config["measure"]), self.config["score"])
        budget = target_params(ctx.layout, ctx.ratio)
        if self.config["solver"] == "exact":
            ranks, found = solve(candidates(ctx.layout, table, dense_scores), budget)
        else:
            threshold, ranks = search_threshold(ctx.layout, table, budget)
            found = {"threshold": threshold}
        worst = {name: max(row.values()) for name, row in table.items()}
        ranks = fill(ctx.layout, ranks, budget, lambda p, k: worst[p.name])
        dense = [p.name for p in ctx.layout.projections if ranks[p.name] is None]
        rounded = {n: {str(f): round(v, 3) for f, v in row.items()} for n, row in table.items()}
        return Allocated(ranks, found | {"solver": self.config["solver"], "dense": dense,
                                         "measured": self.config["measure"], "table": rounded})

    @staticmethod
    def table(ctx, fractions: list[float], at: list[float] | None, score: str = "perplexity") -> tuple[dict, dict]:
        """(name -> {fraction: development score}, name -> the score with the projection left dense), every
        fraction measured or extrapolated from those in `at`."""
        if at is None:
            measured = ctx.sensitivity(fractions + [DENSE], score)
            return ({n: {f: v for f, v in row.items() if f < DENSE} for n, row in measured.items()},
                    {n: row[DENSE] for n, row in measured.items()})
        if ctx.spectra is None:
            raise NeedsData("sensitivity: extrapolating needs the projections' spectra")
        measured, spectra = ctx.sensitivity([*at, DENSE], score), ctx.spectra()
        return ({p.name: extrapolated_row(p, spectra[p.name], {f: measured[p.name][f] for f in at},
                                          measured[p.name][DENSE], fractions) for p in ctx.layout.projections},
                {n: row[DENSE] for n, row in measured.items()})
