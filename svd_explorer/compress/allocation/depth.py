"""`depth`: a budget profile through depth, generalising ResSVD's last-K rule.

Errors made in early blocks travel through every later block, so it can pay to compress late blocks
harder. Profiles (every block holds the same projections, so a block's ratio is its share):
  last-k  the first N − K blocks stay dense, the last K lose N·R/K each (ResSVD / ERC-SVD);
  ramp    block b loses R·(1 − s + 2·s·b/(N − 1)), from R(1 − s) to R(1 + s): mean R, slope s.
K (or s) is a number, `auto` (ResSVD's rule: the smallest K with N·R/K ≤ 0.8; for the ramp s = 0.5), or
`search`: every candidate is tried with a quick whitened compression (statistics of the original
stream, no refinement) and scored on development windows, disjoint from the calibration windows;
the lowest development perplexity wins. Evaluation text is never read.
"""
from __future__ import annotations

import math

from ...model.lowrank import BudgetError
from .base import Allocated, Allocation, NeedsData, Option, ranks_for_ratios

MAX_BLOCK_RATIO = 0.8          # ResSVD's default K keeps the per-block ratio at or below this
SEARCH_MAX_BLOCK_RATIO = 0.9   # candidates for K may go up to this per-block ratio
RAMP_SLOPES = (0.25, 0.5, 0.75, 1.0)


def default_block_count(blocks: int, ratio: float) -> int:
    """Smallest K whose per-block ratio N R / K stays at or below MAX_BLOCK_RATIO."""
    return min(blocks, max(1, math.ceil(blocks * ratio / MAX_BLOCK_RATIO - 1e-9)))


def last_k_ratios(blocks: int, ratio: float, k: int) -> list[float]:
    block_ratio = blocks * ratio / k
    if block_ratio >= 1:
        need = math.floor(blocks * ratio) + 1
        raise BudgetError(f"compressing the last {k} of {blocks} blocks at overall ratio {ratio:g} needs a "
                          f"per-block ratio of {block_ratio:.2f} >= 1; use at least {need} blocks")
    return [0.0] * (blocks - k) + [block_ratio] * k


def ramp_ratios(blocks: int, ratio: float, slope: float) -> list[float]:
    if blocks == 1:
        return [ratio]
    out = [ratio * (1 - slope + 2 * slope * b / (blocks - 1)) for b in range(blocks)]
    if max(out) >= 1:
        raise BudgetError(f"a ramp of slope {slope:g} at ratio {ratio:g} asks the last block to lose "
                          f"{max(out):.2f} >= 1 of its parameters; use a smaller slope")
    return out


def block_count_candidates(blocks: int, ratio: float) -> list[int]:
    """K from the smallest allowed (per-block ratio <= 0.9) to all blocks, about six values."""
    low = min(blocks, max(1, math.ceil(blocks * ratio / SEARCH_MAX_BLOCK_RATIO - 1e-9)))
    step = max(1, (blocks - low) // 5)
    return sorted(set(range(low, blocks + 1, step)) | {blocks, default_block_count(blocks, ratio)})


class Depth(Allocation):
    name = "depth"
    dash = "dash"
    title = "Depth profile"
    summary = "later blocks lose more than earlier ones (ResSVD's last-K rule, or a ramp)"
    source = "ResSVD / ERC-SVD partial-layer compression (Bai et al., arXiv 2505.20112); the ramp is ours"
    cost = "none for a number or auto; one quick compression and a development evaluation per candidate for search"
    options = (
        Option("profile", "last-k", "last-k: only the last K blocks, at N·R/K each; ramp: a linear profile "
               "through depth", ("last-k", "ramp")),
        Option("blocks", "auto", "last-k: K, 'auto' (ResSVD's rule: per-block ratio <= 0.8) or 'search' "
               "(on development text)"),
        Option("slope", "auto", "ramp: slope s in [0, 1], 'auto' (0.5) or 'search' (on development text)"),
    )

    @property
    def needs_statistics(self) -> bool:
        return "search" in (self.config.get("blocks"), self.config.get("slope"))

    def validate(self):
        for key, low, high in (("blocks", 1, None), ("slope", 0.0, 1.0)):
            value = self.config[key]
            if value in ("auto", "search"):
                continue
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"depth: {key} must be auto, search or a number, got {value!r}") from None
            if key == "blocks" and not (math.isfinite(number) and number == int(number)):
                raise ValueError(f"depth: blocks must be auto, search or a whole number, got {value!r}")
            if not number >= low or (high is not None and not number <= high):     # NaN fails both
                raise ValueError(f"depth: {key} must be at least {low}" + (f" and at most {high}" if high else ""))

    def profiles(self, blocks: int, ratio: float) -> list[tuple[str, list[float]]]:
        """(label, per-block ratios) of every candidate the options allow."""
        if self.config["profile"] == "last-k":
            value = self.config["blocks"]
            ks = block_count_candidates(blocks, ratio) if value == "search" else \
                [default_block_count(blocks, ratio) if value == "auto" else int(float(value))]
            if any(k > blocks for k in ks):
                raise BudgetError(f"depth: blocks={value} but the model has {blocks} blocks")
            return [(f"K={k}", last_k_ratios(blocks, ratio, k)) for k in ks]
        value = self.config["slope"]
        slopes = RAMP_SLOPES if value == "search" else [0.5 if value == "auto" else float(value)]
        return [(f"slope={s:g}", ramp_ratios(blocks, ratio, s)) for s in slopes]

    def allocate(self, ctx):
        blocks = ctx.layout.num_blocks
        candidates = [(label, self._ranks(ctx, profile), profile)
                      for label, profile in self.profiles(blocks, ctx.ratio)]
        scores = {}
        if len(candidates) > 1:
            if ctx.trial is None:
                raise NeedsData("depth: a search needs development text, which this run does not provide")
            for label, ranks, _ in candidates:
                ctx.check()
                ctx.emit("status", f"depth search: trying {label} on development text")
                scores[label] = ctx.trial(ranks)
        label, ranks, profile = min(candidates, key=lambda c: scores.get(c[0], 0.0))
        compressed = [b for b, r in enumerate(profile) if r > 0]
        info = {"profile": self.config["profile"], "choice": label, "block_ratios": profile,
                "compressed_blocks": compressed, "block_ratio": max(profile),
                "search": {k: round(v, 4) for k, v in scores.items()} or None}
        return Allocated(ranks, info)

    def _ranks(self, ctx, profile: list[float]):
        ratios = {p.name: profile[p.block] for p in ctx.layout.projections}
        return ranks_for_ratios(ctx.layout, ratios, ctx.ratio)
