"""Allocation registry: where the rank goes, an axis of its own beside the method; one line each here."""
from __future__ import annotations

from .base import Allocated, Allocation, AllocationContext, NeedsData, fill, kept_params, max_rank, target_params
from .depth import Depth
from .loss import Loss
from .sensitivity import Sensitivity
from .uniform import Uniform

ALLOCATIONS: dict[str, type[Allocation]] = {}


def register(cls: type[Allocation]) -> type[Allocation]:
    ALLOCATIONS[cls.name] = cls
    return cls


register(Uniform)
register(Depth)
register(Loss)
register(Sensitivity)


def list_allocations() -> list[str]:
    return list(ALLOCATIONS)


def allocation_class(name: str) -> type[Allocation]:
    if name not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {name!r}; available: auto (the method's own), {', '.join(ALLOCATIONS)}")
    return ALLOCATIONS[name]


def get_allocation(name: str, **options) -> Allocation:
    return allocation_class(name)(**options)


__all__ = ["ALLOCATIONS", "Allocated", "Allocation", "AllocationContext", "NeedsData", "fill", "get_allocation",
           "kept_params", "list_allocations", "max_rank", "register", "target_params"]
