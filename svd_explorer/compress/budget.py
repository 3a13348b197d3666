"""What a ratio keeps before anything runs: ranks, counts and break-even ranks from shapes alone.

A meta-device model is enough (no weight is read), so the CLI's `info`, the page's budget table and the
run's checks all answer from the model's config in milliseconds.
"""
from __future__ import annotations

from ..model.blocks import count_parameters, find_layout, meta_model
from ..model.loading import read_config
from ..model.lowrank import break_even_rank
from .allocation import AllocationContext, NeedsData, get_allocation


def budget_summary(layout, total_params: int, ratio: float, method=None, allocation=None,
                   embeddings: dict | None = None) -> dict:
    """What an allocation keeps at `ratio` before anything runs: totals, and per projection kind the shape,
    the rank of its first compressed block and the break-even rank. Needs only shapes (a meta-device model
    is enough); allocations that need data show the uniform budget with a note. The shares say what the
    ratio is of the whole model (`embeddings`, from embedding_counts, adds where the rest of it is)."""
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
            **model_shares(total_params, dense, kept, embeddings), "kinds": kinds, "note": note}


def model_shares(total: int, dense: int, kept: int, embeddings: dict | None) -> dict:
    """The ratio is a share of the projections only: what the projections are of the whole model, what the
    ratio removes from it, and (given the counts) what the embedding and LM head, which stay dense, are of it."""
    shares = {"linear_share_of_model": dense / total, "removed_share_of_model": (dense - kept) / total}
    if embeddings is None:
        return shares
    stored = embeddings["embedding_params"] + (0 if embeddings["lm_head_tied"] else embeddings["lm_head_params"])
    return embeddings | shares | {"embeddings_share_of_model": stored / total,
                                  "other_params": total - dense - stored}


def embedding_counts(model) -> dict:
    """The input embedding and the LM head (tied or not), which no ratio touches: with a large vocabulary they
    are most of the model (63% of Gemma 3 270M), so a ratio of the projections is far from a ratio of the file."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = embed is not None and head is not None and head.weight is embed.weight
    return {"embedding_params": _weight_count(embed), "lm_head_params": _weight_count(head), "lm_head_tied": tied}


def _weight_count(module) -> int:
    return 0 if module is None or getattr(module, "weight", None) is None else module.weight.numel()


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
    return budget_summary(find_layout(meta), count_parameters(meta), ratio, method, allocation,
                          embedding_counts(meta)) | {"model": source}
