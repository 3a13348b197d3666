"""`python -m svd_explorer sweep`: the flags of a sweep and the grid of RunConfigs they describe.

The sweep itself (Ray tasks, resumable folder, summary) is study/sweep.py; this file only reads flags.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..compress.allocation import ALLOCATIONS
from ..errors import ConfigError
from ..model.lowrank import BudgetError, check_ratio
from ..run.config import RunConfig, split_list
from ..run.plan import plan
from ..study import sweep as study
from .flags import add_evaluation, add_model, add_options, config_from_args, integer

SWEEP_FLAGS = ("methods", "allocations", "ratios", "seeds", "out", "address", "cpus_per_run", "gpus_per_run")


def add_sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="compare methods x allocations x ratios x seeds as Ray tasks (resumable)",
                       description=study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(s)
    add_evaluation(s)
    s.add_argument("--methods", required=True, type=split_list, help="comma-separated methods")
    s.add_argument("--allocations", type=split_list, default=["auto"], help="comma-separated allocations (auto)")
    s.add_argument("--refine", choices=("auto", "on", "off"), help="block refinement stage for every run")
    s.add_argument("--ratios", required=True, type=split_list, help="comma-separated ratios in (0, 1)")
    s.add_argument("--seeds", type=split_list, help="comma-separated calibration seeds (default: --seed, 0)")
    s.add_argument("--out", required=True, help="sweep folder: one JSON per run, summary.csv/.md, pareto.html")
    s.add_argument("--address", help="an existing Ray cluster: auto or ray://HOST:PORT (default: local Ray)")
    s.add_argument("--cpus-per-run", type=integer(1), help="CPUs per run (default: all of this machine's)")
    s.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per run (fractions share a GPU)")
    s.add_argument("--calib", help="calibration text (as for compress)")
    s.add_argument("--calib-samples", type=integer(1))
    s.add_argument("--batch-size", type=integer(1))
    s.add_argument("--precision", choices=("auto", "float32", "bfloat16"))
    s.add_argument("--stats-cache", help="folder of cached statistics")
    s.add_argument("--no-stats-cache", dest="stats_cache", action="store_const", const="off")
    add_options(s, ALLOCATIONS, "allocation options (each applies to the allocations that have it)", "alloc_")


def grid(args) -> list[RunConfig]:
    """Every configuration, validated before any task starts (the bad entry is named)."""
    base = config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in SWEEP_FLAGS},
                                               method=args.methods[0], ratio=0.5))
    configs = []
    for method in args.methods:
        for allocation in args.allocations:
            for ratio in (_ratio(r) for r in args.ratios):
                for seed in (_seed(s) for s in args.seeds or [str(base.seed)]):
                    options = study.options_of(allocation, base.allocation_options, method)
                    config = base.replace(method=method, allocation=allocation, ratio=ratio, seed=seed,
                                          allocation_options=options)
                    try:
                        plan(config)
                    except ConfigError as err:
                        raise ConfigError(f"{method} / {allocation} / ratio {ratio:g} / seed {seed}: {err}") from None
                    configs.append(config)
    _every_option_used(base.allocation_options, configs)
    return configs


def _every_option_used(options: dict, configs: list[RunConfig]) -> None:
    unused = set(options) - {name for c in configs for name in c.allocation_options}
    if unused:
        raise ConfigError(f"--{sorted(unused)[0].replace('_', '-')} applies to no allocation of this sweep")


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--ratios: {text!r} is not a number") from None
    try:
        return check_ratio(value)
    except BudgetError:
        raise ConfigError(f"--ratios: {text} is outside (0, 1)") from None


def _seed(text: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"--seeds: {text!r} is not a whole number >= 0")
    return int(text)


def main(args) -> int:
    return study.sweep(grid(args), Path(args.out), args.address, args.cpus_per_run, args.gpus_per_run)
