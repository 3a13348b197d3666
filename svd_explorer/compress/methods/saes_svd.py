"""`saes-svd`: Self-Adaptive Error Suppression SVD (Hu et al., arXiv 2602.03051, ICLR 2026).

CEALC: for each projection, with weight α ≥ 0,
    min ‖(A B − W) X_c‖² + α ‖A B X_c − W X_f‖²,
local reconstruction on the inputs it really receives plus compensation of the error accumulated
upstream (aligning with the full-precision output). With β = α / (1 + α) this is
(1 + α) ‖A B X_c − T‖² + const with T X_cᵀ = W (H + β Δ), H = X_c X_cᵀ, Δ = (X_f − X_c) X_cᵀ,
so the closed form truncates M(β) = W (H + β Δ) R⁻ᵀ (H = R Rᵀ) and maps back with R⁻¹.

ACES picks β per projection to make the objective as low-rank as possible at the fixed rank k,
i.e. to maximise the captured share Σ_{i≤k} σ_i² / Σ σ_i² of M(β). The paper's rule (App. A.3,
Alg. 3): split M(β) = S + β D, take the top-k subspace of S once, score the tail energy ratio by
the fixed-subspace surrogate ρ̃(β) = (a + 2bβ + cβ²) / (A + 2Bβ + Cβ²), and pick the best of its
stationary points inside [β_min, β_max] = [0.25, 0.75] and the interval ends.
Our addition (a guard, recorded per projection): the surrogate is first-order, so the exact
captured share at the pick is compared with that at the interval midpoint and the better kept.
Options also offer an exact grid search, the "output ratio" reading of the objective, and a fixed β.
"""
from __future__ import annotations

import numpy as np
import torch

from ..linalg import captured_ratio, truncate
from .base import FigureTab, Fit, Method, Option
from .svd_llm import SVDLLM

GRID = 9             # grid points for the exact searches
GOLDEN_STEPS = 6     # golden-section refinements after the grid
CURVE_POINTS = 21    # β values on [0, 1] for the surrogate curve drawn in the app
GUARD_TOLERANCE = 1e-9  # the guard ignores differences in captured share below rounding level


def objective_parts(weight, stats, whitener):
    """S = W H R⁻ᵀ and D = W Δ R⁻ᵀ, so that M(β) = S + β D."""
    w = weight.double()
    h, cross = stats.gram_c, stats.cross
    s = whitener.solve_transposed(w @ h)
    d = whitener.solve_transposed(w @ (cross - h))
    return s, d


def surrogate_terms(s: torch.Tensor, d: torch.Tensor, k: int) -> dict[str, float]:
    """The six Frobenius products of the fixed-subspace surrogate (paper App. A.3).

    With U_k, V_k the top-k singular vectors of S and P_L = I − U_k U_kᵀ, P_R = I − V_k V_kᵀ:
    a = ‖P_L S P_R‖², b = ⟨P_L S P_R, P_L D P_R⟩, c = ‖P_L D P_R‖², A = ‖S‖², B = ⟨S, D⟩, C = ‖D‖².
    Since U_k, V_k are S's own singular vectors, P_L S P_R = S − S_k, so a is S's tail energy and
    b = B − Σ_i σ_i u_iᵀ D v_i; c follows by Pythagoras. No m x n projection is ever formed.
    The subspace comes from a float32 SVD: the surrogate is a first-order estimate anyway."""
    u, sig, vh = (t.double() for t in torch.linalg.svd(s.float(), full_matrices=False))
    uk, vk = u[:, :k], vh[:k].mT
    ud, dv = uk.mT @ d, d @ vk
    udv = ud @ vk
    energy = sig.pow(2)
    big_c = float((d * d).sum())
    big_b = float((s * d).sum())
    return {"a": float(energy[k:].sum()), "b": big_b - float((sig[:k] * udv.diagonal()).sum()),
            "c": big_c - float((ud * ud).sum()) - float((dv * dv).sum()) + float((udv * udv).sum()),
            "A": float(energy.sum()), "B": big_b, "C": big_c}


def surrogate_tail(t: dict[str, float], beta: float) -> float:
    """ρ̃(β): estimated share of ‖M(β)‖² that rank k cannot capture."""
    den = t["A"] + 2 * t["B"] * beta + t["C"] * beta * beta
    return (t["a"] + 2 * t["b"] * beta + t["c"] * beta * beta) / den if den > 0 else 1.0


def surrogate_candidates(t: dict[str, float], lo: float, hi: float) -> list[float]:
    """Interval ends and the real stationary points of ρ̃ inside the interval."""
    a, b, c, A, B, C = (t[x] for x in "abcABC")
    coeffs = [c * B - b * C, c * A - a * C, b * A - a * B]
    roots = np.roots(coeffs) if any(abs(x) > 0 for x in coeffs) else []
    inside = [float(r.real) for r in roots if abs(r.imag) < 1e-12 and lo <= r.real <= hi]
    return [lo, hi] + inside


def exact_captured(s, d, beta, k) -> float:
    return captured_ratio(torch.linalg.svdvals(s + beta * d), k)


def golden_search(score, lo: float, hi: float) -> tuple[float, list[tuple[float, float]]]:
    """Maximise score on [lo, hi]: a grid, then golden-section steps around the best point."""
    tried = [(b, score(b)) for b in np.linspace(lo, hi, GRID).tolist()]
    best = max(range(GRID), key=lambda i: tried[i][1])
    a, c = tried[max(best - 1, 0)][0], tried[min(best + 1, GRID - 1)][0]
    ratio = (5 ** 0.5 - 1) / 2
    for _ in range(GOLDEN_STEPS):
        x1, x2 = c - ratio * (c - a), a + ratio * (c - a)
        f1, f2 = score(x1), score(x2)
        tried += [(x1, f1), (x2, f2)]
        a, c = (a, x2) if f1 >= f2 else (x1, c)
    return max(tried, key=lambda p: p[1])[0], tried


def output_ratio(weight, stats, whitener, s, d, beta, k) -> float:
    """Reading (2): ‖W'X_c‖² over the whole objective value at the optimum for this β."""
    t = truncate(s + beta * d, k)
    w_hat = t.left @ whitener.unwhiten(t.right)
    w = weight.double()
    alpha = beta / (1 - beta) if beta < 1 else 1e12
    gc, gf, gx = stats.gram_c, stats.gram_f, stats.cross
    tr = lambda x, g, y: float(((x @ g) * y).sum())  # noqa: E731  tr(X G Yᵀ)
    out = tr(w_hat, gc, w_hat)
    local = tr(w_hat - w, gc, w_hat - w)
    anchor = out - 2 * tr(w_hat, gx.mT, w) + tr(w, gf, w)
    return out / max(local + alpha * anchor, 1e-300)


class SAESSVD(Method):
    name = "saes-svd"
    title = "SAES-SVD (CEALC + ACES)"
    paper = ("Hu et al., SAES-SVD: Self-Adaptive Suppression of Accumulated and Local Errors "
             "(ICLR 2026, arXiv 2602.03051)")
    summary = ("Mixes local reconstruction with compensation of the error accumulated upstream, choosing the "
               "mix per layer so the objective is as low-rank as possible.")
    color = "#9333ea"
    reimplemented = True
    figures = (FigureTab(
        "ACES search",
        "SAES-SVD fits each projection to a mix of two targets: its own output on the inputs it receives "
        "(β = 0) and the full-precision model's output (β → 1), which compensates the error accumulated "
        "upstream. ACES picks β per projection, inside [0.25, 0.75] by default, so that the target is as "
        "low-rank as possible: the share of its energy the kept rank captures is highest. The light curve is "
        "the paper's cheap estimate with a fixed subspace, dots are the candidates tried, the star the choice "
        "with its exact share. Right below: the chosen β through depth.",
        ("aces", "aces_depth"), "the ACES search exists for saes-svd runs"),)
    options = (
        Option("aces", "surrogate", "how β is chosen per projection: the paper's surrogate rule, an exact grid "
               "search of the captured share, a grid search of the output ratio (reading 2), or off (fixed β)",
               ("surrogate", "exact", "output", "off")),
        Option("beta", None, "fixed β = α/(1+α) in [0, 1]; given, it switches ACES off", bounds=(0.0, 1.0),
               kind=float, unset="ACES chooses β per projection"),
        Option("beta_min", 0.25, "lower end of the ACES interval for β (paper: 0.25)", bounds=(0.0, 0.99)),
        Option("beta_max", 0.75, "upper end of the ACES interval for β (paper: 0.75)", bounds=(0.0, 0.99)),
    )

    def validate(self):
        if not self.config["beta_min"] <= self.config["beta_max"]:
            raise ValueError("saes-svd: need beta_min <= beta_max")
        if self.config["beta"] is not None:  # a fixed β is the fixed-coefficient variant
            self.config["aces"] = "off"
        self.stats = frozenset({"c", "x", "f"} if self.config["aces"] == "output" else {"c", "x"})

    @property
    def fixed_beta(self) -> float:
        if self.config["beta"] is not None:
            return float(self.config["beta"])
        return 0.5 * (float(self.config["beta_min"]) + float(self.config["beta_max"]))

    def original_stream_form(self) -> Method:
        """CEALC with both streams equal is SVD-LLM's whitened truncation: share its sensitivity table."""
        return SVDLLM()

    def fit(self, weight, stats, budget, name):
        k = budget.rank
        whitener = stats.whitener("c", name)
        s, d = objective_parts(weight, stats, whitener)
        beta, search = self.choose_beta(weight, stats, whitener, s, d, k)
        t = truncate(s + beta * d, k, name)
        if search["mode"] == "surrogate":  # the guard: keep the midpoint if it captures more, exactly
            mid = self.fixed_beta
            search["exact_at_pick"] = captured_ratio(t.spectrum, k)
            search["exact_at_midpoint"] = exact_captured(s, d, mid, k)
            search["guard"] = search["exact_at_midpoint"] > search["exact_at_pick"] + GUARD_TOLERANCE
            if search["guard"]:
                beta, t = mid, truncate(s + mid * d, k, name)
        search.update(beta=beta, alpha=beta / (1 - beta) if beta < 1 else None, captured=captured_ratio(t.spectrum, k))
        return Fit(t.left, whitener.unwhiten(t.right), t.spectrum, "M(β) = W (H + βΔ) R⁻ᵀ",
                   whitening=whitener.describe(), extra={"aces": search})

    def choose_beta(self, weight, stats, whitener, s, d, k) -> tuple[float, dict]:
        mode = self.config["aces"]
        lo, hi = float(self.config["beta_min"]), float(self.config["beta_max"])
        if mode == "off":
            return self.fixed_beta, {"mode": "off"}
        if mode in ("exact", "output"):
            score = (lambda b: exact_captured(s, d, b, k)) if mode == "exact" else \
                (lambda b: output_ratio(weight, stats, whitener, s, d, b, k))
            beta, tried = golden_search(score, lo, hi)
            return beta, {"mode": mode, "interval": [lo, hi], "points": [[b, v] for b, v in tried]}
        terms = surrogate_terms(s, d, k)
        candidates = surrogate_candidates(terms, lo, hi)
        beta = min(candidates, key=lambda b: surrogate_tail(terms, b))
        return beta, {"mode": "surrogate", "interval": [lo, hi], "surrogate_pick": beta,
                      "points": [[b, 1 - surrogate_tail(terms, b)] for b in candidates],
                      "curve": [[float(b), 1 - surrogate_tail(terms, float(b))]
                                for b in np.linspace(0, 1, CURVE_POINTS)]}
