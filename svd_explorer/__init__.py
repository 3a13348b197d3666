"""SVD Explorer: low-rank (SVD-based) compression of causal language models.

    from svd_explorer import RunConfig, plan, run
    checked = plan(RunConfig(method="svd-llm", ratio=0.2))    # every check once, nothing loaded yet
    record = run(checked).record                              # a whole run, as the CLI does it

    from svd_explorer import load_model, get_method, compress_model, load_compressed
    lm = load_model("smollm2-135m")
    model, result = compress_model(lm.model, get_method("svd-llm"), 0.2, windows)   # the pipeline alone

`ratio` is always the fraction of the compressed projections' parameters that is removed.
"""
from .compress.allocation import get_allocation, list_allocations
from .compress.methods import get_method, list_methods
from .compress.pipeline import Cancelled, compress_model
from .logs import QUIETED  # noqa: F401 - first: quiets third-party import-time noise
from .model.blocks import find_layout
from .model.loading import load_compressed, load_model
from .model.lowrank import LowRankLinear, break_even_rank, rank_for_ratio
from .model.saving import save_compressed
from .run.config import RunConfig, with_preset
from .run.engine import run
from .run.plan import Plan, plan

__all__ = ["Cancelled", "LowRankLinear", "Plan", "RunConfig", "break_even_rank", "compress_model", "find_layout",
           "get_allocation", "get_method", "list_allocations", "list_methods", "load_compressed", "load_model",
           "plan", "rank_for_ratio", "run", "save_compressed", "with_preset"]
