"""The small interface every compression method implements.

A method says which input statistics it needs (`stats`), how the rank budget is spread
(`plan`, uniform by default), how one projection is factorised from its weight and statistics
(`fit`, a pure function of tensors), and optionally how a finished block is tuned end to end
(`refine_block`). The pipeline does everything else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..lowrank import check_ratio, rank_for_ratio
from ..models import Layout, Projection
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

    def dense(self) -> torch.Tensor:
        w = self.up @ self.down
        return w + self.residual[0] @ self.residual[1] if self.residual else w


@dataclass(frozen=True)
class Option:
    """One user-facing option of a method (becomes a CLI flag and a UI control)."""

    name: str
    default: object
    help: str
    choices: tuple | None = None


class Method(ABC):
    name: str = ""
    title: str = ""
    paper: str = ""
    summary: str = ""
    stats: frozenset[str] = frozenset()
    options: tuple[Option, ...] = ()

    def __init__(self, **options):
        known = {o.name: o for o in self.options}
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"{self.name} has no option(s) {sorted(unknown)}; it accepts {sorted(known) or 'none'}")
        self.config = {name: options.get(name, o.default) for name, o in known.items()}
        for name, value in self.config.items():
            choices = known[name].choices
            if choices and value not in choices:
                raise ValueError(f"{self.name}: option {name} must be one of {list(choices)}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Check option values; raise ValueError with a clear message."""

    @property
    def sequential(self) -> bool:
        """Whether fits need the compressed stream, so groups must be processed one after another."""
        return bool(self.stats & {"c", "x"})

    def plan(self, layout: Layout, ratio: float) -> dict[str, Budget]:
        """Uniform budget: every projection loses `ratio` of its parameters."""
        return uniform_plan(layout.projections, ratio)

    @abstractmethod
    def fit(self, weight: torch.Tensor, stats: Statistics, budget: Budget, name: str) -> Fit:
        """Factorise one projection's weight [m, n] within `budget`, from the statistics it asked for."""

    def refine_block(self, block, data) -> dict | None:
        """Optional end-to-end tuning of a compressed block (data: pipeline.RefineData); returns diagnostics."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "paper": self.paper, "summary": self.summary,
                "options": [{"name": o.name, "default": o.default, "help": o.help,
                             "choices": list(o.choices) if o.choices else None} for o in self.options]}


def uniform_plan(projections: list[Projection], ratio: float) -> dict[str, Budget]:
    check_ratio(ratio)
    return {p.name: Budget(rank_for_ratio(p.out_features, p.in_features, ratio, p.name)) for p in projections}
