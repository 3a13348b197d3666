"""The method registry: name -> Method class. Plugins register themselves in methods/__init__.py."""
from __future__ import annotations

from .base import Method

REGISTRY: dict[str, type[Method]] = {}
ALIASES: dict[str, str] = {}


def register(cls: type[Method], *aliases: str) -> type[Method]:
    REGISTRY[cls.name] = cls
    for alias in aliases:
        ALIASES[alias] = cls.name
    return cls


def list_methods() -> list[str]:
    return list(REGISTRY)


def method_class(name: str) -> type[Method]:
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def get_method(name: str, **options) -> Method:
    return method_class(name)(**options)
