"""`uniform`: every projection loses the same share of its parameters (the papers' default)."""
from __future__ import annotations

from .base import Allocated, Allocation, ranks_for_ratios


class Uniform(Allocation):
    name = "uniform"
    dash = "solid"
    title = "Uniform"
    summary = "every projection of every block loses the same share of its parameters"
    source = "SVD-LLM, ASVD without its search, AA-SVD, SAES-SVD"

    def allocate(self, ctx):
        ratios = {p.name: ctx.ratio for p in ctx.layout.projections}
        return Allocated(ranks_for_ratios(ctx.layout, ratios, ctx.ratio), {"block_ratios": None})
