"""Robust linear algebra shared by every method: whitening factors and truncated SVDs.

Everything here runs in float64. A failed decomposition is never replaced by random or zero
factors: whitening climbs a ladder (Cholesky, Cholesky with growing diagonal jitter, symmetric
eigendecomposition) and records which rung it used, so the app can show it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import decompositions

JITTER_START = 1e-6   # first jitter, relative to mean(diag G)
JITTER_STEPS = 6      # 1e-6 ... 1e-1 (x10 each), then the eigendecomposition fallback
EIG_FLOOR = 1e-10     # eigenvalues are clamped at max(e) * EIG_FLOOR


class DecompositionError(RuntimeError):
    """A whitening or SVD that could not be computed; the message names the layer."""


@dataclass
class Whitener:
    """S with S Sᵀ = G (+ jitter); lower triangular unless the eigen fallback was used."""

    factor: torch.Tensor
    path: str            # "cholesky", "cholesky+jitter" or "eigh"
    jitter: float = 0.0  # absolute λ added to the diagonal
    eigvals: torch.Tensor | None = None  # only for the eigh path: S = Q diag(sqrt(e))
    eigvecs: torch.Tensor | None = None

    def times(self, m: torch.Tensor) -> torch.Tensor:
        """M S."""
        return m @ self.factor

    def solve_transposed(self, m: torch.Tensor) -> torch.Tensor:
        """M S⁻ᵀ, without forming an inverse."""
        if self.eigvals is None:
            return torch.linalg.solve_triangular(self.factor.mT, m, upper=True, left=False)
        return (m @ self.eigvecs) / self.eigvals.sqrt()

    def unwhiten(self, b: torch.Tensor) -> torch.Tensor:
        """B S⁻¹: maps right factors found in the whitened space back to input space."""
        if self.eigvals is None:
            return torch.linalg.solve_triangular(self.factor, b, upper=False, left=False)
        return (b / self.eigvals.sqrt()) @ self.eigvecs.mT

    def describe(self) -> dict:
        return {"path": self.path, "jitter": self.jitter}


def whiten(gram: torch.Tensor, name: str = "layer") -> Whitener:
    """Factor a Gram matrix robustly (see module docstring)."""
    g = gram.double()
    g = 0.5 * (g + g.mT)
    if not torch.isfinite(g).all():
        raise DecompositionError(f"{name}: the input Gram matrix has non-finite entries (inputs overflowed?)")
    scale = g.diagonal().mean().item()
    if not scale > 0:
        raise DecompositionError(f"{name}: the input Gram matrix is zero: this layer never received a non-zero input")
    factor, info = torch.linalg.cholesky_ex(g)
    if info.item() == 0:
        return Whitener(factor, "cholesky")
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    lam = JITTER_START * scale
    for _ in range(JITTER_STEPS):
        factor, info = torch.linalg.cholesky_ex(g + lam * eye)
        if info.item() == 0:
            return Whitener(factor, "cholesky+jitter", lam)
        lam *= 10
    e, q = torch.linalg.eigh(g)
    top = e.max().item()
    if not top > 0:
        raise DecompositionError(f"{name}: the input Gram matrix has no positive eigenvalue")
    e = e.clamp_min(top * EIG_FLOOR)
    return Whitener(q * e.sqrt(), "eigh", 0.0, eigvals=e, eigvecs=q)


@dataclass
class Truncation:
    """Top-k factors of a matrix M ≈ A B with √σ on each side, and M's full spectrum."""

    left: torch.Tensor    # A: [m, k]
    right: torch.Tensor   # B: [k, n]
    spectrum: torch.Tensor  # all singular values of M, descending


def truncate(m: torch.Tensor, k: int, name: str = "layer", reuse: bool = True) -> Truncation:
    """Best rank-k approximation of M (Eckart-Young), factors split as U√Σ and √Σ Vᵀ. With `reuse`, an SVD
    stored by an earlier run (decompositions.py) is read back instead of recomputed, when one is active."""
    m = m.double()
    if not torch.isfinite(m).all():
        raise DecompositionError(f"{name}: the matrix to truncate has non-finite entries")
    store = decompositions.active() if reuse else None
    u, s, vh = store.svd(m, k, lambda x: _svd(x, name)) if store is not None else _svd(m, name)
    root = s[:k].sqrt()
    return Truncation(u[:, :k] * root, root[:, None] * vh[:k], s)


def _svd(m: torch.Tensor, name: str):
    try:
        return torch.linalg.svd(m, full_matrices=False)
    except RuntimeError as err:  # LAPACK did not converge
        raise DecompositionError(f"{name}: SVD failed ({err})") from err


def svd_by_gram(m: torch.Tensor):
    """Thin SVD (U, S, Vh) of M from the eigendecomposition of its smaller Gram matrix.

    3-5x cheaper than LAPACK's SVD on a CPU for the MLP's rectangular shapes (the same for square ones). In
    float64 the singular values agree with LAPACK's to about 1e-15 of the largest; a vector whose value is
    below about 1e-8 of the largest loses its accuracy, which a candidate kept at a useful rank never reads.
    Used for the sensitivity search's candidates (one SVD per projection), not for the compression."""
    wide, a = m.shape[0] <= m.shape[1], _wide(m)
    try:
        values, vectors = torch.linalg.eigh(a @ a.mT)
    except RuntimeError as err:  # LAPACK did not converge: the same one-line error as _svd's
        raise DecompositionError(f"SVD from the Gram matrix failed ({err})") from err
    s, u = values.flip(0).clamp_min(0).sqrt(), vectors.flip(1)
    other = (u.mT @ a) / s.clamp_min(torch.finfo(s.dtype).tiny)[:, None]
    return (u, s, other) if wide else (other.mT, s, u.mT)


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """All singular values of W, descending, from the eigenvalues of its smaller Gram matrix.

    Several times cheaper than an SVD; accurate in float64 down to about 1e-8 of the largest
    value, which is all a spectrum plot needs."""
    a = _wide(w.double())
    return torch.linalg.eigvalsh(a @ a.mT).flip(0).clamp_min(0).sqrt()


def _wide(m: torch.Tensor) -> torch.Tensor:
    """M or Mᵀ, whichever has fewer rows: its Gram A Aᵀ is the smaller one."""
    return m if m.shape[0] <= m.shape[1] else m.mT


def captured_ratio(spectrum: torch.Tensor, k: int) -> float:
    """Share of ‖M‖_F² that the top-k singular values hold."""
    energy = spectrum.double().pow(2)
    total = energy.sum().item()
    return energy[:k].sum().item() / total if total > 0 else 1.0


def tail_ratio(spectrum: torch.Tensor, k: int) -> float:
    """‖M − M_k‖_F / ‖M‖_F from M's singular values: the relative error a rank-k truncation leaves."""
    energy = spectrum.double().pow(2)
    total = energy.sum().item()
    return (energy[k:].sum().item() / total) ** 0.5 if total > 0 else 0.0


def weighted_error(w: torch.Tensor, w_hat: torch.Tensor, gram: torch.Tensor) -> float:
    """‖(W − W')X‖_F / ‖W X‖_F computed from the Gram matrix G = X Xᵀ."""
    w = w.double()
    e = w - w_hat.double()
    num = ((e @ gram) * e).sum().item()
    den = ((w @ gram) * w).sum().item()
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0


def whitened_fit(weight: torch.Tensor, whitener: Whitener, k: int, cross: torch.Tensor | None = None,
                 name: str = "layer", reuse: bool = True) -> Truncation:
    """Best rank-k W' for  min ‖W' X − T‖_F  given the input Gram G = X Xᵀ = S Sᵀ.

    `cross` describes the target through T Xᵀ = W @ cross; None means T = W X (cross = G), which
    is SVD-LLM's truncation-aware whitening: truncate M = W S. Otherwise M = W cross S⁻ᵀ. Why:
    Q = S⁻¹X has orthonormal rows, the part of T outside the row space of X is out of reach of
    any W', and the loss is ‖W' S − M‖² + const, minimised by the truncated SVD of M. The
    returned right factor is mapped back (· S⁻¹), so W' = left @ right.
    """
    w = weight.double()
    m = whitener.times(w) if cross is None else whitener.solve_transposed(w @ cross.double())
    t = truncate(m, k, name, reuse)
    return Truncation(t.left, whitener.unwhiten(t.right), t.spectrum)
