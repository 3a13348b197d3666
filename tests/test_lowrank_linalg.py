"""The rank budget, the factorised layer and the robust linear algebra, on random matrices."""
import pytest
import torch

from svd_explorer.compress.linalg import (
    DecompositionError,
    captured_ratio,
    singular_values,
    svd_by_gram,
    truncate,
    weighted_error,
    whiten,
    whitened_fit,
)
from svd_explorer.model.lowrank import BudgetError, LowRankLinear, break_even_rank, check_ratio, rank_for_ratio


def correlated_inputs(n=24, tokens=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=g, dtype=torch.float64) * torch.logspace(0, -2, n, dtype=torch.float64)
    return mix @ torch.randn(n, tokens, generator=g, dtype=torch.float64)  # X: [n, T], strongly anisotropic


def test_rank_budget_definition():
    assert break_even_rank(576, 576) == 288
    assert rank_for_ratio(576, 576, 0.2) == 230          # floor(0.8 * 288.0)
    assert rank_for_ratio(1536, 576, 0.2) == 335         # floor(0.8 * 418.9)
    k = rank_for_ratio(1536, 576, 0.4)
    assert k * (1536 + 576) <= 0.6 * 1536 * 576 < (k + 1) * (1536 + 576)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_out_of_range(ratio):
    with pytest.raises(BudgetError, match="strictly between 0 and 1"):
        check_ratio(ratio)


def test_ratio_leaving_rank_zero_names_the_limit():
    with pytest.raises(BudgetError, match="leaves rank 0 for tiny .*largest ratio"):
        rank_for_ratio(4, 4, 0.6, "tiny")


def test_lowrank_linear_matches_its_dense_weight_and_saves_parameters():
    up, down, bias = torch.randn(12, 3), torch.randn(3, 20), torch.randn(12)
    res = (torch.randn(12, 2), torch.randn(2, 20))
    layer = LowRankLinear.from_factors(up, down, bias, residual=res)
    x = torch.randn(5, 20)
    dense = up @ down + res[0] @ res[1]
    assert torch.allclose(layer(x), x @ dense.T + bias, atol=1e-5)
    assert torch.allclose(layer.dense_weight(), dense, atol=1e-6)
    assert sum(p.numel() for p in layer.parameters()) == 5 * (12 + 20) + 12 < 12 * 20 + 12


def test_whitening_paths_are_recorded_and_exact():
    x = correlated_inputs()
    g = x @ x.T
    w = whiten(g)
    assert w.path == "cholesky" and w.jitter == 0
    assert torch.allclose(w.factor @ w.factor.T, g, rtol=1e-9, atol=1e-9)
    singular = torch.zeros(6, 6, dtype=torch.float64)
    singular[:3, :3] = torch.eye(3, dtype=torch.float64)
    jittered = whiten(singular)
    assert jittered.path == "cholesky+jitter" and jittered.jitter > 0


def test_eigen_fallback_satisfies_the_factor_identity(monkeypatch):
    x = correlated_inputs()
    g = x @ x.T
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda a: (a, torch.tensor(1)))  # every Cholesky fails
    w = whiten(g)
    assert w.path == "eigh"
    assert torch.allclose(w.factor @ w.factor.T, g, rtol=1e-7, atol=1e-7)
    m = torch.randn(5, g.shape[0], dtype=torch.float64)
    assert torch.allclose(w.unwhiten(w.times(m)), m, atol=1e-6)
    assert torch.allclose(w.solve_transposed(m) @ w.factor.T, m, atol=1e-6)


def test_failed_whitening_is_loud_and_named():
    with pytest.raises(DecompositionError, match="q_proj.*never received"):
        whiten(torch.zeros(4, 4), "q_proj")
    with pytest.raises(DecompositionError, match="non-finite"):
        whiten(torch.full((3, 3), float("nan")), "k_proj")


def test_whitening_beats_plain_svd_on_the_weighted_error():
    x = correlated_inputs()
    g = x @ x.T
    w = torch.randn(16, 24, dtype=torch.float64)
    k = 6
    plain = truncate(w, k)
    white = whitened_fit(w, whiten(g), k)
    e_plain = weighted_error(w, plain.left @ plain.right, g)
    e_white = weighted_error(w, white.left @ white.right, g)
    assert e_white < e_plain
    # and whitening is exactly optimal: the truncated singular values of W S are the loss
    tail = white.spectrum[k:].pow(2).sum().sqrt() / white.spectrum.pow(2).sum().sqrt()
    assert e_white == pytest.approx(tail.item(), rel=1e-6)


def test_error_shrinks_as_rank_grows():
    x = correlated_inputs()
    g = x @ x.T
    w = torch.randn(16, 24, dtype=torch.float64)
    errors = [weighted_error(w, (lambda t: t.left @ t.right)(whitened_fit(w, whiten(g), k)), g) for k in range(1, 16)]
    assert all(a > b for a, b in zip(errors, errors[1:]))


def test_spectrum_helpers():
    w = torch.randn(20, 50, dtype=torch.float64)
    assert torch.allclose(singular_values(w), torch.linalg.svdvals(w), rtol=1e-8)
    assert torch.allclose(singular_values(w.T), torch.linalg.svdvals(w), rtol=1e-8)
    s = torch.tensor([3.0, 2.0, 1.0])
    assert captured_ratio(s, 1) == pytest.approx(9 / 14)


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (16, 16)])
def test_svd_from_the_gram_matrix_agrees_with_lapack(shape):
    torch.manual_seed(0)
    m = torch.randn(*shape, dtype=torch.float64) * torch.logspace(0, -4, shape[1], dtype=torch.float64)
    u, s, vh = svd_by_gram(m)
    reference = torch.linalg.svd(m, full_matrices=False)
    assert torch.allclose(s, reference.S, rtol=0, atol=1e-12 * float(reference.S[0]))
    assert torch.allclose((u * s) @ vh, m, atol=1e-10)
    for k in (1, min(shape) // 2):
        best = (reference.U[:, :k] * reference.S[:k]) @ reference.Vh[:k]
        assert torch.allclose((u[:, :k] * s[:k]) @ vh[:k], best, atol=1e-10)
