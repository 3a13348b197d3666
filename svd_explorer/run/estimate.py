"""How long a run will take: from the first second, then refined as its phases end.

Before the run, each phase's time is the rate of the most similar measured run (same method, then model,
then allocation, then nearest ratio; a phase every method has, a run of the same model first; the gallery's
runs and its reference run, all measured on the machine that made the gallery) times the work the request
asks for: calibration tokens for statistics, allocation and compression; refinement steps × batch × length;
evaluation and development tokens; sampled tokens for text drawn from the model; all times the model's
parameters over the measured run's. As the run goes, every finished phase replaces its estimate, and the
phases still ahead are scaled by how much faster or slower the finished ones ran than estimated (another
machine, a busy one). Loading and text are left out of that scale: a model already in memory or a sample
read back from disk says nothing about the machine's speed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .timings import PHASES

MEASURABLE = 0.05                     # seconds: a shorter phase's rate is noise
# Phases whose speed says nothing about the rest: a model already in memory, text, statistics or a search
# table read back from a cache end in a second whatever the machine.
UNSCALED = ("loading", "text", "statistics", "allocation")
SPEED_BOUNDS = (0.25, 8.0)             # how far the finished phases may move the rest
# Phases any measured run tells about; the others (statistics, allocation, compression) are the method's
# own: when the most alike run did not do one, the request will not either.
PIPELINE = ("compression", "refinement")
BORROWED = ("loading", "text", "refinement", "evaluation", "cost", "saving")


def work(config: dict, sampled_tokens: int, loaded: bool) -> dict[str, float]:
    """What each phase of a run described by `config` (a RunConfig as a dict) has to do, in its own units."""
    calib = config["calib_samples"] * config["seq_len"]
    refine = config.get("refine") not in ("off", None) and config.get("refine_steps", 0) > 0
    evaluated = (config.get("eval_windows") or 0) + (config.get("dev_windows") or 0)
    return {"loading": 0.0 if loaded else 1.0, "text": float(sampled_tokens), "statistics": calib,
            "allocation": calib, "compression": calib,
            "refinement": config["refine_steps"] * config["refine_batch"] * config["seq_len"] if refine else 0.0,
            "evaluation": evaluated * config["seq_len"], "cost": 1.0 if config.get("cost") else 0.0,
            "saving": 1.0 if config.get("output") else 0.0}


def sampled_tokens(config: dict, calibration: str, evaluation: str) -> int:
    """Tokens a run samples from the model: its calibration and evaluation windows when their source is 'self'."""
    tokens = config["calib_samples"] * config["seq_len"] if calibration == "self" else 0
    return tokens + ((config.get("eval_windows") or 0) * config["seq_len"] if evaluation == "self" else 0)


@dataclass(frozen=True)
class Measured:
    """A run measured on this kind of machine: its setting, parameter count, phase seconds and work."""

    method: str
    allocation: str
    ratio: float
    params: int
    seconds: dict
    work: dict
    model: str = ""

    @classmethod
    def of(cls, result: dict) -> Measured:
        config = result["config"] | {"refine": "on" if result.get("refine") else "off"}
        tokens = sampled_tokens(config, _source(result.get("calibration")), _source(result.get("evaluation")))
        return cls(result["method"], config.get("allocation", "auto"), result["ratio"], result["params_before"],
                   result.get("timings") or {}, work(config, tokens, loaded=(result.get("timings") or {}).get(
                       "loading", 0.0) < 0.5), config.get("model", ""))

    def rate(self, phase: str) -> float | None:
        """Seconds per unit of work per parameter, or None when this run did not do the phase."""
        seconds, done = self.seconds.get(phase, 0.0), self.work.get(phase, 0.0)
        return seconds / (done * self.params) if seconds >= MEASURABLE and done > 0 else None


def _source(part: dict | None) -> str:
    """'self' when the record's text was sampled from the model (its description says so)."""
    return "self" if str((part or {}).get("description", "")).startswith("self") else "data"


def prior(method: str, allocation: str, ratio: float, params: int, request: dict,
          measured: list[Measured], model: str = "") -> dict[str, float] | None:
    """Seconds per phase for a request whose `work` is `request`, or None without a measured run. A method's
    own phases come from the most alike run of that method; the phases any run tells about from a run of
    the same model first: per parameter, models differ (gallery: Gemma 3's evaluation 1.3x SmolLM2's, its large
    vocabulary; its compression 0.6x, its embedding, most of its parameters, never compressed)."""
    if not measured:
        return None
    alike = sorted(measured, key=lambda m: _likeness(m, method, allocation, ratio, model), reverse=True)
    same_model_first = sorted(alike, key=lambda m: m.model != model)
    out = {}
    for phase, amount in request.items():
        if phase == "allocation":
            rate = _allocation_rate(measured, allocation, method, model)
        elif phase in BORROWED:
            rate = next((r for m in same_model_first if (r := m.rate(phase)) is not None), None)
        else:
            rate = alike[0].rate(phase)
        if amount > 0 and rate is not None:
            out[phase] = rate * amount * params
    return out or None


def _allocation_rate(measured: list[Measured], allocation: str, method: str, model: str) -> float | None:
    """An allocation's search costs what that allocation costs (the same method's run first); an allocation
    no measured run used is left out of the estimate (refined when its phase ends)."""
    same = sorted((m for m in measured if m.allocation == allocation), key=lambda m: m.model != model)
    own = [m for m in same if m.method == method] or same     # a run of this very setting says it all, even 0 s
    return next((r for m in own if (r := m.rate("allocation")) is not None), None)


def for_plan(plan, measured: list[Measured], loaded: bool) -> dict[str, float] | None:
    """The prior of a checked Plan (refinement as the plan resolved it, sources as it decided them)."""
    config = plan.config.to_dict() | {"refine": "on" if plan.refine else "off"}
    if plan.params is None:
        return None
    request = work(config, sampled_tokens(config, plan.calibration, plan.evaluation), loaded)
    return prior(config["method"], config["allocation"], config["ratio"], plan.params, request, measured,
                 config["model"])


def _likeness(m: Measured, method: str, allocation: str, ratio: float, model: str) -> tuple:
    return (m.method == method, m.model == model, m.allocation == allocation, -abs(m.ratio - ratio))


def left(estimate: dict[str, float], finished: dict[str, float], elapsed_in_phase: float,
         pipeline_left: float | None = None) -> float:
    """Seconds still to go: the phases not finished, scaled by the finished ones' speed, less the time the
    current phase has already run (never below what the phases after it need). Compression and refinement
    run block by block together, so they count as one phase; `pipeline_left` (extrapolated from the
    projections done) replaces their estimate once the pipeline reports progress."""
    ahead = [p for p in PHASES if p in estimate and p not in finished]
    if not ahead:
        return 0.0
    factor = speed(estimate, finished)
    current = [ahead[0]] + (["refinement"] if ahead[0] == "compression" and "refinement" in ahead else [])
    now = sum(estimate[p] for p in current) * factor
    if pipeline_left is not None and ahead[0] in PIPELINE:
        now, elapsed_in_phase = pipeline_left, 0.0
    return sum(estimate[p] for p in ahead if p not in current) * factor + max(now - elapsed_in_phase, 0.0)


def speed(estimate: dict[str, float], finished: dict[str, float]) -> float:
    """Measured over estimated time of the finished phases that tell the machine's speed (1 before any)."""
    compared = [p for p in finished if p in estimate and p not in UNSCALED]
    expected = sum(estimate[p] for p in compared)
    if expected < 1.0:
        return 1.0
    low, high = SPEED_BOUNDS
    return min(max(sum(finished[p] for p in compared) / expected, low), high)


def total(estimate: dict[str, float]) -> float:
    return sum(estimate.values())
