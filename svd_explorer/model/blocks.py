"""A model's decoder blocks and their compressible projections: from the architecture table, or traced.

Only shapes are read, so a layout can be found on a model built on the meta device (nothing
downloaded but the config) or on one whose blocks are offloaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..errors import UnsupportedModelError
from .architectures import ARCHITECTURES
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
    source: str = "table"  # "table" or "traced"
    factorised: list[str] = field(default_factory=list)  # projections that are low-rank already

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
    """The architecture on the meta device: shapes and parameter counts, no memory, no download."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


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
                _add_projection(layout, model_type, b, block, g, local)
    return layout


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
    missing = sorted(set(names.values()) - {n for n, _ in calls})
    if missing:
        raise UnsupportedModelError(
            f"{type(block).__name__}: projections {missing} did not run on a probe input "
            f"(mixture-of-experts routing is not supported)")
    return _shared_input_groups(calls)


def _shared_input_groups(calls: list[tuple[str, torch.Tensor]]) -> list[tuple[str, ...]]:
    groups: list[list[str]] = []
    last_input = None
    for name, x in calls:
        if groups and x is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = x
    return [tuple(g) for g in groups]
