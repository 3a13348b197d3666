"""What a student sees in "Side by side": greedy answers of every method at a few ratios, to pick the ratio
the tab suggests (one where methods differ by degrees instead of all answering garbage).

    python bench/generations.py [--methods svd,asvd,svd-llm,saes-svd] [--ratios 0.05,0.1,0.2]

Calibration 16 x 256 tokens of the BoolQ passages, seed 0 (a quick setting); the first two example
prompts of the tab, 48 new tokens, temperature 0, through the chat template. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.model.loading import load_model  # noqa: E402
from svd_explorer.run.config import with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402
from svd_explorer.text.generation import EXAMPLES, side_by_side  # noqa: E402


def answer(model, tokenizer, prompt: str) -> str:
    text = ""
    for texts in side_by_side([model], tokenizer, prompt, max_new_tokens=48):
        text = texts[0]
    return " ".join(text.split())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="svd,asvd,svd-llm,saes-svd,aa-svd")
    parser.add_argument("--ratios", default="0.05,0.1,0.2")
    args = parser.parse_args(argv)
    lm = load_model("smollm2-135m")
    prompts = EXAMPLES[:2]
    lines = ["| model | ratio | " + " | ".join(prompts) + " |", "|---|---|" + "---|" * len(prompts),
             "| original | 0 | " + " | ".join(answer(lm.model, lm.tokenizer, p) for p in prompts) + " |"]
    for ratio in map(float, args.ratios.split(",")):
        for name in args.methods.split(","):
            config = with_preset("demo", method=name, ratio=ratio, calib="boolq", calib_samples=16, seq_len=256,
                                 eval_source="none")
            model = run(config, loaded=lm, keep_model=True, measure_forward=False).model
            answers = " | ".join(answer(model, lm.tokenizer, p) for p in prompts)
            lines.append(f"| {name} | {ratio:g} | " + answers + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
