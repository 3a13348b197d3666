"""Weight-only quantisation through torchao, as a stage after compression or alone (the baseline with no SVD).

Only the decoder blocks' linears are quantised (the projections, dense or factorised); embeddings, norms
and the LM head stay as they are, as in the usual weight-only recipes. A factorised projection is split
into its two thin linears first, so torchao quantises each factor like any linear. Schemes:

- `int8`: torchao's Int8WeightOnlyConfig (one scale per output row).
- `int4`: torchao's IntxWeightOnlyConfig with int4 values in groups of 32 (a scale and zero point per
  group; one per row for a factor whose rank is no multiple of 32). torchao 0.18 has no CPU kernel for
  packed int4 without its optional `mslk` package, so this path keeps each 4-bit value in an int8 and
  dequantises per call: it has int4's quality, but int8's memory and a slower forward than dense on a
  CPU. Its `bytes` say what it really holds.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import ConfigError
from ..model.blocks import find_layout
from ..model.lowrank import LowRankLinear, set_submodule

SCHEMES = ("none", "int8", "int4")
INT4_GROUP = 32


class FactorPair(nn.Sequential):
    """A LowRankLinear as two nn.Linear (down, then up with the bias): what torchao knows how to quantise."""

    def __init__(self, layer: LowRankLinear):
        down = nn.Linear(layer.in_features, layer.rank + layer.residual_rank, bias=False)
        up = nn.Linear(layer.rank + layer.residual_rank, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            down.weight.copy_(_stacked(layer.down, layer.res_down, dim=0))
            up.weight.copy_(_stacked(layer.up, layer.res_up, dim=1))
            if layer.bias is not None:
                up.bias.copy_(layer.bias)
        super().__init__(down.to(layer.down.dtype), up.to(layer.down.dtype))


def _stacked(main: torch.Tensor, residual: torch.Tensor | None, dim: int) -> torch.Tensor:
    """A residual pair joins the main pair as extra rank: up·down + res_up·res_down = [up res_up]·[down; res_down]."""
    return main if residual is None else torch.cat([main, residual], dim=dim)


def quantize(model: nn.Module, scheme: str) -> nn.Module:
    """Quantise `model`'s decoder-block linears in place ('none' leaves it as it is); returns the model."""
    if scheme not in SCHEMES:
        raise ConfigError(f"quantize must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if scheme == "none":
        return model
    logging.getLogger("torchao").setLevel(logging.ERROR)   # its optional GPU kernels failing to load is noise
    from torchao.quantization import quantize_  # heavy and optional: only a run that quantises loads it

    blocks = find_layout(model).blocks_path
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            set_submodule(model, name, FactorPair(module))
    for grouped in (True, False):
        quantize_(model, _config(scheme, grouped), filter_fn=lambda m, name, grouped=grouped: (
            isinstance(m, nn.Linear) and name.startswith(blocks + ".") and _groups(m) == grouped))
    return model


def _groups(linear: nn.Linear) -> bool:
    """int4 scales groups of 32 input columns; a factor whose rank is no multiple of 32 gets one scale a row."""
    return linear.in_features % INT4_GROUP == 0


def _config(scheme: str, grouped: bool):
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if scheme == "int8":
        return Int8WeightOnlyConfig()
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP) if grouped else PerAxis(0))
