"""Writing a compressed model: safetensors + config + tokenizer + a JSON manifest (read back by loading.py).

The manifest lists every factorised projection with its shape and ranks, so loading can rebuild the
architecture from the base config; it also records the run that made it (its RunConfig, the
allocation, the calibration, package versions). It is built here and only here.
The factors are written in bfloat16 by default: halving a float32 file is what a user expects of a
"compressed" download. Parameters removed are not bytes saved when the original was quantised (the
embedded GGUF stores 4-bit weights), which the app says beside the sizes.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
from pathlib import Path

import torch

from ..errors import ConfigError
from ..files import save_atomically
from .blocks import count_parameters
from .lowrank import LowRankLinear
from .offload import cpu_tensors
from .saved_folder import FORMAT, MANIFEST, WEIGHTS

SAVE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def versions() -> dict[str, str]:
    out = {}
    for package in ("svd-explorer", "torch", "transformers", "safetensors"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "source" if package == "svd-explorer" else "missing"
    return out


def factorised_modules(model: torch.nn.Module) -> dict[str, dict]:
    return {name: {"in_features": m.in_features, "out_features": m.out_features, "rank": m.rank,
                   "residual_rank": m.residual_rank, "bias": m.bias is not None}
            for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def build_manifest(model: torch.nn.Module, info: dict | None = None, dtype: str = "float32") -> dict:
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"format": FORMAT, "created": created, "params": count_parameters(model), "dtype": dtype,
            "modules": factorised_modules(model), "versions": versions(), **(info or {})}


def check_output_folder(folder, input_source: str | None = None, force: bool = False) -> None:
    """Refuse to write into the folder the model was read from, or into a non-empty folder without force."""
    path = Path(folder).expanduser()
    if input_source and os.path.exists(input_source) and path.resolve() == Path(input_source).resolve():
        raise ConfigError(f"--output {folder} is the folder the model is read from; choose another folder")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {folder} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ConfigError(f"--output {folder} is not empty; choose an empty folder or add --force to overwrite")


def save_compressed(model, tokenizer, folder, info: dict | None = None, dtype: str | None = None) -> Path:
    """Write the compressed model to `folder`; `info` (the run's description) goes into the manifest.

    `dtype` (bfloat16, float16, float32) casts the floating-point tensors; None keeps them as they are."""
    if dtype is not None and dtype not in SAVE_DTYPES:
        raise ConfigError(f"save dtype must be one of {', '.join(SAVE_DTYPES)}, got {dtype!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    kept = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    tensors = {k: v.contiguous() for k, v in cpu_tensors(model, SAVE_DTYPES.get(dtype)) if k in kept}
    save_atomically(tensors, folder / WEIGHTS, metadata={"format": FORMAT})
    stored = dtype or str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    (folder / MANIFEST).write_text(json.dumps(build_manifest(model, info, stored), indent=2))
    return folder


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
