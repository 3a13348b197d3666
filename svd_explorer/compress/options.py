"""User-facing options of a method or an allocation: declared once, they become CLI flags and page controls.

An Option whose default is None and that has `unset` text means "chosen automatically" (for example
SAES-SVD's β, which ACES chooses unless fixed): the page draws a "fix ..." checkbox for it, never a
number box that would send 0. Values are coerced to the option's type and checked against its
bounds and choices in one place, so the CLI, the app and Python callers get the same one-line errors.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_TEXT = 200       # the longest option value accepted, as typed (the page's text boxes hold as many)


@dataclass(frozen=True)
class Option:
    name: str
    default: object
    help: str
    choices: tuple | None = None
    bounds: tuple | None = None       # (low, high) inclusive, for numbers
    kind: type | None = None          # the value's type when the default is None
    unset: str | None = None          # what None means, e.g. "let ACES choose"

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value, owner: str):
        """The value in the option's type, checked; raises ValueError naming the option."""
        if value is None:
            if self.default is None:
                return None
            raise ValueError(f"{owner}: option {self.name} needs a value")
        value = _as_type(value, self.type, f"{owner}: option {self.name}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{owner}: option {self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.bounds and not self.bounds[0] <= value <= self.bounds[1]:
            raise ValueError(f"{owner}: option {self.name} must be between {self.bounds[0]} and {self.bounds[1]}, "
                             f"got {value}")
        return value

    def describe(self) -> dict:
        return {"name": self.name, "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices else None,
                "bounds": list(self.bounds) if self.bounds else None, "unset": self.unset}


def _as_type(value, kind: type, what: str):
    if len(str(value)) > MAX_TEXT:      # checked here, not only by the page's text box: an API caller sends anything
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("on", "true", "1", "yes"):
            return True
        if text in ("off", "false", "0", "no"):
            return False
        raise ValueError(f"{what} takes on or off, got {value!r}")
    if kind in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number, got {value!r}") from None
        if kind is int and number != int(number):
            raise ValueError(f"{what} must be a whole number, got {value!r}")
        return int(number) if kind is int else number
    return str(value).strip()


class Configurable:
    """Something with declared options: `config` holds every option's value, defaults included."""

    name: str = ""
    options: tuple[Option, ...] = ()

    def __init__(self, **options):
        known = {o.name: o for o in self.options}
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"{self.name} has no option(s) {sorted(unknown)}; it accepts {sorted(known) or 'none'}")
        self.config = {name: o.coerce(options.get(name, o.default), self.name) for name, o in known.items()}
        self.validate()

    def validate(self) -> None:
        """Checks that involve several options; raise ValueError with a clear message."""
