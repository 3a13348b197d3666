"""Second-order statistics of a projection group's inputs, accumulated without keeping X.

Streams: "f" = the input the projection gets in the ORIGINAL model (X_f), "c" = the input it gets
in the model compressed so far (X_c). Row-major activations x are [tokens, n], so X Xᵀ in the
papers' column notation is xᵀ x here. Each batch product runs in float32 (fast) and is added into
float64 accumulators; the finished statistics are means over tokens.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .linalg import Whitener, whiten

# What a method can ask the pipeline for:
#   "f": G_f = X_f X_fᵀ     "c": G_c = X_c X_cᵀ     "x": G_x = X_f X_cᵀ (cross)
#   "absmean": mean |X_f| per input channel (ASVD)
KNOWN = frozenset({"f", "c", "x", "absmean"})


@dataclass
class Statistics:
    tokens: int
    gram_f: torch.Tensor | None = None
    gram_c: torch.Tensor | None = None
    cross: torch.Tensor | None = None     # X_f X_cᵀ / T
    absmean: torch.Tensor | None = None   # mean_t |X_f[j, t]|
    _whiteners: dict = field(default_factory=dict, repr=False)

    def gram(self, stream: str) -> torch.Tensor:
        g = self.gram_f if stream == "f" else self.gram_c
        if g is None:
            raise KeyError(f"statistics of stream {stream!r} were not collected")
        return g

    @classmethod
    def original_only(cls, tokens: int, gram_f: torch.Tensor, absmean: torch.Tensor | None = None) -> "Statistics":
        """Statistics where both streams agree (X_c = X_f): what every method sees in block 0's first group,
        and the original-stream limit used to preview a method without running the compressed stream."""
        return cls(tokens, gram_f, gram_f, gram_f, absmean)

    def whitener(self, stream: str, name: str = "layer") -> Whitener:
        """The whitening factor of one stream's Gram, computed once per group (q/k/v share it)."""
        if stream not in self._whiteners:
            self._whiteners[stream] = whiten(self.gram(stream), name)
        return self._whiteners[stream]


class Accumulator:
    """Sums of the wanted products, in float64 on `home` (the device, or the CPU where it has no float64)."""

    def __init__(self, want: frozenset[str], home: torch.device | None = None):
        unknown = set(want) - KNOWN
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}")
        self.want, self.home = want, home
        self.tokens = 0
        self.sums: dict[str, torch.Tensor] = {}

    @property
    def needs_original(self) -> bool:
        return bool(self.want & {"f", "x", "absmean"})

    @property
    def needs_compressed(self) -> bool:
        return bool(self.want & {"c", "x"})

    def add(self, x_f: torch.Tensor | None, x_c: torch.Tensor | None) -> None:
        products = {}
        if "f" in self.want:
            products["f"] = lambda: _flat(x_f).mT @ _flat(x_f)
        if "c" in self.want:
            products["c"] = lambda: _flat(x_c).mT @ _flat(x_c)
        if "x" in self.want:
            products["x"] = lambda: _flat(x_f).mT @ _flat(x_c)
        if "absmean" in self.want:
            products["absmean"] = lambda: _flat(x_f).abs().sum(0)
        device = (x_f if x_f is not None else x_c).device.type
        exact = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else \
            contextlib.nullcontext()
        with exact:                                      # the block may run in bfloat16 autocast: products never do
            for key, product in products.items():
                value = product().to(self.home).double() if self.home is not None else product().double()
                self.sums[key] = value if key not in self.sums else self.sums[key].add_(value)
        self.tokens += _flat(x_f if x_f is not None else x_c).shape[0]

    def finish(self) -> Statistics:
        t = max(self.tokens, 1)
        mean = {k: v / t for k, v in self.sums.items()}
        for k in ("f", "c"):      # exactly symmetric (a GPU's matmul may differ in the last bit across the diagonal)
            if k in mean:
                mean[k] = (mean[k] + mean[k].mT) / 2
        return Statistics(self.tokens, mean.get("f"), mean.get("c"), mean.get("x"), mean.get("absmean"))


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()
