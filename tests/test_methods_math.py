"""Each method's math on random matrices, without a model."""
import pytest
import torch

from svd_explorer.compress.allocation.depth import default_block_count
from svd_explorer.compress.linalg import captured_ratio, truncate, weighted_error, whiten, whitened_fit
from svd_explorer.compress.methods import REGISTRY, Budget, get_method, list_methods
from svd_explorer.compress.methods.aa_svd import anchored_fit
from svd_explorer.compress.methods.fwsvd import fisher_weighted_fit
from svd_explorer.compress.methods.ressvd import two_stage_fit
from svd_explorer.compress.methods.saes_svd import (
    exact_captured,
    objective_parts,
    surrogate_candidates,
    surrogate_tail,
    surrogate_terms,
)
from svd_explorer.compress.refine import lr_multiplier
from svd_explorer.compress.stats import Accumulator

M, N, T = 20, 24, 300


def streams(seed=0, drift=0.3):
    """Original inputs X_f and 'compressed' inputs X_c = X_f + drift * noise, as row-major [T, n]."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -1.5, N, dtype=torch.float64)
    x_f = torch.randn(T, N, generator=g, dtype=torch.float64) * scales
    x_c = x_f + drift * torch.randn(T, N, generator=g, dtype=torch.float64) * scales
    return x_f.float(), x_c.float()


def stats_of(x_f, x_c, want=frozenset({"f", "c", "x", "absmean"})):
    acc = Accumulator(want)
    acc.add(x_f, x_c)
    return acc.finish()


def weight(seed=1):
    return torch.randn(M, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_accumulator_matches_direct_products_and_batches_add_up():
    x_f, x_c = streams()
    whole = stats_of(x_f, x_c)
    acc = Accumulator(frozenset({"f", "c", "x", "absmean"}))
    for i in range(0, T, 70):
        acc.add(x_f[i:i + 70], x_c[i:i + 70])
    parts = acc.finish()
    xf, xc = x_f.double(), x_c.double()
    assert torch.allclose(whole.gram_f, xf.T @ xf / T, rtol=1e-5)
    assert torch.allclose(whole.cross, xf.T @ xc / T, rtol=1e-5)   # X_f X_cᵀ in column notation
    for a, b in ((whole.gram_c, parts.gram_c), (whole.cross, parts.cross), (whole.absmean, parts.absmean)):
        assert torch.allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_returns_factors_of_the_budgeted_rank(name):
    x_f, x_c = streams()
    method = get_method(name)
    method.importance = {"layer": torch.rand(N, dtype=torch.float64)}   # what fwsvd's prepare() would measure
    budget = method.split(8, M, N)
    fit = method.fit(weight(), stats_of(x_f, x_c), budget, "layer")
    rank = fit.up.shape[1] + (fit.residual[0].shape[1] if fit.residual else 0)
    assert fit.up.shape[0] == M and fit.down.shape[1] == N and rank == 8
    assert torch.linalg.matrix_rank(fit.dense()).item() <= 8
    assert fit.spectrum.ndim == 1 and fit.truncated


def test_data_aware_methods_beat_plain_svd_on_their_inputs():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    err = {name: weighted_error(w, get_method(name).fit(w, stats, Budget(6), "l").dense(), stats.gram_f)
           for name in ("svd", "asvd", "svd-llm")}
    assert err["svd-llm"] < err["asvd"] < err["svd"]


def test_cealc_with_zero_coefficient_is_whitening_on_the_compressed_stream():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    saes = get_method("saes-svd", beta=0.0).fit(w, stats, Budget(6), "l")
    local = get_method("svd-llm", stream="compressed").fit(w, stats, Budget(6), "l")
    assert torch.allclose(saes.dense(), local.dense(), atol=1e-8)


def test_cealc_with_full_coefficient_is_the_anchored_fit():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    saes = get_method("saes-svd", beta=1.0).fit(w, stats, Budget(6), "l")
    assert torch.allclose(saes.dense(), anchored_fit(w, stats, 6, "l").dense(), atol=1e-8)


def test_with_identical_streams_the_anchored_solution_is_whitening():
    x_f, _ = streams()
    stats = stats_of(x_f, x_f)
    w = weight()
    anchored = get_method("aa-svd", init="anchored").fit(w, stats, Budget(6), "l")
    white = get_method("svd-llm").fit(w, stats, Budget(6), "l")
    assert torch.allclose(anchored.dense(), white.dense(), atol=1e-8)


def test_anchored_fit_is_optimal_for_its_objective():
    """No random rank-k perturbation of the closed form does better on ‖W'X_c − W X_f‖."""
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    fit = anchored_fit(w, stats, 6, "l").dense()
    xf, xc = x_f.double().T, x_c.double().T

    def loss(wp):
        return (wp @ xc - w @ xf).pow(2).sum().item()

    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        t = truncate(fit + 0.01 * torch.randn(M, N, generator=g, dtype=torch.float64), 6)
        assert loss(fit) <= loss(t.left @ t.right) + 1e-9


def test_surrogate_terms_match_the_explicit_projections():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    s, d = objective_parts(weight(), stats, whiten(stats.gram_c))
    k = 5
    u, _, vh = torch.linalg.svd(s)
    pl = torch.eye(M, dtype=torch.float64) - u[:, :k] @ u[:, :k].T
    pr = torch.eye(N, dtype=torch.float64) - vh[:k].T @ vh[:k]
    sp, dp = pl @ s @ pr, pl @ d @ pr
    terms = surrogate_terms(s, d, k)
    expected = {"a": (sp * sp).sum(), "b": (sp * dp).sum(), "c": (dp * dp).sum(), "A": (s * s).sum(),
                "B": (s * d).sum(), "C": (d * d).sum()}
    for key, value in expected.items():
        assert terms[key] == pytest.approx(value.item(), rel=1e-4, abs=1e-8), key
    # the surrogate is exact at β = 0, where the subspace is S's own
    assert 1 - surrogate_tail(terms, 0.0) == pytest.approx(captured_ratio(torch.linalg.svdvals(s), k), rel=1e-5)


def test_surrogate_candidates_contain_the_ends_and_only_interior_stationary_points():
    terms = {"a": 1.0, "b": -0.5, "c": 2.0, "A": 10.0, "B": 1.0, "C": 3.0}
    cands = surrogate_candidates(terms, 0.25, 0.75)
    assert cands[:2] == [0.25, 0.75] and all(0.25 <= c <= 0.75 for c in cands)
    grid = [0.25 + i * 0.005 for i in range(101)]
    best_grid = min(surrogate_tail(terms, b) for b in grid)
    assert min(surrogate_tail(terms, c) for c in cands) <= best_grid + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_aces_never_captures_less_than_the_fixed_coefficient(seed):
    x_f, x_c = streams(seed, drift=0.6)
    stats = stats_of(x_f, x_c)
    w = weight(seed + 10)
    for k in (3, 8):
        fit = get_method("saes-svd").fit(w, stats, Budget(k), "l")
        aces = fit.extra["aces"]
        assert 0.25 <= aces["beta"] <= 0.75
        s, d = objective_parts(w, stats, whiten(stats.gram_c))
        fixed = exact_captured(s, d, 0.5, k)
        assert exact_captured(s, d, aces["beta"], k) >= fixed - 1e-9


def test_exact_aces_search_stays_in_the_interval_and_records_every_point():
    x_f, x_c = streams()
    fit = get_method("saes-svd", aces="exact").fit(weight(), stats_of(x_f, x_c), Budget(5), "l")
    points = fit.extra["aces"]["points"]
    assert len(points) > 9 and all(0.25 <= b <= 0.75 for b, _ in points)
    assert fit.extra["aces"]["captured"] == pytest.approx(max(v for _, v in points), rel=1e-9)


def test_ressvd_without_residual_equals_its_first_term():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    for order in ("whitened-first", "plain-first"):
        off = get_method("ressvd", residual=False, order=order).fit(w, stats, Budget(7), "l")
        first = two_stage_fit(w, whiten(stats.gram_f), 7, 0, order, "l")
        assert off.residual is None and torch.allclose(off.dense(), first.dense())
    assert torch.allclose(get_method("ressvd", residual=False, order="plain-first").fit(w, stats, Budget(7), "l")
                          .dense(), (lambda t: t.left @ t.right)(truncate(w, 7)))


def test_same_weighting_in_both_stages_changes_nothing():
    """The fact that forces ResSVD's stages to use different metrics (ALGORITHMS.md §7)."""
    w = weight()
    first = truncate(w, 4)
    second = truncate(w - first.left @ first.right, 3)
    one_shot = truncate(w, 7)
    assert torch.allclose(first.left @ first.right + second.left @ second.right, one_shot.left @ one_shot.right,
                          atol=1e-8)


def test_ressvd_two_stages_keep_the_budget_and_differ_from_one_shot():
    x_f, x_c = streams()
    stats = stats_of(x_f, x_c)
    w = weight()
    fit = get_method("ressvd").fit(w, stats, Budget(8, 2), "l")
    assert fit.up.shape[1] == 6 and fit.residual[0].shape[1] == 2
    one_shot = whitened_fit(w, whiten(stats.gram_f), 8)
    assert not torch.allclose(fit.dense(), one_shot.left @ one_shot.right)


def test_default_number_of_last_blocks():
    assert default_block_count(30, 0.2) == 8     # 30 * 0.2 / 8 = 0.75 <= 0.8
    assert default_block_count(30, 0.4) == 15
    assert default_block_count(3, 0.9) == 3


def test_refinement_schedule_warms_up_then_decays_to_the_floor():
    total = 200
    lrs = [lr_multiplier(s, total) for s in range(total)]
    assert lrs[0] < lrs[19] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_method_options_are_checked():
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")
    with pytest.raises(ValueError, match="no option"):
        get_method("svd", alpha=1)
    with pytest.raises(ValueError, match="must be one of"):
        get_method("svd-llm", stream="sideways")
    with pytest.raises(ValueError, match="beta_min"):
        get_method("saes-svd", beta_min=0.8, beta_max=0.2)
    assert get_method("erc-svd").name == "ressvd"
    assert all(get_method(name).name == name for name in REGISTRY)


def test_aces_guard_replaces_a_surrogate_pick_that_captures_less(monkeypatch):
    """Seed 2, k=3: the captured share rises with β, so a pick of 0.25 is worse than the midpoint."""
    import svd_explorer.compress.methods.saes_svd as saes

    x_f, x_c = streams(2, drift=0.6)
    stats = stats_of(x_f, x_c)
    w = weight(12)
    monkeypatch.setattr(saes, "surrogate_candidates", lambda terms, lo, hi: [lo])
    aces = get_method("saes-svd").fit(w, stats, Budget(3), "l").extra["aces"]
    assert aces["surrogate_pick"] == 0.25 and aces["guard"] is True and aces["beta"] == 0.5
    assert aces["exact_at_midpoint"] > aces["exact_at_pick"]


def test_fisher_weighting_minimises_the_row_weighted_error():
    """FWSVD keeps the input channels the loss depends on: its fit beats plain SVD on ‖(W − W') diag(√f)‖, and no
    random rank-k perturbation does better on that objective."""
    w = weight()
    f = torch.logspace(0, -3, N, dtype=torch.float64)[torch.randperm(N, generator=torch.Generator().manual_seed(4))]
    fit = fisher_weighted_fit(w, f, 6, "l").dense()
    plain = (lambda t: t.left @ t.right)(truncate(w, 6))

    def loss(wp):
        return ((w - wp) * f.sqrt()).pow(2).sum().item()

    assert loss(fit) < loss(plain)
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        t = truncate(fit + 0.01 * torch.randn(M, N, generator=g, dtype=torch.float64), 6)
        assert loss(fit) <= loss(t.left @ t.right) + 1e-9


def test_fisher_importance_is_the_squared_gradient_per_input_channel():
    from conftest import tiny_ids, tiny_model

    from svd_explorer.compress.methods.fwsvd import input_channel_fisher
    from svd_explorer.model.blocks import find_layout

    model = tiny_model("llama")
    layout = find_layout(model)
    ids = tiny_ids(3, 12)
    fisher = input_channel_fisher(model, layout.projections[:2], ids)
    name = layout.projections[0].name
    param = model.get_submodule(name).weight
    expected = torch.zeros(param.shape[1], dtype=torch.float64)
    for row in ids:
        model.zero_grad()
        param.requires_grad_(True)
        logits = model(input_ids=row[None]).logits[:, :-1]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), row[None, 1:].flatten()).backward()
        expected += param.grad.double().pow(2).sum(0)
        param.requires_grad_(False)
    assert torch.allclose(fisher[name], expected, rtol=1e-4) and not param.requires_grad


@pytest.mark.parametrize("name", list_methods())
def test_truncated_spectrum_is_what_the_fit_truncates(name):
    """The `loss` allocation reads each method's truncated spectrum: it must be the spectrum its fit reports
    when both streams agree (the original-stream statistics the allocation has)."""
    from svd_explorer.compress.stats import Statistics

    x_f, _ = streams()
    full = stats_of(x_f, x_f)
    stats = Statistics.original_only(full.tokens, full.gram_f, full.absmean)
    method = get_method(name, **({"aces": "off"} if name == "saes-svd" else {}))
    method.importance = {"l": torch.rand(N, dtype=torch.float64)}
    w = weight()
    fit = method.fit(w, stats, method.split(8, M, N), "l")
    assert torch.allclose(method.truncated_spectrum(w, stats, "l"), fit.spectrum, rtol=1e-6)


def test_first_order_scores_are_the_papers_formula_without_inverting_the_transform():
    """ZS-SVD scores −σ_i u_iᵀ (G T⁻ᵀ) v_i for A = W T; dropping u_i u_iᵀ W from W changes a loss linear in W by
    exactly our score, for a whitening T as for a diagonal scale."""
    from svd_explorer.compress.gradients import dropped_component_scores
    g = torch.Generator().manual_seed(0)
    w, grad = torch.randn(9, 6, generator=g, dtype=torch.float64), torch.randn(9, 6, generator=g, dtype=torch.float64)
    for t in (torch.randn(6, 6, generator=g, dtype=torch.float64) + 4 * torch.eye(6, dtype=torch.float64),
              torch.diag(torch.rand(6, generator=g, dtype=torch.float64) + 0.5)):
        u, sigma, vh = torch.linalg.svd(w @ t, full_matrices=False)
        paper = -sigma * torch.einsum("mi,mn,ni->i", u, grad @ torch.linalg.inv(t).T, vh.T)
        ours = dropped_component_scores(w, u, grad)
        assert torch.allclose(ours, paper)
        component = u[:, :1] @ (u[:, :1].T @ w)
        assert torch.isclose(-(grad * component).sum(), ours[0])
