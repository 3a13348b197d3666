"""`asvd`: activation-aware SVD (Yuan et al., 2023).

Input channels that carry large activations matter more, so W is scaled column-wise by
s_j = (mean_t |x_j|)^alpha before the SVD and the scaling is undone on the right factor.
The paper spreads the rank by a sensitivity search: that is `--allocation sensitivity`
(allocation/sensitivity.py); with the default uniform allocation every projection loses the same share.
"""
from __future__ import annotations

import torch

from ..linalg import truncate
from .base import Fit, Method, Option


def activation_scale(absmean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = (mean |x|)^alpha, floored so that dead channels do not blow up the inverse."""
    s = absmean.double().clamp_min(0).pow(alpha)
    return s.clamp_min(s.max().item() * 1e-6 if s.max() > 0 else 1e-6)


class ASVD(Method):
    name = "asvd"
    title = "ASVD (activation-aware SVD)"
    paper = "Yuan et al., ASVD: Activation-aware SVD for compressing LLMs (arXiv 2312.05821)"
    summary = "Scales W's input channels by their mean activation magnitude^alpha before truncating."
    color = "#ca8a04"
    stats = frozenset({"absmean"})
    options = (Option("alpha", 0.5, "exponent of the activation scaling s_j = mean|x_j|^alpha", bounds=(0.0, 2.0)),)

    def fit(self, weight, stats, budget, name):
        s = activation_scale(stats.absmean, float(self.config["alpha"]))
        t = truncate(weight.double() * s, budget.rank, name)
        return Fit(t.left, t.right / s, t.spectrum, "W diag(s)")

    def truncated_matrix(self, weight, stats, name):
        return weight.double() * activation_scale(stats.absmean, float(self.config["alpha"]))
