"""The small interface every compression method implements.

A method says which input statistics it needs (`stats`), how one projection is factorised from its
weight and statistics (`fit`, a pure function of tensors), and owns its metadata: title, paper, colour,
options, the allocation it uses unless told otherwise, and whether the refinement stage is on by
default. Where the rank goes is an allocation's job (allocation/), end-to-end block tuning the
refinement stage's (refine.py); the pipeline does everything else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..options import Configurable, Option  # noqa: F401 - Option is re-exported for method files
from ..stats import Statistics


@dataclass(frozen=True)
class Budget:
    rank: int                # total rank kept (first pair + residual pair)
    residual_rank: int = 0   # part of `rank` spent on a second, residual pair


@dataclass
class Fit:
    """A factorisation W' = up @ down (+ res_up @ res_down) and what to show about it."""

    up: torch.Tensor                   # [m, k]
    down: torch.Tensor                 # [k, n]
    spectrum: torch.Tensor             # singular values of the matrix actually truncated
    truncated: str                     # which matrix that was, e.g. "W S"
    residual: tuple[torch.Tensor, torch.Tensor] | None = None
    whitening: dict | None = None      # decomposition path and jitter
    extra: dict = field(default_factory=dict)
    rel_error: float | None = None     # ‖(W − W')X‖/‖WX‖ when the fit knows it exactly (else the pipeline computes it)

    def dense(self) -> torch.Tensor:
        w = self.up @ self.down
        return w + self.residual[0] @ self.residual[1] if self.residual else w


@dataclass(frozen=True)
class FigureTab:
    """A tab a method brings to the page: its title, what it explains, the figures it draws (their names in
    figures/plots.py's PLUGIN_FIGURES) and what those say for a run without them."""

    title: str
    explanation: str
    figures: tuple[str, ...]
    missing: str


class Method(Configurable, ABC):
    name: str = ""
    title: str = ""
    paper: str = ""
    summary: str = ""
    color: str = "#6b7280"
    reimplemented: bool = False        # no public code: rebuilt from the paper, numbers may differ
    stats: frozenset[str] = frozenset()
    options: tuple[Option, ...] = ()
    default_allocation: tuple[str, dict] = ("uniform", {})
    refines_by_default: bool = False
    figures: tuple[FigureTab, ...] = ()    # tabs of its own on the page (saes-svd's ACES search)

    @property
    def sequential(self) -> bool:
        """Whether fits need the compressed stream, so groups must be processed one after another."""
        return bool(self.stats & {"c", "x"})

    def original_stream_form(self) -> "Method":
        """The method as a development scorer fits candidates, from original-stream statistics only: itself, or
        its default options when those read only the original stream. A method that always needs the compressed
        stream overrides this with its limit when the streams agree (SVD-LLM for aa-svd and saes-svd).
        Methods with the same form share one sensitivity table."""
        form = type(self)() if self.sequential else self
        if form.sequential:
            raise NotImplementedError(f"{self.name} needs the compressed stream: it must name its original-stream "
                                      "form")
        return form

    def prepare(self, context) -> None:
        """Model-level statistics gathered before the block loop (fwsvd's gradients); most need none."""

    def split(self, rank: int, out_features: int, in_features: int) -> Budget:
        """How a projection's rank is spent; a method with a residual pair divides it."""
        return Budget(rank)

    @abstractmethod
    def fit(self, weight: torch.Tensor, stats: Statistics, budget: Budget, name: str) -> Fit:
        """Factorise one projection's weight [m, n] within `budget`, from the statistics it asked for."""

    def truncated_matrix(self, weight: torch.Tensor, stats: Statistics, name: str) -> torch.Tensor:
        """What this method truncates, as A = W T, from original-stream statistics only. Default: the whitened
        weight W S (SVD-LLM's; the two-stream methods reduce to it when the streams agree)."""
        return stats.whitener("f", name).times(weight.double())

    def truncated_spectrum(self, weight: torch.Tensor, stats: Statistics, name: str) -> torch.Tensor:
        """Singular values of what this method truncates: their squares are the local loss of each rank
        dropped, which the `loss` allocation spends rank against."""
        return torch.linalg.svdvals(self.truncated_matrix(weight, stats, name))

    def truncated_directions(self, weight: torch.Tensor, stats: Statistics, name: str) -> torch.Tensor:
        """The left singular vectors U of A = W T (columns by decreasing singular value). Dropping component i
        removes u_i u_iᵀ W from the weight, whatever T is (u_iᵀ W = σ_i v_iᵀ T⁻¹), so first-order scores
        need U and W only."""
        return torch.linalg.svd(self.truncated_matrix(weight, stats, name), full_matrices=False)[0]

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "paper": self.paper, "summary": self.summary,
                "options": [o.describe() for o in self.options], "allocation": self.default_allocation[0],
                "refines": self.refines_by_default}
