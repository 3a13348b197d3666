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
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]   # run as a script or loaded by a test

from provenance import commit  # noqa: E402

from svd_explorer.study.comparison import group_key, read_folder, work_seconds  # noqa: E402

COLUMNS = [("method", "method", None), ("allocation", "allocation", None), ("ratio", "ratio", "f1"),
           ("eval", "{eval}, mean ± std (seeds {seeds})", "ppl"), ("dev", "dev (held out)", "ppl"),
           ("dev_ratio", "dev ÷ original's", "f2"),
           ("kl", "KL", "f3"), ("top1", "top-1", "f3"), ("kept", "whole model kept", "f3"),
           ("seconds", "s", "f0"), ("x_fwd", "× fwd", "f1")]
NAMES = {"wikitext2": "WikiText-2", "ptb": "PTB", "lambada": "LAMBADA"}


def cell(values: list[float], per_seed: bool = False) -> dict | None:
    """Mean ± sample std of the seeds' values (each seed's value too, where asked)."""
    if not values:
        return None
    out = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out | ({"seeds": values} if per_seed else {})


def run_row(members: list[dict], forward: float | None) -> dict:
    """One configuration's row from its runs (ordered by seed); `forward` is the folder's reference forward."""
    first = members[0]
    return {"method": first["method"], "allocation": first["config"].get("allocation", "auto"),
            "ratio": first["ratio"], "eval": cell([r["ppl_compressed"] for r in members], per_seed=True),
            "dev": cell([r["dev_ppl"] for r in members if r.get("dev_ppl") is not None]),
            "dev_ratio": cell([r["dev_ppl"] / r["dev_ppl_original"] for r in members if r.get("dev_ppl_original")]),
            "kl": cell([r["kl_to_original"] for r in members]), "top1": cell([r["top1_agreement"] for r in members]),
            "kept": cell([r["params_after"] / r["params_before"] for r in members]),
            "seconds": cell([work_seconds(r) for r in members]),
            "x_fwd": cell([work_seconds(r) / forward for r in members] if forward else [])}


def original_row(runs: list[dict]) -> dict:
    """The uncompressed model on the same windows (the development windows differ by seed: their mean)."""
    by_seed = {r["config"]["seed"]: r for r in runs}
    return {"method": "original", "allocation": None, "ratio": None,
            "eval": {"value": runs[0]["ppl_original"]},
            "dev": cell([r["dev_ppl_original"] for r in by_seed.values() if r.get("dev_ppl_original") is not None]),
            "kept": {"value": 1.0}}


def rows_of(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for run in sorted(runs, key=lambda r: r["config"]["seed"]):
        groups.setdefault(group_key(run), []).append(run)
    ordered = sorted(groups.values(), key=lambda g: (g[0]["ratio"], g[0]["method"], group_key(g[0])[1]))
    return [original_row(runs)] + [run_row(g, reference_forward(runs)) for g in ordered]


def reference_forward(runs: list[dict]) -> float | None:
    """The fastest calibration forward any of the folder's sweeps timed: each sweep divides by its own, and a
    folder filled by several sweeps would otherwise mix references (the least disturbed timing, as there)."""
    timed = [r["calib_forward_seconds"] for r in runs if r.get("calib_forward_seconds")]
    return min(timed) if timed else None


def columns(runs: list[dict]) -> list[dict]:
    source = runs[0].get("evaluation", {}).get("source", "eval")
    seeds = " / ".join(str(s) for s in sorted({r["config"]["seed"] for r in runs}))
    return [{"key": key, "header": header.format(eval=NAMES.get(source, source), seeds=seeds),
             **({"format": fmt} if fmt else {})} for key, header, fmt in COLUMNS]


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
    result = {"title": args.title, "command": args.command, "commit": commit(), "machine": args.machine,
              "columns": columns(runs), "rows": rows_of(runs)}
    path = ROOT / "docs" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({len(result['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
