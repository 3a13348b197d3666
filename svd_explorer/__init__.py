"""SVD Explorer: low-rank (SVD-based) compression of causal language models.

    from svd_explorer import load_model, get_method, compress_model, load_compressed
    lm = load_model("smollm2-135m")
    model, result = compress_model(lm.model, get_method("svd-llm"), ratio=0.2, calib_ids=windows)

`ratio` is always the fraction of the compressed projections' parameters that is removed.
"""
from .export import load_compressed, save_compressed
from .lowrank import LowRankLinear, break_even_rank, rank_for_ratio
from .methods import get_method, list_methods
from .models import find_layout, load_model
from .pipeline import Cancelled, compress_model

__all__ = ["Cancelled", "LowRankLinear", "break_even_rank", "compress_model", "find_layout", "get_method",
           "list_methods", "load_compressed", "load_model", "rank_for_ratio", "save_compressed"]
