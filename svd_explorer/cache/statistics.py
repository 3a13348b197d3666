"""Original-stream statistics computed once per (model, calibration set) and kept on disk.

The statistics that only read the original model (every group's input Gram matrix, its channel
magnitudes, and every projection's raw singular values) are what svd, asvd, svd-llm, ressvd and
fwsvd need, and what every two-stream method sees in block 0's first group. One pass of the
original model computes them for all groups of all blocks; they are written as safetensors with a
manifest, keyed by model source and revision (a local model's file sizes and times), calibration
description and a digest of its tokens, samples, sequence length, seed, batch size, precision, dtype,
device and torch version (everything that changes their bits), and
reused by every such method at every ratio: a run from cached statistics gives exactly the same
compressed weights as one that computed them. A key mismatch, a truncated file or a checksum that
differs is detected and the statistics are recomputed, never used. An entry's folder also holds the
SVDs its runs stored (decompositions.py). Entries beyond $SVD_EXPLORER_STATS_CACHE_GB (default 10) are
deleted oldest first.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..compress.decompositions import digest
from ..compress.kept_stream import KeptStream
from ..compress.linalg import singular_values
from ..compress.pipeline import Passes, block_statistics, capture_calls, first_members, shell_copy
from ..compress.records import floats
from ..compress.stats import Statistics
from ..errors import ModelLoadError
from ..files import modified_time, save_atomically, write_atomically
from ..model.blocks import find_layout
from ..model.lowrank import dense_weight_and_bias
from ..model.offload import onloaded
from ..model.saved_folder import read_header

WANTED = frozenset({"f", "absmean"})
FILE = "statistics.safetensors"
MANIFEST = "manifest.json"


class OriginalStatistics:
    """Cached statistics, read one group at a time from their safetensors file."""

    def __init__(self, path: Path, tokens: int, spectra: dict, home: torch.device):
        self.path, self.tokens, self.spectra, self.home = path, tokens, spectra, home

    def get(self, block: int, group: int) -> Statistics:
        with safe_open(str(self.path), framework="pt", device="cpu") as f:
            gram = from_upper(f.get_tensor(f"{block}.{group}.gram_upper")).to(self.home)
            absmean = f.get_tensor(f"{block}.{group}.absmean").to(self.home)
        return Statistics(self.tokens, gram_f=gram, absmean=absmean)

    def raw_spectrum(self, name: str) -> list[float] | None:
        return self.spectra.get(name)


class MemoryStatistics(OriginalStatistics):
    """The same statistics held in memory (--no-stats-cache with an allocation that needs them)."""

    def __init__(self, tensors: dict, tokens: int, spectra: dict, home: torch.device):
        super().__init__(None, tokens, spectra, home)
        self.tensors = tensors

    def get(self, block: int, group: int) -> Statistics:
        return Statistics(self.tokens, gram_f=self.tensors[f"{block}.{group}.gram"].to(self.home),
                          absmean=self.tensors[f"{block}.{group}.absmean"].to(self.home))


def cached_columns(root, kind: str, key: dict, columns: list[float], compute) -> dict[str, dict[float, float]]:
    """A table {row: {column: value}} (a sensitivity table: projection x kept fraction) cached under `root`,
    keyed like the statistics; only the columns not stored yet are computed, by compute(missing), and
    merged in, so asking for another fraction later measures that fraction alone."""
    path = Path(root) / f"{kind}-{key_folder(Path(), key).name}.json"
    table = {}
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key)):
            table = {row: {float(c): v for c, v in values.items()} for row, values in stored["value"].items()}
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    have = set.intersection(*(set(values) for values in table.values())) if table else set()
    missing = [c for c in columns if c not in have]
    if missing:
        for row, values in compute(missing).items():
            table.setdefault(row, {}).update(values)
        stored = json.dumps({"key": key, "value": {row: {str(c): v for c, v in values.items()}
                                                   for row, values in table.items()}})
        write_atomically(path, lambda partial: partial.write_text(stored))
    return {row: {c: values[c] for c in columns} for row, values in table.items()}


def cached_tensors(root, kind: str, key: dict, compute) -> tuple[dict[str, torch.Tensor], str]:
    """({name: tensor}, "hit" or "computed"): model-level tensors a method measures once per calibration set
    (fwsvd's Fisher importances), kept under `root` as safetensors whose metadata holds the key and a digest
    of every tensor; another key, an unreadable file or a digest that differs means compute() again, and a
    hit holds the very numbers compute() gave."""
    path = Path(root) / f"{kind}-{key_folder(Path(), key).name}.safetensors"
    wanted = json.dumps(key, sort_keys=True)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            stored = {name: f.get_tensor(name) for name in f.keys()}
        if metadata.get("key") == wanted and metadata.get("check") == _tensors_check(stored):
            return stored, "hit"
    except (OSError, SafetensorError):
        pass
    tensors = compute()
    on_cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        save_atomically(on_cpu, path, metadata={"key": wanted, "check": _tensors_check(on_cpu)})
    except OSError as err:          # a full disk costs the next run a measurement, never this run its result
        return tensors, f"computed, not stored ({err.strerror or err})"
    return tensors, "computed"


def _tensors_check(tensors: dict) -> str:
    return " ".join(f"{name}:{digest(tensors[name])}" for name in sorted(tensors))


def cache_key(model_source: str, revision, calibration: str, tokens: str, samples: int, seq_len: int, seed: int,
              batch_size: int, passes: Passes) -> dict:
    """Everything that changes the statistics' bits. `tokens` is a digest of the calibration token ids, so a
    text file edited under the same name is measured again; a local model adds its files' names, sizes and
    modification times (hashing gigabytes of weights on every run would cost more than the pass it saves)."""
    return {"model": model_source, "revision": revision, "files": local_files(model_source),
            "calibration": calibration, "tokens": tokens, "samples": samples, "seq_len": seq_len, "seed": seed,
            "batch_size": batch_size, "precision": passes.precision, "dtype": str(passes.stream_dtype),
            "device": passes.device.type, "torch": torch.__version__, "storage": "gram upper triangle"} | (
        {} if passes.precision == "float32" else {"products": "float32"})   # earlier bfloat16 passes' were not


def local_files(source: str) -> list | None:
    """[name, bytes, mtime_ns] of a local model's file or of the files directly in its folder; None for a hub
    name or an embedded model."""
    path = Path(source)
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.is_file())
    return [[f.name, st.st_size, st.st_mtime_ns] for f, st in ((f, f.stat()) for f in files)]


def key_folder(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(root) / digest


def load_or_compute(root, key: dict, model, calib_ids, batch_size: int, precision: str, emit=None, check=None,
                    kept: KeptStream | None = None):
    """(OriginalStatistics, "hit" or "computed" or the reason it was recomputed); a computing pass leaves the
    original blocks' outputs in `kept`."""
    emit = emit or (lambda kind, data: None)
    folder = key_folder(root, key)
    reason = _unusable(folder, key)
    if reason is None:
        return _open(folder, Passes.of(model, precision).home), "hit"
    emit("status", f"statistics of the original model: computing them once ({reason})")
    tensors, spectra, tokens = collect(model, calib_ids, batch_size, precision, emit, check, kept)
    write(folder, key, tensors, spectra, tokens)
    evict(Path(root), keep=folder)
    return _open(folder, Passes.of(model, precision).home), "computed" if reason == "not cached yet" else \
        f"recomputed: {reason}"


def collect(model, calib_ids, batch_size: int, precision: str, emit=None, check=None, kept: KeptStream | None = None):
    """({"b.g.gram", "b.g.absmean": tensor}, {projection: raw spectrum}, tokens): one pass of the original model,
    whose block outputs go to `kept` for the pipeline to reuse."""
    emit, check = emit or (lambda kind, data: None), check or (lambda: None)
    passes = Passes.of(model, precision)
    work = shell_copy(model)
    layout = find_layout(work)
    with torch.no_grad():
        hidden, calls = capture_calls(work, layout.blocks, calib_ids, batch_size)
        stream = [h.to(passes.stream_dtype) for h in hidden]
        tensors, spectra = {}, {}
        for b in range(layout.num_blocks):
            emit("progress", {"block": b, "blocks": layout.num_blocks, "step": "statistics of the original model"})
            todo = layout.block_projections(b)
            with onloaded(layout.blocks[b]) as block:
                stats, stream = block_statistics(block, [c[b] for c in calls], stream, first_members(todo), WANTED,
                                                 passes.autocast, passes.home, check, passes.stream_dtype)
                if kept is not None:
                    kept.keep(stream)
                for p in todo:
                    weight = dense_weight_and_bias(block.get_submodule(p.local))[0].detach().to(passes.home)
                    spectra[p.name] = floats(singular_values(weight))
            for g, s in stats.items():
                tensors[f"{b}.{g}.gram"], tensors[f"{b}.{g}.absmean"] = s.gram_f.cpu(), s.absmean.cpu()
    tokens = int(calib_ids.numel())
    return tensors, spectra, tokens


def upper(gram: torch.Tensor) -> torch.Tensor:
    """The upper triangle of a symmetric matrix, row by row: half the bytes, every bit kept (row slices, so
    no index tensor of the matrix's size is built)."""
    return torch.cat([gram[i, i:] for i in range(gram.shape[0])])


def from_upper(values: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle `upper` gave."""
    n = int((math.isqrt(8 * values.numel() + 1) - 1) // 2)
    gram = torch.empty(n, n, dtype=values.dtype)
    start = 0
    for i in range(n):
        gram[i, i:] = values[start:start + n - i]
        gram[i:, i] = values[start:start + n - i]
        start += n - i
    return gram


def write(folder: Path, key: dict, tensors: dict, spectra: dict, tokens: int) -> None:
    """Gram matrices are stored as their upper triangles (they are symmetric): 770 → 390 MB for SmolLM2."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    save_atomically({f"{k}_upper" if k.endswith(".gram") else k: upper(v) if k.endswith(".gram") else v
                     for k, v in tensors.items()}, path)
    manifest = {"key": key, "tokens": tokens, "bytes": path.stat().st_size, "sha256": _sha256(path),
                "spectra": spectra, "created": time.time()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _unusable(folder: Path, key: dict) -> str | None:
    """Why the entry cannot be used, or None when it can."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "not cached yet"
    except (OSError, ValueError) as err:
        return f"its manifest is unreadable ({err})"
    if manifest.get("key") != key:
        different = sorted(k for k in key if manifest.get("key", {}).get(k) != key[k])
        return f"its key differs in {', '.join(different)}"
    path = folder / FILE
    try:
        read_header(path)
    except ModelLoadError as err:
        return f"the file is damaged ({err})"
    if path.stat().st_size != manifest.get("bytes") or _sha256(path) != manifest.get("sha256"):
        return "the file's checksum differs from its manifest"
    return None


def _open(folder: Path, home: torch.device) -> OriginalStatistics:
    manifest = json.loads((folder / MANIFEST).read_text())
    os.utime(folder)  # most recently used, for eviction
    return OriginalStatistics(folder / FILE, manifest["tokens"], manifest["spectra"], home)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def size_limit() -> float:
    """Bytes the cache may hold ($SVD_EXPLORER_STATS_CACHE_GB, default 10)."""
    return float(os.environ.get("SVD_EXPLORER_STATS_CACHE_GB", "10")) * 2**30


def evict(root: Path, keep: Path | None = None) -> None:
    """Delete the oldest entries until the cache holds at most size_limit(): statistics folders (with the
    decompositions and measurements stored beside them) and the tables kept at the root (sensitivity)."""
    entries = sorted((p for p in Path(root).iterdir() if (p.is_dir() and (p / MANIFEST).exists()) or
                      (p.is_file() and p.suffix == ".json")), key=modified_time)
    sizes = {entry: _entry_bytes(entry) for entry in entries}
    total = sum(sizes.values())
    for entry in entries:
        if total <= size_limit() or entry == keep:
            continue
        total -= sizes[entry]
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _entry_bytes(entry: Path) -> int:
    files = entry.rglob("*") if entry.is_dir() else [entry]
    total = 0
    for f in files:
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:        # another process removed it meanwhile
            pass
    return total
