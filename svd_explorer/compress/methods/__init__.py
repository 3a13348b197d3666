"""The methods: one file each, one `register` line each here (the CLI, the page and the tests read the registry)."""
from __future__ import annotations

from .aa_svd import AASVD
from .asvd import ASVD
from .base import Budget, FigureTab, Fit, Method, Option
from .fwsvd import FWSVD
from .registry import ALIASES, REGISTRY, get_method, list_methods, method_class, register
from .ressvd import ResSVD
from .saes_svd import SAESSVD
from .svd import TruncatedSVD
from .svd_llm import SVDLLM

register(TruncatedSVD)
register(ASVD)
register(FWSVD)
register(SVDLLM)
register(ResSVD, "erc-svd")
register(AASVD)
register(SAESSVD)

__all__ = ["ALIASES", "Budget", "FigureTab", "Fit", "Method", "Option", "REGISTRY", "get_method", "method_class",
           "list_methods", "register"]
