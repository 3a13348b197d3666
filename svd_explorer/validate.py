"""Everything about a RunConfig that can be checked before a model is loaded.

One ConfigError per problem, naming the setting and the bad value: the CLI prints it in one line, the
app beside the control, and nothing has been loaded or computed yet.
"""
from __future__ import annotations

import math

from .config import PRECISIONS, REFINE_CHOICES, RunConfig
from .errors import ConfigError

POSITIVE = ("calib_samples", "batch_size", "refine_batch", "search_windows")
MAX_SEARCH_WINDOWS = 32   # a search scores every candidate on each; --score kl keeps 50 MB of distributions per window


def validate_config(config: RunConfig, token=None) -> None:
    _numbers(config)
    _choices(config)
    method = _method(config)
    allocation = _allocation(config, method)
    _sources(config)
    _budget(config, method, allocation, token)
    _tasks(config)
    _placement(config)
    _output(config)


def _numbers(c: RunConfig) -> None:
    if not isinstance(c.ratio, (int, float)) or not 0 < c.ratio < 1 or math.isnan(c.ratio):
        raise ConfigError("ratio must be strictly between 0 and 1 (the fraction of parameters removed); "
                          f"got {c.ratio}", "ratio")
    for name in POSITIVE:
        _integer(name, getattr(c, name), 1)
    _integer("seq_len", c.seq_len, 2)
    _integer("refine_steps", c.refine_steps, 0)
    _integer("seed", c.seed, 0)
    _integer("dev_windows", c.dev_windows, 0)
    if c.search_windows > MAX_SEARCH_WINDOWS:
        raise ConfigError(f"search_windows must be at most {MAX_SEARCH_WINDOWS} (each is scored once per candidate "
                          f"projection), got {c.search_windows}")
    if c.eval_windows is not None:
        _integer("eval_windows", c.eval_windows, 0)
    if c.limit is not None:
        _integer("limit", c.limit, 1)
    if not isinstance(c.refine_lr, (int, float)) or not c.refine_lr > 0 or not math.isfinite(c.refine_lr):
        raise ConfigError(f"refine_lr must be a positive number, got {c.refine_lr}")


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")


def _choices(c: RunConfig) -> None:
    from .config import PRESETS
    from .refine import PARAMS
    from .saving import SAVE_DTYPES

    for name, value, allowed in (("refine", c.refine, REFINE_CHOICES), ("precision", c.precision, PRECISIONS),
                                 ("refine_params", c.refine_params, PARAMS), ("save_dtype", c.save_dtype, SAVE_DTYPES),
                                 ("preset", c.preset, PRESETS)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _method(c: RunConfig):
    try:
        return c.build_method()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _allocation(c: RunConfig, method):
    try:
        return c.build_allocation(method)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _budget(c: RunConfig, method, allocation, token=None) -> None:
    """The ranks the ratio leaves, from the model's config alone (a ratio leaving rank 0, a last-K rule that
    cannot meet it): allocations that decide from data are checked at their uniform starting point."""
    from .engine import budget_summary
    from .layout import count_parameters, find_layout, meta_model
    from .loading import is_project_folder, read_config, source_kind
    from .lowrank import BudgetError

    if source_kind(c.model) == "folder" and is_project_folder(c.model):
        return
    meta = meta_model(read_config(c.model, c.revision, token))
    try:
        budget_summary(find_layout(meta), count_parameters(meta), c.ratio, method, allocation)
    except BudgetError as err:
        raise ConfigError(str(err), "ratio") from None


def _sources(c: RunConfig) -> None:
    from .data import DataError, check_source

    try:
        check_source(c.calib, "train")
        for source in (c.eval_source, *c.extra_eval):
            check_source(source, "test")
    except DataError as err:
        raise ConfigError(str(err)) from None
    if c.calib == "none":
        raise ConfigError("calibration text cannot be none")


def _tasks(c: RunConfig) -> None:
    from .evaluation import TaskError, resolve

    if c.tasks:
        try:
            resolve(list(c.tasks), c.task_data)
        except TaskError as err:
            raise ConfigError(str(err)) from None


def _placement(c: RunConfig) -> None:
    from .devices import resolve_device, resolve_dtype
    from .offload import MODES, prepare_offload_folder

    device = resolve_device(c.device)
    resolve_dtype(c.dtype, device)
    if c.offload not in MODES:
        raise ConfigError(f"offload must be one of {', '.join(MODES)}, got {c.offload!r}")
    if c.offload == "disk":
        prepare_offload_folder(c.offload_folder)


def _output(c: RunConfig) -> None:
    from .saving import check_output_folder

    if c.output:
        check_output_folder(c.output, c.model, c.force)
