"""What a ratio keeps before anything runs: ranks, counts and break-even ranks from shapes alone.

A meta-device model is enough (no weight is read), so the CLI's `info`, the page's budget table and the
run's checks all answer from the model's config in milliseconds.
"""
from __future__ import annotations

from ..model.blocks import count_parameters, find_layout, meta_model
from ..model.loading import read_config
from ..model.lowrank import break_even_rank
from .allocation import AllocationContext, NeedsData, get_allocation


def budget_summary(layout, total_params: int, ratio: float, method=None, allocation=None) -> dict:
    """What an allocation keeps at `ratio` before anything runs: totals, and per projection kind the shape,
    the rank of its first compressed block and the break-even rank. Needs only shapes (a meta-device model
    is enough); allocations that need data show the uniform budget with a note."""
    ranks, note = _preview_ranks(layout, ratio, method, allocation or get_allocation("uniform"))
    dense = layout.dense_params
    kept = sum(p.dense_params if ranks.get(p.name) is None else ranks[p.name] * p.rank_cost
               for p in layout.projections)
    kinds = {}
    for p in layout.projections:
        if p.kind not in kinds and ranks.get(p.name) is not None:
            kinds[p.kind] = {"shape": [p.out_features, p.in_features],
                             "break_even_rank": round(break_even_rank(p.out_features, p.in_features), 1),
                             "rank": ranks[p.name]}
    return {"blocks": layout.num_blocks, "compressed_blocks": len({p.block for p in layout.projections
                                                                   if ranks.get(p.name) is not None}),
            "projections": len(layout.projections), "params": total_params, "linear_params": dense,
            "ratio": ratio, "params_after": total_params - dense + kept, "linear_params_after": kept,
            "kinds": kinds, "note": note}


def _preview_ranks(layout, ratio, method, allocation) -> tuple[dict, str | None]:
    try:
        return allocation.allocate(AllocationContext(layout, ratio, method)).ranks, None
    except NeedsData:
        uniform = get_allocation("uniform").allocate(AllocationContext(layout, ratio, method)).ranks
        return uniform, (f"the {allocation.name} allocation decides from the calibration data; shown here: the "
                         f"uniform budget it starts from")


def model_info(source: str, ratio: float, method=None, allocation=None) -> dict:
    """Parameter counts, per-kind ranks and break-even ranks for a ratio, from the config alone."""
    meta = meta_model(read_config(source))
    return budget_summary(find_layout(meta), count_parameters(meta), ratio, method, allocation) | {"model": source}
