"""A sweep folder as a results file: docs/results/NAME.json, the original model's row, then one row per
method x allocation x ratio with mean ± std over calibration seeds (and each seed's value). Each seed
draws its own development windows, so their perplexity is also shown over the original's on the same
windows, which removes most of the seed-to-seed spread that the windows, not the compression, cause.

    python bench/sweep_table.py bench/results/gemma gemma --title "..." --command "python -m svd_explorer sweep ..."

`python bench/tables.py` then draws it wherever a page holds the table's markers. "kept" is of the whole
model (embedding included), which is what a file on disk keeps; the ratio is of the projections.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]   # run as a script or loaded by a test

from provenance import spread, write_result  # noqa: E402

from svd_explorer.study.comparison import group_key, read_folder, work_seconds  # noqa: E402
from svd_explorer.study.sweep import reference_forward  # noqa: E402

COLUMNS = [("method", "method", None), ("allocation", "allocation", None), ("ratio", "ratio", "f1"),
           ("eval", "{eval}, mean ± std (seeds {seeds})", "ppl"), ("dev", "dev (held out)", "ppl"),
           ("dev_ratio", "dev ÷ original's", "f2"),
           ("kl", "KL", "f3"), ("top1", "top-1", "f3"), ("kept", "whole model kept", "f3"),
           ("seconds", "s", "f0"), ("x_fwd", "× fwd", "f1")]
NAMES = {"wikitext2": "WikiText-2", "ptb": "PTB", "lambada": "LAMBADA"}


def run_row(members: list[dict], forward: float | None) -> dict:
    """One configuration's row from its runs (ordered by seed); `forward` is the folder's reference forward."""
    first = members[0]
    return {"method": first["method"], "allocation": first["config"].get("allocation", "auto"),
            "ratio": first["ratio"], "eval": spread([r["ppl_compressed"] for r in members], per_seed=True),
            "dev": spread([r["dev_ppl"] for r in members if r.get("dev_ppl") is not None]),
            "dev_ratio": spread([r["dev_ppl"] / r["dev_ppl_original"] for r in members
                                 if r.get("dev_ppl_original")]),
            "kl": spread([r["kl_to_original"] for r in members]),
            "top1": spread([r["top1_agreement"] for r in members]),
            "kept": spread([r["params_after"] / r["params_before"] for r in members]),
            "seconds": spread([work_seconds(r) for r in members]),
            "x_fwd": spread([work_seconds(r) / forward for r in members] if forward else [])}


def original_row(runs: list[dict]) -> dict:
    """The uncompressed model on the same windows (the development windows differ by seed: their mean)."""
    by_seed = {r["config"]["seed"]: r for r in runs}
    return {"method": "original", "allocation": None, "ratio": None,
            "eval": {"value": runs[0]["ppl_original"]},
            "dev": spread([r["dev_ppl_original"] for r in by_seed.values() if r.get("dev_ppl_original") is not None]),
            "kept": {"value": 1.0}}


def rows_of(runs: list[dict]) -> list[dict]:
    """The original's row, then one row per configuration. Each sweep divides by its own reference forward;
    a folder filled by several sweeps takes the fastest of them all, so its rows share one reference."""
    groups: dict[tuple, list[dict]] = {}
    for run in sorted(runs, key=lambda r: r["config"]["seed"]):
        groups.setdefault(group_key(run), []).append(run)
    ordered = sorted(groups.values(), key=lambda g: (g[0]["ratio"], g[0]["method"], group_key(g[0])[1]))
    timed = [r for r in runs if r.get("calib_forward_seconds")]
    forward = reference_forward(timed) if timed else None
    return [original_row(runs)] + [run_row(g, forward) for g in ordered]


def columns(runs: list[dict]) -> list[tuple]:
    source = runs[0].get("evaluation", {}).get("source", "eval")
    seeds = " / ".join(str(s) for s in sorted({r["config"]["seed"] for r in runs}))
    return [(key, header.format(eval=NAMES.get(source, source), seeds=seeds), fmt) for key, header, fmt in COLUMNS]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("name")
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", action="append", required=True, help="a command that made the folder (repeat)")
    parser.add_argument("--machine", default="this project's CPU machine: 2 cores, AMD EPYC without AVX512-BF16 "
                                              "(calibration passes in float32), nothing else running")
    args = parser.parse_args(argv)
    runs = [r for r in read_folder(args.folder) if r.get("status", "done") == "done"]
    if not runs:
        print(f"{args.folder}: no finished runs", file=sys.stderr)
        return 1
    rows = rows_of(runs)
    path = write_result(args.name, args.title, args.command, args.machine, columns(runs), rows)
    print(f"wrote {path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
