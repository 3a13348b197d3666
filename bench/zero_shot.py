"""Zero-shot accuracy (lm-eval, offline task files) of the original model and of every method at one ratio.

    python bench/zero_shot.py                                  # embedded SmolLM2, ratio 0.2, limit 200
    python bench/zero_shot.py --tasks piqa,arc_easy --limit 100 --methods svd-llm,saes-svd

Calibration as in bench/methods.py (32 x 512 tokens of the BoolQ passages, seed 0): the BoolQ column has
therefore seen the passages its questions are about. Each task runs on its first --limit examples;
accuracies are lm-eval's `acc` with its standard error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.compress.methods import list_methods  # noqa: E402
from svd_explorer.run.config import with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402
from svd_explorer.text.zero_shot import LOCAL_FILES  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--allocation", default="auto")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--tasks", default=",".join(LOCAL_FILES))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", default="bench/results/zero_shot.md")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    rows = {}
    for name in args.methods.split(","):
        config = with_preset("demo", model=args.model, method=name, ratio=args.ratio, calib="boolq",
                             allocation=args.allocation, eval_source="none", tasks=tuple(tasks), limit=args.limit)
        record = run(config, measure_forward=False).record
        rows.setdefault("original", record.tasks["original"])
        rows[f"{name} {args.ratio:g}"] = record.tasks["compressed"]
        print(json.dumps({name: rows[f"{name} {args.ratio:g}"]}), file=sys.stderr, flush=True)
    head = "| model | " + " | ".join(tasks) + " | mean |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for label, scores in rows.items():
        accs = [scores[t]["acc"] for t in tasks]
        cells = [f"{100 * scores[t]['acc']:.1f} ± {100 * (scores[t]['acc_stderr'] or 0):.1f}" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * sum(accs) / len(accs):.1f} |")
    text = (f"## Zero-shot accuracy (%)\n\nModel {args.model}; lm-eval `acc` on the first {args.limit} examples of "
            f"each task from the offline files; compressed models at ratio {args.ratio:g} ({args.allocation} "
            f"allocation), calibrated on the BoolQ passages (so BoolQ's passages were seen in calibration). "
            f"Chance: 50 for piqa, boolq, winogrande; 25 for arc_easy, arc_challenge, openbookqa; "
            f"lambada_openai is exact last-word prediction.\n\n" + "\n".join(lines) + "\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
