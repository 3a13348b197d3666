"""Method comparison as a sweep: every (method, allocation, ratio, seed) a Ray task, resumable, with error bars.

    python -m svd_explorer sweep --methods svd-llm,ressvd --ratios 0.1,0.2 --seeds 0,1,2 --out runs/sweep

Ray is the engine: a local Ray starts in-process by default, `--address` joins an existing cluster
(the package must be installed on its workers; results come back to this process, which writes
them, so no shared file system is needed; statistics are cached on whichever node computes them).
Before the runs, one task per seed computes the original-stream statistics and times one forward of
the original model over the calibration set; every run that can reuse the statistics does (their
time is reported once), and a worker keeps the original model loaded for its next run of it. A task
that fails is retried once by Ray, then recorded as failed with its error; the others go on. Each run's
JSON is written as it finishes and a rerun of the same command skips what is done. A folder written by
another model or protocol is refused, naming the difference.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..compress.allocation import ALLOCATIONS
from ..compress.methods import method_class
from ..errors import ConfigError
from ..figures.plots import pareto_figure
from ..run.config import RunConfig
from ..run.engine import load_for, prepare_statistics, run
from ..run.plan import plan as plan_of
from .comparison import RESULTS, aggregate, csv_text, markdown, read_folder

PROTOCOL_FIELDS = ("model", "revision", "calib", "calib_samples", "seq_len", "eval_source", "eval_windows",
                   "extra_eval", "dev_windows", "search_windows", "batch_size", "precision", "device", "dtype",
                   "preset", "refine_steps", "refine_lr", "refine_batch", "refine_params", "quantize", "tasks",
                   "limit", "task_data")
ADDRESS_TIMEOUT = 3.0


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------

def options_of(allocation: str, options: dict, method: str) -> dict:
    """The allocation options the named allocation has (a sweep's flags apply to the allocations that have them);
    "auto" is the method's own allocation, whose options it takes as compress does."""
    name = method_class(method).default_allocation[0] if allocation == "auto" else allocation
    names = {o.name for o in ALLOCATIONS[name].options} if name in ALLOCATIONS else set()
    return {k: v for k, v in options.items() if k in names}


def run_name(config: RunConfig) -> str:
    options = "".join(f"_{k}{v}" for k, v in sorted(config.allocation_options.items()))
    return f"{config.method}-{config.allocation}{options}-refine_{config.refine}-r{config.ratio:g}-s{config.seed}"


def protocol(config: RunConfig) -> dict:
    data = config.to_dict()
    return {k: data[k] for k in PROTOCOL_FIELDS}


def check_folder(out: Path, configs: list[RunConfig]) -> None:
    """Create the folder, or refuse one written under another protocol (naming the difference)."""
    wanted = protocol(configs[0])
    path = out / "sweep.json"
    if path.exists():
        stored = json.loads(path.read_text())
        defaults = protocol(RunConfig())                # fields added since an older folder was written
        different = {k: (stored.get(k, defaults[k]), v) for k, v in wanted.items() if stored.get(k, defaults[k]) != v}
        if different:
            detail = "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in different.items())
            raise ConfigError(f"{out} was written by another sweep protocol: {detail}")
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def done(out: Path, config: RunConfig) -> bool:
    path = out / RESULTS / f"{run_name(config)}.json"
    try:
        return json.loads(path.read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------

def check_address(address: str | None) -> None:
    """A ray:// address must answer within a few seconds (a clear error instead of a long hang)."""
    if not address or address == "auto":
        return
    parsed = urlparse(address)
    if parsed.scheme != "ray" or not parsed.hostname:
        raise ConfigError(f"--address must be auto or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 10001), timeout=ADDRESS_TIMEOUT):
            pass
    except OSError as err:
        raise ConfigError(f"the Ray cluster at {address} cannot be reached ({err.strerror or err})") from None


def start_ray(address: str | None, cpus: int | None):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")   # a local, in-process Ray needs no token
    check_address(address)
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=cpus, **kwargs)
    except ConnectionError as err:
        raise ConfigError(f"no Ray cluster at {address}: {err}") from None
    return ray


_HELD: dict = {}


def held_model(plan):
    """The original model of `plan`, loaded once per worker process and kept for the worker's next task of the
    same model: a sweep's runs differ in method, allocation, ratio and seed, not in the model, so loading it
    (a minute for Gemma 3's dequantised file) and its scores on the fixed texts are paid once per worker, not
    once per run. One model is held; an offloaded or saved-folder model is loaded by each run as before."""
    if plan.placement.offloaded or plan.saved_folder:
        return None
    key = (plan.config.model, plan.config.revision, str(plan.dtype), str(plan.device))
    if key not in _HELD:
        _HELD.clear()
        _HELD[key] = load_for(plan)[0]
    return _HELD[key]


def _statistics_task(config_json: str) -> dict:
    """One seed's statistics pass (and the calibration-forward timing), on a Ray worker."""
    checked = plan_of(RunConfig.from_json(config_json))
    return prepare_statistics(checked, loaded=held_model(checked))


def _run_task(config_json: str, forward: float | None, attempts_file: str | None, threads: int | None) -> dict:
    """One run on a Ray worker: its RunRecord as a dictionary."""
    if threads:
        torch.set_num_threads(threads)
    if attempts_file:
        with open(attempts_file, "a") as f:
            f.write("attempt\n")
    checked = plan_of(RunConfig.from_json(config_json))
    record = run(checked, loaded=held_model(checked), measure_forward=False).record
    record.calib_forward_seconds = forward
    return record.to_dict() | {"status": "done"}


def sweep(configs: list[RunConfig], out: Path, address: str | None = None, cpus_per_run: int | None = None,
          gpus_per_run: float = 0.0) -> int:
    """Run what `out` does not hold yet of `configs` (each checked already), then write the summary."""
    check_folder(out, configs)
    todo = [c for c in configs if not done(out, c)]
    print(f"[sweep] {len(configs)} runs, {len(configs) - len(todo)} already done, {len(todo)} to do", file=sys.stderr)
    if todo:
        execute(todo, out, address, cpus_per_run, gpus_per_run)
    write_summary(out)
    return 0


def execute(todo: list[RunConfig], out: Path, address: str | None, cpus_per_run: int | None,
            gpus_per_run: float) -> None:
    cpus = cpus_per_run or os.cpu_count() or 1
    ray = start_ray(address, None if address else os.cpu_count())
    try:
        options = {"num_cpus": cpus, "num_gpus": gpus_per_run, "max_retries": 1, "retry_exceptions": True}
        stats_task = ray.remote(**options)(_statistics_task)
        run_task = ray.remote(**options)(_run_task)
        seeds = {c.seed: c for c in todo}
        prepared = dict(zip(seeds, ray.get([stats_task.remote(c.to_json()) for c in seeds.values()])))
        (out / "statistics.json").write_text(json.dumps({str(k): v for k, v in prepared.items()}, indent=1))
        attempts = out / "attempts"
        attempts.mkdir(exist_ok=True)
        forward = reference_forward(prepared.values())
        pending = {run_task.remote(c.to_json(), forward, str(attempts / run_name(c)), cpus): c for c in todo}
        _collect(ray, pending, out, attempts)
    finally:
        ray.shutdown()


def reference_forward(timed) -> float:
    """The one calibration forward every run's "x fwd" divides by, of records holding
    `calib_forward_seconds` (each seed's statistics pass, or finished runs). Every seed's forward runs the
    same shapes and a busy machine only slows a timing, so the fastest is the least disturbed measure."""
    return min(p["calib_forward_seconds"] for p in timed)


def _collect(ray, pending: dict, out: Path, attempts: Path) -> None:
    total, finished, start = len(pending), 0, time.time()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        config = pending.pop(ready[0])
        name = run_name(config)
        try:
            row = ray.get(ready[0])
            line = f"done  {name}: ppl {row.get('ppl_compressed', float('nan')):.2f}, {row['seconds']:.0f} s"
        except Exception as err:  # noqa: BLE001 - a failed run is recorded, the others go on
            tries = (attempts / name).read_text().count("attempt") if (attempts / name).exists() else None
            row = {"status": "failed", "error": _cause(err), "attempts": tries, "config": config.to_dict(),
                   "method": config.method}
            line = f"FAILED {name}: {row['error']}"
        (out / RESULTS / f"{name}.json").write_text(json.dumps(row, indent=1))
        finished += 1
        bar = "#" * int(30 * finished / total)
        print(f"[sweep] {line}\n[sweep] [{bar:<30}] {finished}/{total}  {time.time() - start:.0f} s",
              file=sys.stderr, flush=True)


def _cause(err: Exception) -> str:
    cause = getattr(err, "cause", None) or err
    return " ".join(f"{type(cause).__name__}: {cause}".split())[:500]


def write_summary(out: Path) -> list[dict]:
    rows = read_folder(out)
    summary = aggregate(rows)
    stats = json.loads((out / "statistics.json").read_text()) if (out / "statistics.json").exists() else {}
    note = "" if not stats else "\n\nStatistics passes (one per seed, counted once): " + ", ".join(
        f"seed {k}: {v['seconds']:.0f} s ({v['state']})" for k, v in stats.items())
    (out / "summary.md").write_text(markdown(summary) + note + "\n")
    (out / "summary.csv").write_text(csv_text(summary))
    pareto_figure(summary, []).write_html(out / "pareto.html", include_plotlyjs=True)
    failed = [r for r in rows if r.get("status") == "failed"]
    print(f"[sweep] wrote {out / 'summary.md'}, summary.csv and pareto.html ({len(failed)} failed)", file=sys.stderr)
    return summary


__all__ = ["run_name", "sweep"]
