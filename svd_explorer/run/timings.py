"""One time per run, broken down by phase: the CLI summary, the page's status line, its Run tab, Compare
and the JSON all show this record, so a run never has three different durations."""
from __future__ import annotations

from contextlib import contextmanager

from ..model.devices import Clock

PHASES = ("loading", "text", "forward", "statistics", "allocation", "compression", "refinement", "evaluation",
          "cost", "saving")


class Phases:
    """Wall time of each phase of one run (synchronised on `device`), and of the whole run. `on_end(name,
    seconds)` hears each phase end (the page refines its estimate of the whole run with it)."""

    def __init__(self, device=None, on_end=None):
        self.device, self.seconds, self.whole = device, {}, Clock(device)
        self.on_end = on_end or (lambda name, seconds: None)

    @contextmanager
    def __call__(self, name: str):
        clock = Clock(self.device)
        try:
            yield
        finally:
            self.add(name, clock.seconds())

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.on_end(name, seconds)

    def breakdown(self) -> dict[str, float]:
        ordered = {name: round(self.seconds[name], 2) for name in PHASES if self.seconds.get(name)}
        return ordered | {"total": round(self.whole.seconds(), 2)}


def describe(timings: dict | None) -> str:
    """'412 s: text 35, statistics 116, compression 245, evaluation 16' (phases under half a second left out)."""
    if not timings:
        return ""
    parts = [f"{name} {seconds:.0f}" for name, seconds in timings.items() if name != "total" and seconds >= 0.5]
    return f"{timings['total']:.0f} s" + (f": {', '.join(parts)}" if parts else "")
