"""The README's methods table: a sweep of every method x allocation x ratio x calibration seed.

    python bench/methods.py                                   # the README's grid (hours on a CPU)
    python bench/methods.py --methods svd-llm,aa-svd --allocations uniform,loss --ratios 0.2 --seeds 0
    python bench/methods.py --methods aa-svd --allocations sensitivity --measure 0.5 --ratios 0.2   # any sweep flag

A thin call of `python -m svd_explorer sweep` with the README's settings: calibration 32 random windows
of 512 tokens of the BoolQ passages (Wikipedia paragraphs) per seed; evaluation the first 20 x 512
tokens of WikiText-2 test (perplexity, KL and top-1 against the original), PTB test and LAMBADA's
novels (perplexity), and 16 development windows of the calibration text that no calibration window
overlaps (where combinations are ranked, never on the evaluation sets). The table (mean ± std over
seeds) is written to OUT/summary.md and printed; reruns resume.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.cli.main import main as cli  # noqa: E402
from svd_explorer.compress.allocation import list_allocations  # noqa: E402
from svd_explorer.compress.methods import list_methods  # noqa: E402

README_SETTINGS = ["--calib", "boolq", "--calib-samples", "32", "--seq-len", "512", "--eval", "wikitext2",
                   "--eval-windows", "20", "--extra-eval", "ptb,lambada", "--dev-windows", "16"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--allocations", default=",".join(list_allocations()))
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--refine", default=None, choices=("auto", "on", "off"))
    parser.add_argument("--out", default="bench/results/methods")
    parser.add_argument("--cpus-per-run", default=None)
    args, passed_on = parser.parse_known_args(argv)
    sweep = ["sweep", "--model", args.model, "--methods", args.methods, "--allocations", args.allocations,
             "--ratios", args.ratios, "--seeds", args.seeds, "--out", args.out, *README_SETTINGS, *passed_on]
    sweep += ["--refine", args.refine] if args.refine else []
    sweep += ["--cpus-per-run", args.cpus_per_run] if args.cpus_per_run else []
    return run_and_print(sweep, args.out)


def run_and_print(sweep: list[str], out: str) -> int:
    """Run the sweep, then print its command and its table."""
    code = cli(sweep)
    if code == 0:
        print(f"python -m svd_explorer {' '.join(sweep)}\n")
        print((Path(out) / "summary.md").read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
