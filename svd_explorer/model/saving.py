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
import shutil
from pathlib import Path

import torch

from ..errors import ConfigError
from ..files import save_atomically
from .blocks import count_parameters
from .card import model_card
from .lowrank import LowRankLinear
from .offload import cpu_tensors
from .saved_folder import FORMAT, MANIFEST, MERGED_INFO, PORTABLE_TYPE, WEIGHTS

MODELING_FILE = "modeling_svd_explorer.py"   # copied into every factor folder: transformers alone loads it

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
    folder = _prepared(model, tokenizer, folder)
    (folder / "config.json").write_text(json.dumps(portable_config(model), indent=2, sort_keys=True) + "\n")
    shutil.copyfile(Path(__file__).with_name(MODELING_FILE), folder / MODELING_FILE)
    tensors = saved_tensors(model, dtype)
    save_atomically(tensors, folder / WEIGHTS, metadata={"format": FORMAT})
    stored = dtype or str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    (folder / MANIFEST).write_text(json.dumps(build_manifest(model, info, stored), indent=2))
    (folder / "README.md").write_text(model_card(info or {}, "factors"))
    return folder


def save_merged(model, tokenizer, folder, info: dict | None = None, dtype: str | None = None) -> Path:
    """A standard dense checkpoint of the compressed model: every factor pair multiplied back into a weight.
    Any transformers user loads it with no extra file; it has the quality of the factors and none of their
    savings. Provenance goes to the model card and svd_explorer.json (no manifest: it is not a factor folder)."""
    folder = _prepared(model, tokenizer, folder)
    model.config.save_pretrained(folder)
    save_atomically(merged_tensors(model, dtype), folder / WEIGHTS, metadata={"format": "pt"})
    (folder / MERGED_INFO).write_text(json.dumps(build_manifest(model, info, dtype or "float32"), indent=2))
    (folder / "README.md").write_text(model_card(info or {}, "merged"))
    return folder


def _prepared(model, tokenizer, folder) -> Path:
    """The folder, created, with what both layouts share: the generation config and the tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def portable_config(model) -> dict:
    """The base config with model_type svd_explorer: transformers loads it only through the modeling file
    copied beside it (trust_remote_code), never as the base model with random projections."""
    data = model.config.to_dict()
    data.update(base_model_type=model.config.model_type, model_type=PORTABLE_TYPE,
                low_rank=factorised_modules(model), architectures=["SVDExplorerForCausalLM"],
                auto_map={"AutoConfig": "modeling_svd_explorer.SVDExplorerConfig",
                          "AutoModelForCausalLM": "modeling_svd_explorer.SVDExplorerForCausalLM"})
    return data


def saved_tensors(model, dtype: str | None) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once (a tied LM head is stored as the embedding), cast to `dtype`."""
    kept = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v.contiguous() for k, v in cpu_tensors(model, SAVE_DTYPES.get(dtype)) if k in kept}


def merged_tensors(model, dtype: str | None) -> dict[str, torch.Tensor]:
    """saved_tensors with each factorised projection's factors replaced by its dense weight (and bias)."""
    tensors = saved_tensors(model, "float32")
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            for part in ("down", "up", "res_down", "res_up"):
                tensors.pop(f"{name}.{part}", None)
            tensors[f"{name}.weight"] = module.dense_weight().detach().float().cpu()
    cast = SAVE_DTYPES.get(dtype)
    return {k: (v.to(cast) if cast and v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
