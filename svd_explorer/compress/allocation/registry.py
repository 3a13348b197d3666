"""The allocation registry: name -> Allocation class. Plugins register themselves in allocation/__init__.py."""
from __future__ import annotations

from .base import Allocation

ALLOCATIONS: dict[str, type[Allocation]] = {}


def register(cls: type[Allocation]) -> type[Allocation]:
    ALLOCATIONS[cls.name] = cls
    return cls


def list_allocations() -> list[str]:
    return list(ALLOCATIONS)


def allocation_class(name: str) -> type[Allocation]:
    if name not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {name!r}; available: auto (the method's own), {', '.join(ALLOCATIONS)}")
    return ALLOCATIONS[name]


def get_allocation(name: str, **options) -> Allocation:
    return allocation_class(name)(**options)


def allocation_for(method, name: str = "auto", options: dict | None = None) -> Allocation:
    """The allocation a run uses: `auto` is the method's own (its name and default options, the user's on top)."""
    options = dict(options or {})
    if name == "auto":
        name, defaults = method.default_allocation
        options = {**defaults, **options}
    return get_allocation(name, **options)
