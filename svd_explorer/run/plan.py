"""Plan, then run: every check once, the model's config read once, every choice made before a weight loads.

`plan(config)` turns a RunConfig into a Plan: the method and allocation built, the refinement settings,
the device and dtype, the text sources resolved, and, from the model's config alone (a meta-device
model), its layout, parameter count, the budget the ratio leaves and where the weights will live.
`engine.run(plan)` executes it. The CLI, the app, the benchmarks and the sweeps all plan first, so a
bad value is one ConfigError before anything is loaded, and nothing is checked twice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..compress.allocation import Allocation
from ..compress.budget import budget_summary, embedding_counts
from ..compress.methods import Method
from ..compress.refine import RefineSettings
from ..errors import ConfigError
from ..model.blocks import Layout, count_parameters, find_layout, meta_model
from ..model.devices import resolve_device, resolve_dtype
from ..model.hub import source_kind
from ..model.loading import is_project_folder, read_config
from ..model.lowrank import BudgetError
from ..model.offload import Placement, choose_placement
from ..text.metrics import evaluation_bytes
from ..text.sources import resolve_calibration, resolve_evaluation
from . import checks
from .config import RunConfig


@dataclass
class Plan:
    """A checked run: what it will use, decided. `layout`, `meta` and `budget` are None for a folder this
    project saved (it is loaded whole: its projections are compressed already)."""

    config: RunConfig
    method: Method
    allocation: Allocation
    refine: RefineSettings | None
    device: torch.device
    dtype: torch.dtype
    calibration: str                  # the resolved calibration source ("auto" decided)
    evaluation: str                   # the resolved evaluation source
    placement: Placement
    model_config: object = None
    meta: nn.Module | None = None
    layout: Layout | None = None
    params: int | None = None
    budget: dict | None = None
    token: object = None

    @property
    def saved_folder(self) -> bool:
        return self.meta is None


def plan(config: RunConfig, token=None) -> Plan:
    """Check `config` and decide everything that needs no weight. `token` reads a hub model's config (False in
    public mode: never the Space's own)."""
    checks.check_config(config)
    method = checks.built(config.build_method)
    allocation = checks.built(lambda: config.build_allocation(method))
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    common = dict(config=config, method=method, allocation=allocation, refine=refine_settings(config, method),
                  device=device, dtype=dtype, calibration=resolve_calibration(config.calib),
                  evaluation=resolve_evaluation(config.eval_source), token=token)
    if source_kind(config.model) == "folder" and is_project_folder(config.model):
        return Plan(**common, placement=Placement("memory", str(device), 0, 0, "a compressed folder is loaded in "
                                                                                 "memory"))
    model_config = read_config(config.model, config.revision, token)
    meta = meta_model(model_config)
    layout, params = find_layout(meta), count_parameters(meta)
    try:
        budget = budget_summary(layout, params, config.ratio, method, allocation, embedding_counts(meta))
    except BudgetError as err:
        raise ConfigError(str(err), "ratio") from None
    placement = placement_of(config, model_config, layout, params, device, dtype)
    if placement.offloaded and config.quantize != "none":
        raise ConfigError("quantize needs the compressed model in memory; it does not combine with offloading")
    return Plan(**common, model_config=model_config, meta=meta, layout=layout, params=params, budget=budget,
                placement=placement)


def placement_of(config: RunConfig, model_config, layout: Layout, params: int, device, dtype) -> Placement:
    """In memory, offloaded or refused, from the shapes alone: the working set is the larger of the calibration
    activations (two streams) and the evaluation's logits, and a few hidden x hidden float32 matrices."""
    block_params = sum(p.numel() for p in layout.blocks[0].parameters())
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 1024)
    streams = 4 * 2 * config.calib_samples * config.seq_len * hidden
    logits = evaluation_bytes(config.seq_len, getattr(model_config, "vocab_size", None) or 32_000)
    work = max(streams, logits) + 8 * 3 * 4 * hidden * hidden
    size = torch.tensor([], dtype=dtype).element_size()
    return choose_placement(config.offload, device, params, block_params, size, work, config.offload_folder,
                            config.model)


def refine_settings(config: RunConfig, method) -> RefineSettings | None:
    if not config.refines(method) or config.refine_steps == 0:
        return None
    return RefineSettings(config.refine_steps, config.refine_lr, config.refine_batch, config.refine_params,
                          seed=config.seed)
