"""SVDs of original-stream matrices kept on disk, so that a sweep's other ratios reuse them.

svd, asvd, svd-llm, fwsvd and the first stage of ressvd truncate a matrix made of the weight and
original-stream statistics only (W, W diag(s), W S): it is the same at 10% and at 40%, and its float64
SVD is most of such a run's time once the statistics are cached. Each SVD is stored beside the cached
statistics, addressed by a digest of the matrix itself, so a changed weight, statistic or option can
never find a stale entry, and cut at the break-even rank (a rank beyond it saves nothing). The stored
float64 factors are the very numbers a fresh SVD gives: a run that reuses them makes the same weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from contextvars import ContextVar
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..files import save_atomically
from ..model.lowrank import break_even_rank

_ACTIVE: ContextVar["DecompositionStore | None"] = ContextVar("decompositions", default=None)


def digest(m: torch.Tensor) -> str:
    """A name for the exact contents of M (shape, dtype and every bit)."""
    data = m.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{tuple(data.shape)} {data.dtype}".encode(), digest_size=20)
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def kept_rank(rows: int, cols: int) -> int:
    """Columns stored: up to the break-even rank, where a factorised layer stops saving parameters."""
    return min(rows, cols, math.ceil(break_even_rank(rows, cols)))


class DecompositionStore:
    """One folder of `<digest>.safetensors` files holding U (transposed), all singular values and Vᵀ."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = self.misses = 0

    def svd(self, m: torch.Tensor, k: int, compute):
        """(U, S, Vh) of M with at least k columns: read back when stored, else compute(M) and store it."""
        name = digest(m)
        found = self._read(name, k, m.device)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        u, s, vh = compute(m)
        self._write(name, u, s, vh, kept_rank(*m.shape))
        return u, s, vh

    def describe(self) -> dict:
        return {"reused": self.hits, "computed": self.misses}

    def _read(self, name: str, k: int, device):
        path = self.folder / f"{name}.safetensors"
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                stored = {key: f.get_tensor(key) for key in ("ut", "s", "vh")}
                check = (f.metadata() or {}).get("check")
        except (OSError, SafetensorError, KeyError):
            return None               # absent or unreadable: computed again (and rewritten)
        if check != _check(stored) or stored["ut"].shape[0] < k:
            return None               # damaged, or stored up to break-even and this rank is beyond it
        return stored["ut"][:k].mT.to(device), stored["s"].to(device), stored["vh"][:k].to(device)

    def _write(self, name: str, u, s, vh, keep: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {"ut": u[:, :keep].mT.contiguous().cpu(), "s": s.contiguous().cpu(),
                   "vh": vh[:keep].contiguous().cpu()}
        save_atomically(tensors, self.folder / f"{name}.safetensors", metadata={"check": _check(tensors)})


def _check(tensors: dict) -> str:
    return "-".join(digest(tensors[key]) for key in ("ut", "s", "vh"))


def active() -> DecompositionStore | None:
    """The store the current run reuses decompositions from, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def reusing(store: DecompositionStore | None):
    """Within the block, `linalg.truncate` reads and writes SVDs through `store` (None: neither)."""
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


class LastDecomposition:
    """The SVD of the last matrix asked for, kept in memory: a sensitivity search cuts one projection's
    matrix at several ranks in a row, and one SVD serves them all (the same numbers as fresh ones).
    `decompose` (M -> U, S, Vh), when given, replaces the caller's SVD."""

    def __init__(self, decompose=None):
        self.matrix = self.factors = None
        self.hits = self.misses = 0
        self.decompose = decompose

    def svd(self, m: torch.Tensor, k: int, compute):
        if self.matrix is not None and self.matrix.shape == m.shape and torch.equal(self.matrix, m):
            self.hits += 1
            return self.factors
        self.misses += 1
        self.matrix, self.factors = m.clone(), (self.decompose or compute)(m)
        return self.factors

    def describe(self) -> dict:
        return {"reused": self.hits, "computed": self.misses}
