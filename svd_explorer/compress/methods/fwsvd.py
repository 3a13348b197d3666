"""`fwsvd`: Fisher-weighted SVD (Hsu et al., Language model compression with weighted low-rank
factorization, ICLR 2022, arXiv 2207.00112).

A weight that the loss is sensitive to should be kept more exactly. The Fisher information of a weight
is estimated by its squared gradient of the language-model loss on the calibration text, summed
over windows: F_ij = Σ_windows (∂L/∂W_ij)². The paper cannot solve the element-wise weighted
problem in closed form and assumes one importance per "row" of its [in, out] weight layout, i.e. per
input channel in PyTorch's [out, in] layout: f_j = Σ_i F_ij. With D = diag(√f) the weighted loss
‖(W − W') D‖ is minimised by the truncated SVD of W D, unscaled on the right factor.
Chosen here where the paper is silent: one gradient per calibration window (batch of one), a floor
of 1e-6 of the largest importance so an unused channel cannot blow up D⁻¹. The importances do not
depend on the ratio or the allocation, so with the statistics cache on they are kept beside the
statistics (same key, which holds a digest of the calibration tokens): a sweep over ratios and allocations
measures them once per calibration seed.
"""
from __future__ import annotations

import torch

from ...errors import ConfigError
from ...model.offload import is_offloaded
from ..gradients import summed_over_windows
from ..linalg import truncate
from .base import Fit, Method

FLOOR = 1e-6


def fisher_scale(importance: torch.Tensor) -> torch.Tensor:
    """d_j = √f_j, floored relative to the largest."""
    d = importance.double().clamp_min(0).sqrt()
    top = d.max().item()
    return d.clamp_min(top * FLOOR if top > 0 else FLOOR)


def fisher_weighted_fit(weight: torch.Tensor, importance: torch.Tensor, rank: int, name: str) -> Fit:
    d = fisher_scale(importance).to(weight.device)
    t = truncate(weight.double() * d, rank, name)
    return Fit(t.left, t.right / d, t.spectrum, "W diag(√f)")


def input_channel_fisher(model, projections, windows: torch.Tensor, check=lambda: None) -> dict[str, torch.Tensor]:
    """f_j = Σ_windows Σ_i (∂L/∂W_ij)² for each projection (by name), one backward pass per window."""
    return summed_over_windows(model, projections, windows, lambda g: g.double().pow(2).sum(0), check)


class FWSVD(Method):
    name = "fwsvd"
    title = "FWSVD (Fisher-weighted SVD)"
    paper = "Hsu et al., Language model compression with weighted low-rank factorization (ICLR 2022, arXiv 2207.00112)"
    summary = ("Weights each input channel by how much the loss depends on it (squared gradients on the "
               "calibration text) before truncating.")
    color = "#0891b2"

    def prepare(self, context):
        if is_offloaded(context.model):
            raise ConfigError("fwsvd needs the whole model in memory for its backward pass; use --offload none")

        def measure():
            context.emit("status", "fwsvd: squared gradients of the loss, one calibration window at a time")
            return input_channel_fisher(context.model, context.layout.projections, context.calib_ids, context.check)

        self.importance = context.cached("fisher", measure)

    def fit(self, weight, stats, budget, name):
        return fisher_weighted_fit(weight, self.importance[name], budget.rank, name)

    def truncated_matrix(self, weight, stats, name):
        return weight.double() * fisher_scale(self.importance[name]).to(weight.device)
