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

Partial-layer compression (only the last K blocks, each at N R / K) is where the rank goes, so it is
an allocation: ResSVD's default is `depth` with its last-K rule (allocation/depth.py), and
`--allocation uniform` gives residual compensation on every block.
"""
from __future__ import annotations

import math

from ...model.lowrank import break_even_rank
from ..linalg import truncate, whitened_fit
from .base import Budget, Fit, Method, Option

RESIDUAL_FRACTION = 0.05  # k2 = RESIDUAL_FRACTION * m n / (m + n)


def two_stage_fit(weight, whitener, k1: int, k2: int, order: str, name: str) -> Fit:
    w = weight.double()
    if order == "plain-first":
        first, label = truncate(w, k1, name), "W"
    else:
        first, label = whitened_fit(w, whitener, k1, name=name), "W S"
    extra = {"k1": k1, "k2": k2, "order": order}
    if k2 == 0:
        return Fit(first.left, first.right, first.spectrum, label, whitening=whitener.describe(), extra=extra)
    residual = w - first.left @ first.right   # depends on k1, so never worth storing (reuse=False)
    if order == "plain-first":
        second = whitened_fit(residual, whitener, k2, name=name, reuse=False)
    else:
        second = truncate(residual, k2, name, reuse=False)
    extra["residual_spectrum"] = [float(f"{v:.6g}") for v in second.spectrum.tolist()]
    return Fit(first.left, first.right, first.spectrum, label, residual=(second.left, second.right),
               whitening=whitener.describe(), extra=extra)


class ResSVD(Method):
    name = "ressvd"
    title = "ResSVD / ERC-SVD (residual compensation + last-layers compression)"
    paper = "Bai et al., ERC-SVD (ResSVD): Error-Controlled SVD for LLM compression (CPAL 2026, arXiv 2505.20112)"
    summary = ("Spends part of each rank on a second SVD of the truncation residual and compresses only the "
               "last blocks, harder, under the same overall budget.")
    color = "#16a34a"
    reimplemented = True
    stats = frozenset({"f"})
    default_allocation = ("depth", {"profile": "last-k", "blocks": "auto"})
    options = (
        Option("residual", True, "residual compensation on (rank split k1 + k2) or off (one truncation)",
               (True, False)),
        Option("order", "whitened-first", "weighting of the two stages: whitened SVD then plain SVD of the "
               "residual, or plain SVD then whitened SVD of the residual", ("whitened-first", "plain-first")),
    )

    def split(self, rank, out_features, in_features):
        if not self.config["residual"]:
            return Budget(rank)
        k2 = min(math.floor(RESIDUAL_FRACTION * break_even_rank(out_features, in_features)), rank - 1)
        return Budget(rank, max(k2, 0))

    def fit(self, weight, stats, budget, name):
        k2 = budget.residual_rank
        return two_stage_fit(weight, stats.whitener("f", name), budget.rank - k2, k2, self.config["order"], name)
