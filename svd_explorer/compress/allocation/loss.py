"""`loss`: spend rank where the truncation loss per parameter is largest (water-filling over all projections).

For a projection kept at rank k, the local loss of the matrix the method truncates (W S for the
whitening methods: ‖(W − W')X‖²) is the sum of its squared singular values beyond k, and one unit of
rank costs m + n parameters. Taking singular values globally in decreasing order of σ²/(m + n) until
the budget is spent minimises the summed local loss for the budget (every projection keeps rank ≥ 1
and stays below break-even). In the spirit of SVD-LLM v2's truncation-loss allocation, whose exact
formula is unpublished.
Local losses of different projections are in different units (a down projection's output is not a
query's), so `normalize=energy` (the default) divides each projection's σ² by its total Σσ², making
the loss relative; `normalize=none` uses raw σ². The default was chosen on development text.
`floor` keeps a share of every projection's parameters before the water-filling starts: Swift-SVD (arXiv
2604.01609) shows truncation-loss allocation starving modules without one (δ = 0.5 there).
"""
from __future__ import annotations

from .base import (
    Allocated,
    Allocation,
    NeedsData,
    Option,
    fill,
    floor_option,
    floor_rank,
    floor_refused,
    kept_params,
    max_rank,
    target_params,
)


def greedy_ranks(layout, spectra: dict, budget: int, normalize: str, floor: float = 0.0) -> dict:
    """Ranks maximising the kept share of Σ_p loss_p within `budget` parameters, each projection keeping at
    least `floor` of its parameters (see module docstring)."""
    ranks = {p.name: floor_rank(p, floor) for p in layout.projections}
    left = budget - kept_params(layout, ranks)
    if left < 0:
        raise floor_refused("loss", floor, budget - left, budget)
    items = []
    for index, p in enumerate(layout.projections):
        energy = spectra[p.name].double().pow(2)
        scale = energy.sum().clamp_min(1e-300) if normalize == "energy" else 1.0
        gains = (energy[ranks[p.name]:max_rank(p)] / scale / p.rank_cost).tolist()
        items += [(g, index) for g in gains]
    items.sort(key=lambda item: -item[0])
    for _, index in items:
        p = layout.projections[index]
        if p.rank_cost <= left:
            ranks[p.name] += 1
            left -= p.rank_cost
    return ranks


class Loss(Allocation):
    name = "loss"
    dash = "dot"
    title = "Truncation loss (water-filling)"
    summary = "rank goes where dropping it would cost the most local loss per parameter"
    source = "SVD-LLM v2's truncation-loss allocation (Wang et al., NAACL 2025), read as a global greedy"
    cost = "the spectra of every projection's truncated matrix (from original-stream statistics, cacheable)"
    options = (Option("normalize", "energy", "energy: each projection's loss relative to its total; none: raw σ²",
                      ("energy", "none")),
               floor_option(0.5))   # 0.5 of 0 / 0.1 / 0.25 / 0.5 on development text (bench/allocations.py select)

    @property
    def needs_statistics(self) -> bool:
        return True

    def allocate(self, ctx):
        if ctx.spectra is None:
            raise NeedsData("loss: this run cannot provide the projections' spectra")
        spectra = ctx.spectra()
        target = target_params(ctx.layout, ctx.ratio)
        ranks = greedy_ranks(ctx.layout, spectra, target, self.config["normalize"], self.config["floor"])
        norm = self.config["normalize"]

        def next_gain(p, k):
            energy = spectra[p.name].double().pow(2)
            scale = float(energy.sum()) if norm == "energy" else 1.0
            return float(energy[k]) / max(scale, 1e-300) / p.rank_cost if k < len(energy) else 0.0

        ranks = fill(ctx.layout, ranks, target, next_gain)
        return Allocated(ranks, {"normalize": norm, "floor": self.config["floor"],
                                 "local_loss_kept": _kept_share(ctx.layout, spectra, ranks)})


def _kept_share(layout, spectra, ranks) -> float:
    """Mean over projections of the share of their energy the ranks keep (shown in the app)."""
    shares = [float(spectra[p.name][:ranks[p.name]].double().pow(2).sum() / spectra[p.name].double().pow(2).sum())
              for p in layout.projections if ranks.get(p.name)]
    return sum(shares) / max(len(shares), 1)


def whitened_loss(layout, spectra: dict, ranks: dict) -> float:
    """Σ_p of the squared singular values dropped: the summed local truncation loss (tests compare it)."""
    return sum(float(spectra[p.name][ranks[p.name]:].double().pow(2).sum()) for p in layout.projections)


__all__ = ["Loss", "greedy_ranks", "whitened_loss"]

