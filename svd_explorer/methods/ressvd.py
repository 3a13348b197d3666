"""`ressvd` / `erc-svd`: residual compensation + partial-layer compression (Bai et al., arXiv 2505.20112;
ResSVD in v1/v2, ERC-SVD from v3; no public code).

Residual compensation: a projection's rank k is split into k1 + k2. A first truncation gives W1;
the residual R = W − W1 is approximated at rank k2 by a second, differently weighted truncation,
and the layer keeps both pairs (k (m + n) parameters, as a plain rank-k layer). If both stages
used the same weighting, W1 + R2 would be exactly the one-shot rank-k solution (the residual's top
components are the next components), so the stages must differ. Inferred (the paper text could
not be retrieved; ALGORITHMS.md §7): `order=plain-first` is a plain SVD of W, then a whitened SVD
of R with the calibration Gram; `order=whitened-first` is SVD-LLM whitening first, then a plain
SVD of R. The split follows ERC-SVD as a reviewer reports it: k2 = 0.05 m n / (m + n).

Partial-layer compression: under an overall ratio R for N blocks, only the last K blocks are
compressed, each at R_l = N R / K, so the parameters removed are unchanged; errors made late
propagate through fewer blocks. Default K (inferred): the smallest K with R_l <= 0.8.
"""
from __future__ import annotations

import math

from ..linalg import truncate, whitened_fit
from ..lowrank import BudgetError, break_even_rank, check_ratio, rank_for_ratio
from .base import Budget, Fit, Method, Option

RESIDUAL_FRACTION = 0.05  # k2 = RESIDUAL_FRACTION * m n / (m + n)
MAX_BLOCK_RATIO = 0.8     # default K keeps the per-block ratio at or below this


def default_block_count(blocks: int, ratio: float) -> int:
    """Smallest K whose per-block ratio N R / K stays at or below MAX_BLOCK_RATIO."""
    return min(blocks, max(1, math.ceil(blocks * ratio / MAX_BLOCK_RATIO - 1e-9)))


def two_stage_fit(weight, whitener, k1: int, k2: int, order: str, name: str) -> Fit:
    w = weight.double()
    if order == "plain-first":
        first, label = truncate(w, k1, name), "W"
    else:
        first, label = whitened_fit(w, whitener, k1, name=name), "W S"
    extra = {"k1": k1, "k2": k2, "order": order}
    if k2 == 0:
        return Fit(first.left, first.right, first.spectrum, label, whitening=whitener.describe(), extra=extra)
    residual = w - first.left @ first.right
    if order == "plain-first":
        second = whitened_fit(residual, whitener, k2, name=name)
    else:
        second = truncate(residual, k2, name)
    extra["residual_spectrum"] = [float(f"{v:.6g}") for v in second.spectrum.tolist()]
    return Fit(first.left, first.right, first.spectrum, label, residual=(second.left, second.right),
               whitening=whitener.describe(), extra=extra)


class ResSVD(Method):
    name = "ressvd"
    title = "ResSVD / ERC-SVD (residual compensation + last-layers compression)"
    paper = "Bai et al., ERC-SVD (ResSVD): Error-Controlled SVD for LLM compression (CPAL 2026, arXiv 2505.20112)"
    summary = ("Spends part of each rank on a second SVD of the truncation residual and compresses only the "
               "last blocks, harder, under the same overall budget.")
    stats = frozenset({"f"})
    options = (
        Option("residual", True, "residual compensation on (rank split k1 + k2) or off (one truncation)",
               (True, False)),
        Option("last_layers", "auto", "blocks compressed: auto (smallest K with per-block ratio <= 0.8), "
               "all, or a number K of last blocks"),
        Option("order", "whitened-first", "weighting of the two stages: whitened SVD then plain SVD of the "
               "residual, or plain SVD then whitened SVD of the residual", ("whitened-first", "plain-first")),
    )

    def validate(self):
        value = str(self.config["last_layers"])
        if value not in ("auto", "all") and not (value.isdigit() and int(value) >= 1):
            raise ValueError("ressvd: last_layers must be auto, all or a positive number of blocks")

    def block_count(self, blocks: int, ratio: float) -> int:
        value = str(self.config["last_layers"])
        if value == "all":
            return blocks
        if value == "auto":
            return default_block_count(blocks, ratio)
        if int(value) > blocks:
            raise BudgetError(f"ressvd: last_layers={value} but the model has {blocks} blocks")
        return int(value)

    def plan(self, layout, ratio):
        check_ratio(ratio)
        blocks = layout.num_blocks
        count = self.block_count(blocks, ratio)
        block_ratio = blocks * ratio / count
        if block_ratio >= 1:
            need = math.floor(blocks * ratio) + 1
            raise BudgetError(f"ressvd: compressing the last {count} of {blocks} blocks at overall ratio {ratio:g} "
                              f"needs a per-block ratio of {block_ratio:.2f} >= 1; use at least {need} blocks")
        first = blocks - count
        plan = {}
        for p in layout.projections:
            if p.block < first:
                continue
            k = rank_for_ratio(p.out_features, p.in_features, block_ratio, p.name)
            k2 = 0
            if self.config["residual"]:
                k2 = min(math.floor(RESIDUAL_FRACTION * break_even_rank(p.out_features, p.in_features)), k - 1)
            plan[p.name] = Budget(k, max(k2, 0))
        self.plan_info = {"compressed_blocks": list(range(first, blocks)), "last_layers": count,
                          "block_ratio": block_ratio, "residual": bool(self.config["residual"]),
                          "order": self.config["order"]}
        return plan

    def fit(self, weight, stats, budget, name):
        k2 = budget.residual_rank
        return two_stage_fit(weight, stats.whitener("f", name), budget.rank - k2, k2, self.config["order"], name)
