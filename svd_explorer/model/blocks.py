"""A model's decoder blocks and their compressible projections: from the architecture table, or discovered.

Only shapes are read from the model, so a layout can be found on a model built on the meta device
(nothing downloaded but the config) or on one whose blocks are offloaded; what runs to discover an
unlisted family is a tiny CPU copy built from the config (discovery.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..errors import UnsupportedModelError
from .architectures import ARCHITECTURES
from .discovery import Discovery, discover
from .lowrank import dense_weight_and_bias, is_projection


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

    @property
    def rank_cost(self) -> int:
        """Parameters one unit of rank costs: a column of `up` and a row of `down`."""
        return self.out_features + self.in_features


@dataclass
class Layout:
    blocks_path: str
    blocks: nn.ModuleList
    groups: tuple[tuple[str, ...], ...]
    projections: list[Projection] = field(default_factory=list)   # the dense, compressible ones
    source: str = "table"  # "table", "traced" or "static" (see discovery.py)
    factorised: list[str] = field(default_factory=list)  # projections that are low-rank already
    left_dense: dict[str, str] = field(default_factory=dict)   # projections left dense on purpose -> why

    def block_projections(self, index: int) -> list[Projection]:
        return [p for p in self.projections if p.block == index]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def dense_params(self) -> int:
        return sum(p.dense_params for p in self.projections)


def count_parameters(model: nn.Module) -> int:
    """Whole-model parameter count; tied tensors are counted once."""
    return sum(p.numel() for p in model.parameters())


def meta_model(config) -> nn.Module:
    """The architecture on the meta device: shapes and parameter counts, no memory, no download. A config
    transformers cannot build a causal LM from is refused in one line."""
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception as err:  # noqa: BLE001 - from_config fails in many ways on a config it cannot use
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UnsupportedModelError(f"{getattr(config, 'model_type', 'this model')}: transformers cannot build a "
                                    f"causal LM from its config ({type(err).__name__}: {first})") from err


def find_layout(model: nn.Module) -> Layout:
    """Decoder blocks and their compressible projections: from the table, else discovered on a tiny copy."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ARCHITECTURES:
        return _table_layout(model, model_type)
    return _discovered_layout(model, model_type)


def _table_layout(model: nn.Module, model_type: str) -> Layout:
    path, groups = ARCHITECTURES[model_type]
    try:
        blocks = model.get_submodule(path)
    except AttributeError as err:
        raise UnsupportedModelError(f"{model_type}: expected the decoder blocks at {path!r}, not found") from err
    layout = Layout(path, blocks, tuple(tuple(g) for g in groups), source="table")
    for b, block in enumerate(blocks):
        for g, group in enumerate(layout.groups):
            for local in group:
                _add_projection(layout, model_type, b, block, g, local)
    return layout


def _discovered_layout(model: nn.Module, model_type) -> Layout:
    """The layout discovery.py finds; each block holds only its own groups (hybrid families mix kinds)."""
    found = _discovered(model)
    layout = Layout(found.path, model.get_submodule(found.path), merged_groups(found.groups), source=found.source)
    for b, block in enumerate(layout.blocks):
        for group in found.groups[b]:
            for local in group:
                _add_projection(layout, model_type, b, block, layout.groups.index(group), local)
        layout.left_dense.update({f"{found.path}.{b}.{n}": why for n, why in found.left_dense.get(b, {}).items()})
    if not layout.projections and not layout.factorised:
        raise UnsupportedModelError(f"{model_type}: its blocks hold no projection to compress"
                                    f"{_why(layout.left_dense)}")
    return layout


def _discovered(model: nn.Module) -> Discovery:
    """discover(), remembered per class and config: plan, engine and pipeline all ask for the same model."""
    try:
        key = (type(model), model.config.to_json_string())
    except Exception:  # noqa: BLE001 - a config that cannot be written is not remembered
        return discover(model)
    if key in _DISCOVERED:
        return _DISCOVERED[key]
    found = discover(model)
    if found.source == "traced":   # a static layout is a stopgap until the weights are there to run
        if len(_DISCOVERED) >= 8:
            _DISCOVERED.pop(next(iter(_DISCOVERED)))
        _DISCOVERED[key] = found
    return found


_DISCOVERED: dict = {}


def merged_groups(per_block) -> tuple[tuple[str, ...], ...]:
    """One list of groups for all blocks (hybrid families mix kinds of block), each block's order kept."""
    merged: list[tuple[str, ...]] = []
    for groups in per_block:
        at = 0
        for group in groups:
            if group in merged:
                at = merged.index(group) + 1
            else:
                merged.insert(at, group)
                at += 1
    return tuple(merged)


def _why(dense: dict[str, str]) -> str:
    """The reasons projections were left dense, for the one-line refusal."""
    reasons = sorted(set(dense.values()))
    return f" (the nn.Linear layers it has: {'; '.join(reasons)})" if reasons else " (no nn.Linear or Conv1D)"


def _add_projection(layout: Layout, model_type, b: int, block: nn.Module, g: int, local: str) -> None:
    try:
        module = block.get_submodule(local)
    except AttributeError as err:
        raise UnsupportedModelError(f"{model_type}: block {b} has no projection {local!r}") from err
    name = f"{layout.blocks_path}.{b}.{local}"
    if not is_projection(module):  # already factorised (a model saved by this project)
        layout.factorised.append(name)
        return
    w, bias = dense_weight_and_bias(module)
    layout.projections.append(Projection(name, b, local, g, w.shape[0], w.shape[1], bias is not None))
