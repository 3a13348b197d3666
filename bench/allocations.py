"""The newer allocations against the grid's best: choose on development text, then report with 3 seeds.

    python bench/allocations.py select     # svd-llm at 20%, seed 0: every candidate setting, development text
    python bench/allocations.py best       # aa-svd at 20% with the chosen settings, seeds 0,1,2 (+ PTB, LAMBADA)
    python bench/allocations.py table      # docs/results/allocations_new.json from the files written

`select` compares, on the development perplexity (8 BoolQ windows of 512 tokens disjoint from the
calibration and from the 2 search windows), uniform, `loss` with floors 0 / 0.1 / 0.25 / 0.5, `zero-sum`
with floors 0 / 0.1 / 0.25 and `sensitivity` (measure 0.5, score kl) with the threshold and the exact
solver, all with svd-llm (no refinement: a run takes about a minute and a half here, aa-svd's eight).
WikiText-2 is measured and shown, never used to choose. `best` runs aa-svd, whose refinement the grid's
best row uses, with the chosen settings the grid has not measured (its aa-svd + sensitivity row is the
threshold solver) over three calibration seeds. Runs are skipped when their JSON
exists (bench/results/allocations/); every run shares its seed's statistics cache. Run alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from provenance import commit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "allocations"
PROTOCOL = ["--model", "smollm2-135m", "--calib", "boolq", "--calib-samples", "32", "--seq-len", "512",
            "--eval", "wikitext2", "--eval-windows", "20", "--dev-windows", "8", "--search-windows", "2", "--no-cost"]
SENSITIVITY = ["--allocation", "sensitivity", "--measure", "0.5", "--score", "kl"]
CANDIDATES = {
    "uniform": ["--allocation", "uniform"],
    **{f"loss floor {f}": ["--allocation", "loss", "--floor", f] for f in ("0", "0.1", "0.25", "0.5")},
    **{f"zero-sum floor {f}": ["--allocation", "zero-sum", "--floor", f] for f in ("0", "0.1", "0.25")},
    "sensitivity threshold": [*SENSITIVITY, "--solver", "threshold"],
    "sensitivity exact": [*SENSITIVITY, "--solver", "exact"],
}


def compress(name: str, method: str, ratio: float, seed: int, flags: list[str], extra: list[str] = ()) -> dict:
    path = OUT / f"{method}-{name.replace(' ', '_')}-r{ratio:g}-s{seed}.json"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        args = ["compress", *PROTOCOL, "--method", method, "--ratio", str(ratio), "--seed", str(seed), *flags,
                *extra, "--stats-cache", f"/tmp/svd-explorer-allocations-s{seed}", "--json", str(path)]
        print("python -m svd_explorer " + " ".join(args), file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "svd_explorer", *args], check=True, cwd=ROOT)
    return json.loads(path.read_text())


def select() -> dict[str, str]:
    """Every candidate on seed 0; per allocation, the setting with the lowest development perplexity."""
    results = {name: compress(name, "svd-llm", 0.2, 0, flags) for name, flags in CANDIDATES.items()}
    chosen = {}
    for family in ("loss", "zero-sum", "sensitivity"):
        named = {n: r for n, r in results.items() if n.startswith(family)}
        chosen[family] = min(named, key=lambda n: named[n]["dev_ppl"])
    print(json.dumps({n: round(r["dev_ppl"], 2) for n, r in results.items()}, indent=1), file=sys.stderr)
    print(f"chosen on development text: {chosen}", file=sys.stderr)
    return chosen


def new_settings(chosen: dict[str, str]) -> list[str]:
    """The chosen settings the grid has not measured with aa-svd (its best row is sensitivity + threshold)."""
    return ([chosen["sensitivity"]] if chosen["sensitivity"] != "sensitivity threshold" else []) + [chosen["zero-sum"]]


def best(seeds: list[int], ratios: list[float]) -> None:
    chosen = select()
    for name in new_settings(chosen):           # one setting's seeds, then the next's
        for ratio in ratios:
            for seed in seeds:
                compress(name, "aa-svd", ratio, seed, CANDIDATES[name], ["--extra-eval", "ptb,lambada"])


def table() -> None:
    """docs/results/allocations_new.json: the selection rows, then the aa-svd rows with their spread."""
    chosen, rows = select(), []
    for name in CANDIDATES:
        r = compress(name, "svd-llm", 0.2, 0, CANDIDATES[name])
        rows.append({"run": f"svd-llm, {name}" + (" (chosen)" if name in chosen.values() else ""),
                     "seeds": "0", "dev": r["dev_ppl"], "wikitext2": r["ppl_compressed"],
                     "seconds": r["timings"]["allocation"]})
    for name in new_settings(chosen):
        done = sorted(OUT.glob(f"aa-svd-{name.replace(' ', '_')}-r0.2-s*.json"))
        if done:
            rows.append(_spread(f"aa-svd, {name}", [json.loads(p.read_text()) for p in done]))
    data = {"title": "Newer allocations at 20%", "command": "python bench/allocations.py best && "
            "python bench/allocations.py table", "commit": commit(), "machine": "2 CPU cores, no GPU",
            "columns": [{"key": "run", "header": "method, allocation"}, {"key": "seeds", "header": "seeds"},
                        {"key": "dev", "header": "development ppl", "format": "f1"},
                        {"key": "wikitext2", "header": "WikiText-2", "format": "f1"},
                        {"key": "ptb", "header": "PTB", "format": "f1"},
                        {"key": "lambada", "header": "LAMBADA", "format": "f1"},
                        {"key": "seconds", "header": "allocation s", "format": "f0"}], "rows": rows}
    (ROOT / "docs" / "results" / "allocations_new.json").write_text(json.dumps(data, indent=1) + "\n")


def _spread(run: str, results: list[dict]) -> dict:
    def pm(values):       # one seed: its value, no spread to show
        return {"mean": statistics.mean(values), "std": statistics.stdev(values)} if len(values) > 1 else values[0]
    return {"run": run, "seeds": ",".join(str(r["config"]["seed"]) for r in results),
            "dev": pm([r["dev_ppl"] for r in results]), "wikitext2": pm([r["ppl_compressed"] for r in results]),
            "ptb": pm([r["extra_ppl"]["ptb"] for r in results]),
            "lambada": pm([r["extra_ppl"]["lambada"] for r in results])}     # not timed: tests ran beside them


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["select", "best", "table"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default="0.2")
    args = parser.parse_args(argv)
    if args.action == "select":
        select()
    elif args.action == "best":
        best([int(s) for s in args.seeds.split(",")], [float(r) for r in args.ratios.split(",")])
    else:
        table()


if __name__ == "__main__":
    main()
