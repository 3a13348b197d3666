"""SVD Explorer: low-rank (SVD-based) compression of causal language models.

    from svd_explorer import RunConfig, run
    record = run(RunConfig(method="svd-llm", ratio=0.2)).record      # a whole run, as the CLI does it

    from svd_explorer import load_model, get_method, compress_model, load_compressed
    lm = load_model("smollm2-135m")
    model, result = compress_model(lm.model, get_method("svd-llm"), 0.2, windows)   # the pipeline alone

`ratio` is always the fraction of the compressed projections' parameters that is removed.
"""
from .allocation import get_allocation, list_allocations
from .config import RunConfig, with_preset
from .engine import run
from .layout import find_layout
from .loading import load_compressed, load_model
from .lowrank import LowRankLinear, break_even_rank, rank_for_ratio
from .methods import get_method, list_methods
from .pipeline import Cancelled, compress_model
from .saving import save_compressed

__all__ = ["Cancelled", "LowRankLinear", "RunConfig", "break_even_rank", "compress_model", "find_layout",
           "get_allocation", "get_method", "list_allocations", "list_methods", "load_compressed", "load_model",
           "rank_for_ratio", "run", "save_compressed", "with_preset"]
