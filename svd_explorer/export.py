"""Save and load compressed models: safetensors + config + tokenizer + a JSON manifest.

The manifest lists every factorised projection with its shape and ranks, so loading rebuilds the
architecture from the base config, swaps those projections for LowRankLinear modules and loads
the tensors. It also records where the model came from and how it was compressed (method, ratio,
options, calibration and seed, package versions), which is what reproducing a run needs.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model

from .lowrank import LowRankLinear, set_submodule
from .models import MANIFEST, LoadedModel, ModelLoadError, _prepare, count_parameters

FORMAT = "svd-explorer/1"
WEIGHTS = "model.safetensors"


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


def save_compressed(model, tokenizer, folder, info: dict | None = None) -> Path:
    """Write the compressed model to `folder`; `info` (method, ratio, sources...) goes into the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS), metadata={"format": FORMAT})
    manifest = {"format": FORMAT, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "params": count_parameters(model), "modules": factorised_modules(model), "versions": versions(),
                **(info or {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is missing or not valid JSON: {err}") from err
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not an SVD Explorer manifest (format {manifest.get('format')!r})")
    return manifest


def load_compressed(folder) -> torch.nn.Module:
    """The compressed model saved in `folder`, identical to the one that was saved."""
    return load_compressed_with_tokenizer(folder).model


def load_compressed_with_tokenizer(folder) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.initialization import no_init_weights

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not (folder / WEIGHTS).exists():
        raise ModelLoadError(f"{folder} has a manifest but no {WEIGHTS}")
    config = AutoConfig.from_pretrained(folder)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # before loading: safetensors stores tied tensors (embeddings / LM head) once
    for name, spec in manifest["modules"].items():
        set_submodule(model, name, LowRankLinear(spec["in_features"], spec["out_features"], spec["rank"],
                                                 spec["bias"], spec["residual_rank"]))
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not _tied_to_loaded(model, m, state)]
    if missing or unexpected:
        raise ModelLoadError(f"{folder}: the weights do not match the manifest (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _prepare(model, tokenizer)
    base = manifest.get("base", {})
    description = (f"{base.get('source', 'model')} compressed with {manifest.get('method', '?')} at ratio "
                   f"{manifest.get('ratio', '?')} (loaded from {folder})")
    return LoadedModel(model, tokenizer, str(folder), description, base.get("revision"), manifest)


def _tied_to_loaded(model, name: str, state: dict) -> bool:
    """Whether tensor `name` is the very same parameter as one that was loaded."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return name in params and any(params[name] is p for n, p in params.items() if n in state)
