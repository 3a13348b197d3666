"""`svd`: plain truncated SVD of the weight, the data-free teaching baseline."""
from __future__ import annotations

from ..linalg import truncate
from .base import Fit, Method


class TruncatedSVD(Method):
    name = "svd"
    title = "Truncated SVD"
    paper = "Eckart & Young (1936): best rank-k approximation in Frobenius norm"
    summary = ("Keeps the top-k singular components of W and ignores the data; LLM weights are not low-rank, "
               "so it collapses quickly.")
    color = "#6b7280"

    def fit(self, weight, stats, budget, name):
        t = truncate(weight, budget.rank, name)
        return Fit(t.left, t.right, t.spectrum, "W")

    def truncated_matrix(self, weight, stats, name):
        return weight.double()
