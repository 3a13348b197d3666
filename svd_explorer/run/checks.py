"""Everything about a RunConfig that can be checked without the model: values, choices, text sources,
tasks, device, offload and output folder (plan.py adds what needs the model's config: the budget).

One ConfigError per problem, naming the setting and the bad value: the CLI prints it in one line, the
app beside the control, and nothing has been loaded or computed yet.
"""
from __future__ import annotations

import math

from ..compress.quantize import SCHEMES
from ..compress.refine import PARAMS
from ..errors import ConfigError
from ..model.devices import resolve_device, resolve_dtype
from ..model.lowrank import BudgetError, check_ratio
from ..model.offload import MODES, prepare_offload_folder
from ..model.saving import SAVE_DTYPES, check_output_folder
from ..text.sources import DataError, check_source
from ..text.zero_shot import TaskError, resolve
from .config import PRECISIONS, PRESETS, REFINE_CHOICES, RunConfig

POSITIVE = ("calib_samples", "batch_size", "refine_batch", "search_windows")
MAX_SEARCH_WINDOWS = 32   # a search scores every candidate on each; --score kl keeps 50 MB of distributions per window


def check_config(config: RunConfig) -> None:
    _numbers(config)
    _choices(config)
    built(config.build_method)
    _sources(config)
    _tasks(config)
    _placement(config)
    _output(config)


def built(make):
    """make(), with a bad method or allocation name or option as a ConfigError."""
    try:
        return make()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _numbers(c: RunConfig) -> None:
    try:
        check_ratio(c.ratio)
    except BudgetError as err:
        raise ConfigError(str(err), "ratio") from None
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
    for name, value, allowed in (("refine", c.refine, REFINE_CHOICES), ("precision", c.precision, PRECISIONS),
                                 ("refine_params", c.refine_params, PARAMS), ("save_dtype", c.save_dtype, SAVE_DTYPES),
                                 ("preset", c.preset, PRESETS), ("quantize", c.quantize, SCHEMES)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _sources(c: RunConfig) -> None:
    try:
        check_source(c.calib, "train")
        for source in (c.eval_source, *c.extra_eval):
            check_source(source, "test")
    except DataError as err:
        raise ConfigError(str(err)) from None
    if c.calib == "none":
        raise ConfigError("calibration text cannot be none")
    if "none" in c.extra_eval:
        raise ConfigError("extra_eval lists texts to score; none is not one (leave it out)")
    if c.extra_eval and c.eval_windows == 0:
        raise ConfigError("extra_eval reads as many windows as eval_windows, which is 0: give eval_windows > 0")


def _tasks(c: RunConfig) -> None:
    if c.tasks:
        try:
            resolve(list(c.tasks), c.task_data)
        except TaskError as err:
            raise ConfigError(str(err)) from None


def _placement(c: RunConfig) -> None:
    device = resolve_device(c.device)
    resolve_dtype(c.dtype, device)
    if c.offload not in MODES:
        raise ConfigError(f"offload must be one of {', '.join(MODES)}, got {c.offload!r}")
    if c.offload == "disk":
        prepare_offload_folder(c.offload_folder)


def _output(c: RunConfig) -> None:
    if c.output:
        check_output_folder(c.output, c.model, c.force)
