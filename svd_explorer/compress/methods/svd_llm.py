"""`svd-llm`: truncation-aware data whitening (Wang et al., SVD-LLM, ICLR 2025).

Minimises ‖W X − W' X‖_F. With the Cholesky factor G = X Xᵀ = S Sᵀ the loss is ‖(W − W') S‖_F,
so truncating the SVD of W S drops exactly the smallest losses (Eckart-Young in whitened space),
and the relative error is read off the spectrum. The paper takes X from the original model;
`stream=compressed` takes the inputs the layer really receives once everything upstream is compressed.
"""
from __future__ import annotations

from ..linalg import Whitener, tail_ratio, whitened_fit
from .base import Fit, Method, Option


def svd_llm_fit(weight, whitener: Whitener, rank, name) -> Fit:
    t = whitened_fit(weight, whitener, rank, name=name)
    exact = tail_ratio(t.spectrum, rank) if whitener.path == "cholesky" else None
    return Fit(t.left, t.right, t.spectrum, "W S", whitening=whitener.describe(), rel_error=exact)


class SVDLLM(Method):
    name = "svd-llm"
    title = "SVD-LLM (truncation-aware whitening)"
    paper = "Wang et al., SVD-LLM: Truncation-aware SVD for LLM compression (ICLR 2025, arXiv 2403.07378)"
    summary = "Whitens W with the Cholesky factor of the input Gram matrix so truncation minimises the output error."
    color = "#2563eb"
    options = (Option("stream", "original", "inputs whose statistics whiten W: the original model's (paper) "
                      "or the compressed model's", ("original", "compressed")),)

    def validate(self):
        self.stats = frozenset({"f"} if self.config["stream"] == "original" else {"c"})

    def fit(self, weight, stats, budget, name):
        stream = "f" if self.config["stream"] == "original" else "c"
        return svd_llm_fit(weight, stats.whitener(stream, name), budget.rank, name)
