"""Choose a method's settings without touching the evaluation sets: perplexity on held-out calibration-domain text.

    python bench/dev_select.py --variants "aa-svd:refine_lr=1e-4" "aa-svd:refine_lr=3e-4" "aa-svd:refine_lr=1e-3"
    python bench/dev_select.py --variants "ressvd:order=whitened-first" "ressvd:order=plain-first" --ratio 0.4

Calibration: --calib-samples random windows of --seq-len tokens (seed 0) of the Wikipedia paragraphs in the
offline BoolQ file, as in bench/methods.py. Development set: --dev-samples windows of the same text drawn with
seed 1 (another sample of the same paragraphs; WikiText-2 and PTB are never read). Options are name=value
pairs, values read as JSON where they parse (1e-4, false, 200) and as text otherwise (anchored).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.engine import calibration_windows  # noqa: E402
from svd_explorer.methods import get_method  # noqa: E402
from svd_explorer.metrics import evaluate  # noqa: E402
from svd_explorer.models import load_model  # noqa: E402
from svd_explorer.pipeline import compress_model  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    options = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", required=True, help='e.g. "aa-svd:refine_lr=1e-4,refine_steps=100"')
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--calib", default="auto")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--dev-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    calib, calib_desc = calibration_windows(lm, args.calib, args.calib_samples, args.seq_len, 0)
    dev, dev_desc = calibration_windows(lm, args.calib, args.dev_samples, args.seq_len, 1)
    lines = [f"Model {lm.source}, ratio {args.ratio:g}. Calibration: {calib_desc}. Development: {dev_desc} "
             f"(seed 1). Original model: dev ppl {evaluate(lm.model, dev)['ppl']:.2f}.", "",
             "| variant | dev ppl | calib ppl | seconds |", "|---|---|---|---|"]
    for text in args.variants:
        name, options = parse_variant(text)
        start = time.perf_counter()
        compressed, _ = compress_model(lm.model, get_method(name, **options), args.ratio, calib)
        seconds = time.perf_counter() - start
        row = f"| {text} | {evaluate(compressed, dev)['ppl']:.2f} | {evaluate(compressed, calib)['ppl']:.2f} | {seconds:.0f} |"
        print(row, file=sys.stderr, flush=True)
        lines.append(row)
        del compressed
    print("\n".join(lines))


if __name__ == "__main__":
    main()
