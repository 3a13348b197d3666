"""Errors a user can act on. Each message is one line that says what is wrong and what to do."""
from __future__ import annotations

import math


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names the source or file and what differs."""


class UnsupportedModelError(ModelLoadError):
    """A model whose structure the engine does not understand."""


class ConfigError(ValueError):
    """A run description that cannot work (a bad value, a missing file, a device that is not here).
    `field` names the setting at fault when there is one, so a page can show the reason beside it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class DataError(ValueError):
    """Text that cannot be read or is too short; the message says what to do."""


def finite_number(value) -> bool:
    """A real number a float holds (not a bool, NaN, infinity or a 400-digit integer): what a stranger's value
    must be before it is compared or converted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 2**63 if isinstance(value, int) else math.isfinite(value)
