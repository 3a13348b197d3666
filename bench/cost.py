"""What a compressed model buys: SVD against weight-only quantisation at equal bytes, on the embedded model.

    python bench/cost.py compress [--seeds 0,1,2] [--ratios 0.1,0.2,0.3]   # the best SVD setting, saved (bf16)
    python bench/cost.py measure [--seeds ...] [--ratios ...]   # every variant: bytes, ppl, prefill/decode tokens/s
    python bench/cost.py table [--seeds ...] [--ratios ...]     # docs/results/cost.json from the measured files

Rows: the dense model in float32 and bfloat16, int8 and int4 weight-only (torchao, no SVD), and aa-svd +
`sensitivity` (measure 0.5, score kl, 2 search windows: the grid's best) at 10/20/30% as saved in bfloat16,
alone and + int8. Perplexity is WikiText-2 test, the first 20 × 512 tokens (the README's protocol); the
SVD rows are the mean ± std over the calibration seeds given (one seed: its value). Speed is measured
by `evaluate` (prefill of 512 tokens, 16 decoded tokens after a 16-token prompt at batch 1 and 8, best
of 3), one process per variant, alone on the machine; the SVD rows' speed is the first seed's. Run
`measure` with nothing else running; it measures only what has no file in bench/results/cost/ yet.
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
OUT = ROOT / "bench" / "results" / "cost"
TEXT = ["--eval", "wikitext2", "--eval-windows", "20", "--seq-len", "512"]
BEST = ["--method", "aa-svd", "--allocation", "sensitivity", "--measure", "0.5", "--score", "kl",
        "--search-windows", "2", "--calib", "boolq", "--calib-samples", "32"]
BASELINES = {"dense float32": [], "dense bfloat16": ["--dtype", "bfloat16"], "int8": ["--quantize", "int8"],
             "int4": ["--quantize", "int4"]}


def cli(*args: str) -> None:
    print("python -m svd_explorer " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "svd_explorer", *args], check=True, cwd=ROOT)


def folder(ratio: float, seed: int) -> Path:
    return OUT / f"aa-svd-sensitivity-r{ratio:g}-s{seed}"


def compress(seeds: list[int], ratios: list[float]) -> None:
    for seed in seeds:
        for ratio in ratios:
            if not (folder(ratio, seed) / "manifest.json").exists():
                cli("compress", *BEST, *TEXT, "--ratio", str(ratio), "--seed", str(seed), "--no-cost",
                    "--output", str(folder(ratio, seed)), "--force", "--json", str(folder(ratio, seed)) + ".json")


def measure(seeds: list[int], ratios: list[float]) -> None:
    """Every variant not measured yet (a file in bench/results/cost/ is kept: delete it to measure again)."""
    for name, flags in BASELINES.items():
        evaluate(OUT / f"{name}.json", "--model", "smollm2-135m", *TEXT, *flags)
    for ratio in ratios:
        for seed in seeds:
            for quantize in ("none", "int8"):
                cost = [] if seed == seeds[0] else ["--no-cost"]
                held = ["--dtype", "bfloat16"] if quantize == "none" else []     # as saved; int8 blocks: float32 rest
                evaluate(OUT / f"svd-r{ratio:g}-s{seed}-{quantize}.json", "--model", str(folder(ratio, seed)), *TEXT,
                         "--quantize", quantize, *cost, *held)


def evaluate(result: Path, *args: str) -> None:
    if not result.exists():
        cli("evaluate", *args, "--json", str(result))


def read(name: str) -> dict:
    return json.loads((OUT / f"{name}.json").read_text())


def row(label: str, runs: list[dict]) -> dict:
    """One table row: bytes held, perplexity (mean ± std over the runs) and the first seed's speed."""
    cost, ppls = runs[0]["cost"], [r["ppl"] for r in runs]
    ppl = {"value": ppls[0]} if len(ppls) == 1 else {"mean": statistics.fmean(ppls), "std": statistics.stdev(ppls)}
    return {"variant": label, "mb": cost["bytes"]["held"] / 1e6, "ppl": ppl,
            "prefill": cost["prefill_tokens_per_s"], "decode1": cost["decode_tokens_per_s_batch1"],
            "decode8": cost["decode_tokens_per_s_batch8"]}


def table(seeds: list[int], ratios: list[float]) -> None:
    rows = [row(name if name.startswith("dense") else f"{name}, the rest float32", [read(name)]) for name in BASELINES]
    for ratio in ratios:
        for quantize, label in (("none", "factors in bfloat16"), ("int8", "factors in int8, the rest float32")):
            runs = [read(f"svd-r{ratio:g}-s{seed}-{quantize}") for seed in seeds]
            rows.append(row(f"aa-svd + sensitivity {ratio:.0%}, {label}", runs))
    columns = [{"key": "variant", "header": "variant"}, {"key": "mb", "header": "weights held (MB)", "format": "f0"},
               {"key": "ppl", "header": "WikiText-2 ppl", "format": "f1", "std_format": "f1"},
               {"key": "prefill", "header": "prefill tokens/s", "format": "f0"},
               {"key": "decode1", "header": "decode tokens/s, batch 1", "format": "f1"},
               {"key": "decode8", "header": "decode tokens/s, batch 8", "format": "f1"}]
    data = {"title": "SVD against weight-only quantisation at equal bytes (SmolLM2-135M)",
            "command": [f"python bench/cost.py {step} --seeds {','.join(map(str, seeds))} --ratios "
                        f"{','.join(map(str, ratios))}" for step in ("compress", "measure", "table")],
            "commit": commit("unknown"),
            "machine": "this project's CPU machine: 2 cores, 24 GiB, no GPU; float32 compute "
                       "unless the row says bfloat16; measured alone on the machine",
            "columns": columns, "rows": rows}
    (ROOT / "docs" / "results" / "cost.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("compress", "measure", "table"))
    parser.add_argument("--seeds", default="0,1,2", help="calibration seeds of the SVD rows")
    parser.add_argument("--ratios", default="0.1,0.2,0.3", help="ratios of the SVD rows")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    step = {"compress": compress, "measure": measure, "table": table}[args.step]
    step([int(s) for s in args.seeds.split(",")], [float(r) for r in args.ratios.split(",")])
