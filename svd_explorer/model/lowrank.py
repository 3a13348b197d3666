"""The factorised linear layer and the one rank budget of the project.

`ratio` is always the fraction of a projection's parameters that is REMOVED. A projection of
shape m x n (out x in) kept at rank k stores k (m + n) numbers instead of m n, so

    k = floor((1 - ratio) * m n / (m + n))

and any k above the break-even rank m n / (m + n) would store more than the dense layer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BudgetError(ValueError):
    """A ratio that cannot be honoured (out of range, or leaving rank 0)."""


def check_ratio(ratio) -> float:
    """The one range check of a ratio, wherever it comes from (a RunConfig, a flag, the page, the pipeline)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise BudgetError(f"ratio must be strictly between 0 and 1 (the fraction of parameters removed); got {ratio}")
    return float(ratio)


def break_even_rank(m: int, n: int) -> float:
    """Rank above which a factorised m x n layer stores more numbers than the dense one."""
    return m * n / (m + n)


def rank_for_ratio(m: int, n: int, ratio: float, name: str = "layer") -> int:
    """Largest rank whose k (m + n) parameters remove at least `ratio` of the m n dense ones."""
    check_ratio(ratio)
    k = math.floor((1.0 - ratio) * break_even_rank(m, n) + 1e-9)
    if k < 1:
        largest = 1.0 - 1.0 / break_even_rank(m, n)
        raise BudgetError(
            f"ratio {ratio:g} leaves rank 0 for {name} ({m} x {n}); "
            f"the largest ratio that keeps rank 1 there is {math.floor(largest * 1000) / 1000:g}"
        )
    return k


class LowRankLinear(nn.Module):
    """y = up(down(x)) + b, optionally plus a second (residual) pair res_up(res_down(x)).

    `down` is [rank, in], `up` is [out, rank]. This module is what gets saved: the dense weight
    is never written back, so the parameters really are removed.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 residual_rank: int = 0, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.residual_rank = rank, residual_rank
        self.down = nn.Parameter(torch.zeros(rank, in_features, **kw))
        self.up = nn.Parameter(torch.zeros(out_features, rank, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        if residual_rank:
            self.res_down = nn.Parameter(torch.zeros(residual_rank, in_features, **kw))
            self.res_up = nn.Parameter(torch.zeros(out_features, residual_rank, **kw))
        else:
            self.res_down = self.res_up = None

    @classmethod
    def from_factors(cls, up: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None = None,
                     residual: tuple[torch.Tensor, torch.Tensor] | None = None, dtype=None) -> "LowRankLinear":
        """Build from W' = up @ down (+ residual[0] @ residual[1]); factors are copied into `dtype`."""
        dtype = dtype or (bias.dtype if bias is not None else torch.float32)
        layer = cls(down.shape[1], up.shape[0], down.shape[0], bias is not None,
                    residual[1].shape[0] if residual else 0, device=down.device, dtype=dtype)
        with torch.no_grad():
            layer.down.copy_(down)
            layer.up.copy_(up)
            if bias is not None:
                layer.bias.copy_(bias)
            if residual:
                layer.res_up.copy_(residual[0])
                layer.res_down.copy_(residual[1])
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(F.linear(x, self.down), self.up, self.bias)
        if self.res_down is not None:
            y = y + F.linear(F.linear(x, self.res_down), self.res_up)
        return y

    def dense_weight(self) -> torch.Tensor:
        """W' as an [out, in] matrix (for diagnostics only)."""
        w = self.up @ self.down
        if self.res_down is not None:
            w = w + self.res_up @ self.res_down
        return w

    def extra_repr(self) -> str:
        extra = f", residual_rank={self.residual_rank}" if self.residual_rank else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
                f"{extra}, bias={self.bias is not None}")


def dense_weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W as [out, in] and b for nn.Linear and GPT-2's Conv1D (which stores W transposed)."""
    if isinstance(module, nn.Linear):
        return module.weight, module.bias
    if type(module).__name__ == "Conv1D":
        return module.weight.t(), module.bias
    raise TypeError(f"cannot compress a {type(module).__name__}: only nn.Linear and Conv1D are supported")


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
