"""Method registry: one file per method, one line each here."""
from __future__ import annotations

from .aa_svd import AASVD
from .asvd import ASVD
from .base import Budget, Fit, Method, Option
from .fwsvd import FWSVD
from .ressvd import ResSVD
from .saes_svd import SAESSVD
from .svd import TruncatedSVD
from .svd_llm import SVDLLM

REGISTRY: dict[str, type[Method]] = {}
ALIASES: dict[str, str] = {}


def register(cls: type[Method], *aliases: str) -> type[Method]:
    REGISTRY[cls.name] = cls
    for alias in aliases:
        ALIASES[alias] = cls.name
    return cls


register(TruncatedSVD)
register(ASVD)
register(FWSVD)
register(SVDLLM)
register(ResSVD, "erc-svd")
register(AASVD)
register(SAESSVD)


def list_methods() -> list[str]:
    return list(REGISTRY)


def method_class(name: str) -> type[Method]:
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def get_method(name: str, **options) -> Method:
    return method_class(name)(**options)


__all__ = ["Budget", "Fit", "Method", "Option", "REGISTRY", "get_method", "method_class", "list_methods", "register"]
