"""Exact rank choice under a parameter budget: a multiple-choice knapsack solved as an integer program.

Every projection offers a few candidates (a rank and its parameter cost, or dense) with a predicted
damage each; exactly one candidate per projection is taken, the parameters kept stay within the budget,
and the summed damage is the smallest possible (LEMS reads allocation the same way, ICML 2026). A
threshold search (ASVD's) instead bounds the worst projection's damage; the two differ when damage is
spread unevenly. Solved by scipy's HiGHS branch and bound: a few hundred projections × a dozen candidates
take well under a second. What the paper is silent on here: damage is summed (log-perplexity increases
of projections compressed alone are taken as additive).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ...model.lowrank import BudgetError

SECONDS = 30.0      # HiGHS time limit; the best solution found by then is used (it says whether it is proven)


@dataclass(frozen=True)
class Candidate:
    rank: int | None        # None: left dense
    params: int             # parameters kept with this candidate
    damage: float           # predicted harm (e.g. log(ppl / dense ppl) of this projection compressed alone)


def solve(candidates: dict[str, list[Candidate]], budget: int) -> tuple[dict[str, int | None], dict]:
    """One candidate per projection, total params ≤ budget, least summed damage: (ranks, {damage, proven})."""
    cheapest = sum(min(c.params for c in row) for row in candidates.values())
    if cheapest > budget:
        raise BudgetError(f"even the smallest candidate of every projection keeps {cheapest} parameters, more "
                          f"than the {budget} the ratio allows; offer smaller ranks")
    limit = budget
    for _ in range(3):      # HiGHS's integrality tolerance may round a choice a few parameters over: tighten
        chosen, found = _solve(candidates, limit)
        over = sum(c.params for c in chosen.values()) - budget
        if over <= 0:
            return {name: c.rank for name, c in chosen.items()}, found
        limit -= over
    raise BudgetError("the integer program's rounded solution stays over the budget")


def _solve(candidates: dict[str, list[Candidate]], budget: int) -> tuple[dict[str, Candidate], dict]:
    names = list(candidates)
    flat = [(i, c) for i, name in enumerate(names) for c in candidates[name]]
    one_each = np.zeros((len(names), len(flat)))
    for j, (i, _) in enumerate(flat):
        one_each[i, j] = 1.0
    kept = np.array([[float(c.params) for _, c in flat]])
    result = milp(np.array([c.damage for _, c in flat]), integrality=np.ones(len(flat)), bounds=Bounds(0, 1),
                  constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(kept, 0, budget)],
                  options={"time_limit": SECONDS})
    if result.x is None:
        raise BudgetError(f"the integer program found no allocation within the budget ({result.message})")
    chosen = {names[i]: c for (i, c), x in zip(flat, result.x) if x > 0.5}
    return chosen, {"damage": float(result.fun), "proven": bool(result.status == 0)}
