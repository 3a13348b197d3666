"""Loads a folder saved by SVD Explorer with transformers alone (`trust_remote_code=True`).

This file is copied into every saved folder and needs only torch, safetensors and transformers, so a user
without SVD Explorer can run

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

The folder's config.json is the base model's config with `model_type` "svd_explorer" (which plain
transformers refuses, so the factors are never loaded as a dense model with random projections), the
base model type, and `low_rank`: every factorised projection's shape and ranks. Loading builds the base
architecture, swaps those projections for a pair of thin linears (`up @ down`, plus a residual pair when
one was kept) and fills every tensor from model.safetensors; a missing or unexpected tensor is an error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import cached_file

OWN_FIELDS = ("base_model_type", "low_rank", "auto_map", "architectures")


class SVDExplorerConfig(PretrainedConfig):
    model_type = "svd_explorer"

    def __init__(self, base_model_type: str = "llama", low_rank: dict | None = None, **kwargs):
        self.base_model_type = base_model_type
        self.low_rank = low_rank or {}
        super().__init__(**kwargs)

    def base_config(self) -> PretrainedConfig:
        """The config of the model that was compressed, as its own transformers class."""
        values = {k: v for k, v in self.to_dict().items() if k not in OWN_FIELDS and k != "model_type"}
        return CONFIG_MAPPING[self.base_model_type].from_dict(values)


class LowRankLinear(nn.Module):
    """y = up(down(x)) + b (+ res_up(res_down(x))): the factors SVD Explorer kept for one projection."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False, residual_rank: int = 0,
                 dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.residual_rank = rank, residual_rank
        self.down = nn.Parameter(torch.zeros(rank, in_features, dtype=dtype))
        self.up = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None
        self.res_down = nn.Parameter(torch.zeros(residual_rank, in_features, dtype=dtype)) if residual_rank else None
        self.res_up = nn.Parameter(torch.zeros(out_features, residual_rank, dtype=dtype)) if residual_rank else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(F.linear(x, self.down), self.up, self.bias)
        if self.res_down is not None:
            y = y + F.linear(F.linear(x, self.res_down), self.res_up)
        return y


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


class SVDExplorerForCausalLM(PreTrainedModel):
    """Only a door: from_pretrained returns the base architecture's own class with the factors in place,
    so generate(), the KV cache and everything else behave as for the original model."""

    config_class = SVDExplorerConfig

    @classmethod
    def from_pretrained(cls, path, *args, config: SVDExplorerConfig | None = None, dtype=None, torch_dtype=None,
                        **kwargs):
        config = config if isinstance(config, SVDExplorerConfig) else SVDExplorerConfig.from_pretrained(path)
        dtype = dtype or torch_dtype or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        dtype = torch.float32 if dtype == "auto" else dtype
        model = AutoModelForCausalLM.from_config(config.base_config(), dtype=dtype)
        for name, spec in config.low_rank.items():
            _replace(model, name, LowRankLinear(spec["in_features"], spec["out_features"], spec["rank"],
                                                spec["bias"], spec["residual_rank"], dtype=dtype))
        state = load_file(cached_file(str(path), "model.safetensors", **_hub_options(kwargs)))
        missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
        missing = [k for k in missing if k not in _tied(model)]
        if missing or unexpected:
            raise ValueError(f"{path}: model.safetensors does not match the config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        model.tie_weights()
        return model.eval()


def _tied(model: nn.Module) -> set[str]:
    """Parameter names that share their tensor with another (the LM head tied to the embedding)."""
    seen, tied = {}, set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.data_ptr() in seen:
            tied.add(name)
        seen.setdefault(param.data_ptr(), name)
    return tied


def _hub_options(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
