"""Zero-shot accuracy (lm-eval, offline task files) of the original model and of every method at one ratio.

    python bench/zero_shot.py                                  # embedded SmolLM2, ratio 0.2, limit 200
    python bench/zero_shot.py --tasks piqa,arc_easy --limit 100 --methods svd-llm,saes-svd

Calibration as in bench/methods.py (32 x 512 tokens of Wikipedia paragraphs, seed 0). Each task runs on
its first --limit examples; accuracies are lm-eval's `acc` with its standard error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.engine import calibration_windows  # noqa: E402
from svd_explorer.evaluation import LOCAL_FILES, run_tasks  # noqa: E402
from svd_explorer.methods import get_method, list_methods  # noqa: E402
from svd_explorer.models import load_model  # noqa: E402
from svd_explorer.pipeline import compress_model  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--tasks", default=",".join(LOCAL_FILES))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--calib", default="auto")
    parser.add_argument("--out", default="bench/results/zero_shot.md")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    tasks = args.tasks.split(",")
    calib, calib_desc = calibration_windows(lm, args.calib, 32, 512, 0)
    rows = {"original": run_tasks(lm.model, lm.tokenizer, tasks, limit=args.limit)}
    print(json.dumps({"original": rows["original"]}), file=sys.stderr, flush=True)
    for name in args.methods.split(","):
        compressed, _ = compress_model(lm.model, get_method(name), args.ratio, calib)
        rows[f"{name} {args.ratio:g}"] = run_tasks(compressed, lm.tokenizer, tasks, limit=args.limit)
        print(json.dumps({name: rows[f"{name} {args.ratio:g}"]}), file=sys.stderr, flush=True)
        del compressed

    head = "| model | " + " | ".join(tasks) + " | mean |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for label, scores in rows.items():
        accs = [scores[t]["acc"] for t in tasks]
        cells = [f"{100 * scores[t]['acc']:.1f} ± {100 * (scores[t]['acc_stderr'] or 0):.1f}" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * sum(accs) / len(accs):.1f} |")
    text = (f"## Zero-shot accuracy (%)\n\nModel {lm.source}; lm-eval `acc` on the first {args.limit} examples of "
            f"each task from the offline files; compressed models at ratio {args.ratio:g}, calibration: {calib_desc}. "
            f"Chance: 50 for piqa, boolq, winogrande; 25 for arc_easy, arc_challenge, openbookqa; "
            f"lambada_openai is exact last-word prediction.\n\n" + "\n".join(lines) + "\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
