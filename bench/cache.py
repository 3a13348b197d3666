"""What computing the original-stream statistics once saves a sweep, measured in one session.

    python bench/cache.py            # svd, asvd, svd-llm at 10-40%, seed 0, the README's calibration

1. The 12 runs one by one without the cache (--no-stats-cache): each computes its own statistics in its
   compression pass; their `seconds` are summed (evaluation is not part of `seconds`, so it is skipped).
2. The same 12 runs as a sweep with a fresh cache: the statistics pass runs once (its time is counted
   once) and every run reuses it; evaluation as the README's.
3. Prints both sums and their ratio, and checks that one sweep run's perplexity equals a single CLI run's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.cli.main import main as cli  # noqa: E402
from svd_explorer.run.config import with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402

SETTINGS = dict(calib="boolq", calib_samples=32, seq_len=512, eval_source="wikitext2", eval_windows=20)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="svd,asvd,svd-llm")
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    parser.add_argument("--out", default="bench/results/cache")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    single = {}
    for method in args.methods.split(","):
        for ratio in map(float, args.ratios.split(",")):
            config = with_preset("demo", method=method, ratio=ratio, stats_cache="off",
                                 **(SETTINGS | {"eval_windows": 0}))
            single[f"{method} {ratio:g}"] = run(config, measure_forward=False).record.seconds
            print(f"one by one, no cache: {method} {ratio:g}: {single[f'{method} {ratio:g}']:.1f} s", file=sys.stderr)
    cache = tempfile.mkdtemp(prefix="stats-")
    sweep_dir = out / "sweep"
    code = cli(["sweep", "--methods", args.methods, "--ratios", args.ratios, "--seeds", "0", "--out", str(sweep_dir),
                "--stats-cache", cache, "--calib", "boolq", "--calib-samples", "32", "--seq-len", "512", "--eval",
                "wikitext2", "--eval-windows", "20"])
    if code:
        return code
    rows = [json.loads(p.read_text()) for p in sorted((sweep_dir / "runs").glob("*.json"))]
    stats = json.loads((sweep_dir / "statistics.json").read_text())
    swept = sum(r["seconds"] for r in rows) + sum(s["seconds"] for s in stats.values())
    alone = sum(single.values())
    check = run(with_preset("demo", method="svd-llm", ratio=0.2, stats_cache="off", **SETTINGS),
                measure_forward=False).record.scores["ppl_compressed"]
    swept_ppl = next(r["ppl_compressed"] for r in rows if r["method"] == "svd-llm" and r["ratio"] == 0.2)
    per_run = "\n".join(f"  {r['method']} {r['ratio']:g}: {single[r['method'] + ' ' + format(r['ratio'], 'g')]:.1f} s "
                         f"alone, {r['seconds']:.1f} s in the sweep (SVDs {r['calibration'].get('decompositions')})"
                         for r in rows)
    text = (f"12 runs one by one without the cache: {alone:.0f} s of compression.\n"
            f"The same runs as a sweep: {swept:.0f} s "
            f"(statistics pass {sum(s['seconds'] for s in stats.values()):.0f} s, "
            f"counted once).\nRatio: {swept / alone:.3f}.\n{per_run}\n"
            f"svd-llm 0.2 perplexity: sweep {swept_ppl:.4f}, single CLI run without cache {check:.4f}.\n")
    (out / "cache.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
