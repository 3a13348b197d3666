"""Benchmark every method at several ratios on one model; prints a markdown table and writes it to a file.

    python bench/methods.py                       # all methods, ratios 0.1-0.4, embedded SmolLM2
    python bench/methods.py --methods svd-llm,saes-svd --ratios 0.2 --out /tmp/t.md

Protocol: calibration = --calib-samples random windows of --seq-len tokens (seed 0) from the
Wikipedia paragraphs of the offline data folder (or any --calib source); evaluation = the first
--eval-windows consecutive windows of WikiText-2 test and of PTB test; KL and top-1 agreement
against the original model on the WikiText-2 windows. Time is the compression wall time (the
calibration text preparation and the evaluation excluded) and its ratio to one plain forward of
the original model over the calibration set, measured in this process before and after the runs.
Peak memory is the largest resident set size sampled during each compression.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.data import local_file, text_windows  # noqa: E402
from svd_explorer.engine import calibration_windows, forward_seconds  # noqa: E402
from svd_explorer.methods import get_method, list_methods  # noqa: E402
from svd_explorer.metrics import evaluate  # noqa: E402
from svd_explorer.models import count_parameters, load_model  # noqa: E402
from svd_explorer.pipeline import compress_model  # noqa: E402

# What each part of the seed methods contributes, at one ratio (selected on calibration loss).
ABLATIONS = [
    ("svd-llm", {"stream": "compressed"}, "whitening from the compressed stream"),
    ("ressvd", {"residual": False}, "partial-layer compression only (no residual)"),
    ("ressvd", {"last_layers": "all"}, "residual compensation only (all blocks)"),
    ("ressvd", {"order": "plain-first"}, "plain SVD first, whitened residual"),
    ("aa-svd", {"refine_steps": 0}, "whitening init, no refinement"),
    ("aa-svd", {"init": "anchored", "refine_steps": 0}, "anchored closed form only"),
    ("aa-svd", {"init": "anchored"}, "anchored closed form + refinement"),
    ("saes-svd", {"aces": "off"}, "CEALC, fixed beta = 0.5 (no ACES)"),
    ("saes-svd", {"aces": "exact"}, "ACES by exact grid search"),
]


class PeakMemory:
    """Largest RSS of this process, sampled every 0.1 s while the block runs."""

    def __enter__(self):
        self.peak, self.stop = 0, threading.Event()
        process = psutil.Process()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                time.sleep(0.1)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def run_one(lm, name, options, ratio, calib, wiki, ptb, forward, args):
    method = get_method(name, **options)
    with PeakMemory() as mem:
        start = time.perf_counter()
        compressed, result = compress_model(lm.model, method, ratio, calib, batch_size=args.batch_size,
                                            precision=args.precision)
        seconds = time.perf_counter() - start
    scores = evaluate(compressed, wiki, reference=lm.model)
    row = {"method": name, "options": options, "ratio": ratio, "params": count_parameters(compressed),
           "wikitext2_ppl": scores["ppl"], "kl": scores["kl_to_original"], "top1": scores["top1_agreement"],
           "seconds": seconds, "x_forward": seconds / forward, "peak_mb": mem.mb,
           "calib_ppl": evaluate(compressed, calib)["ppl"]}
    if ptb is not None:
        row["ptb_ppl"] = evaluate(compressed, ptb)["ppl"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def fmt(value, digits=1):
    if value is None:
        return "-"
    if value >= 1e5:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def table(rows, original, ablation=False) -> str:
    head = ("| method | variant | ratio | params (M) | calib ppl | WikiText-2 ppl | PTB ppl | KL | top-1 | seconds "
            "| x fwd | peak MB |") if ablation else (
        "| method | ratio | params (M) | WikiText-2 ppl | PTB ppl | KL | top-1 | seconds | x fwd | peak MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if not ablation:
        lines.append(f"| original | 0 | {original['params'] / 1e6:.1f} | {fmt(original['wikitext2_ppl'], 2)} | "
                     f"{fmt(original.get('ptb_ppl'), 2)} | 0 | 1 | - | - | - |")
    for r in rows:
        cells = [r["method"]] + ([r.get("variant", "default")] if ablation else []) + [
            f"{r['ratio']:g}", f"{r['params'] / 1e6:.1f}"] + ([fmt(r["calib_ppl"])] if ablation else []) + [
            fmt(r["wikitext2_ppl"]), fmt(r.get("ptb_ppl")), f"{r['kl']:.3f}", f"{r['top1']:.3f}",
            f"{r['seconds']:.0f}", f"{r['x_forward']:.2f}", f"{r['peak_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    parser.add_argument("--calib", default="auto", help="calibration source (default: BoolQ passages, else self)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--ablation-ratio", type=float, default=0.2, help="ratio of the ablation table (0 = none)")
    parser.add_argument("--out", default="bench/results/methods.md")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    torch.manual_seed(0)
    calib, calib_desc = calibration_windows(lm, args.calib, args.calib_samples, args.seq_len, 0)
    wiki_source = str(local_file("wikitext-2-raw/wiki.test.raw") or "wikitext2")
    wiki, wiki_desc = text_windows(wiki_source, lm.model, lm.tokenizer, args.eval_windows, args.seq_len, 0,
                                   split="test", consecutive=True)
    ptb_path = local_file("ptb/ptb.test.txt")
    ptb = None
    if ptb_path is not None:
        ptb, _ = text_windows(str(ptb_path), lm.model, lm.tokenizer, args.eval_windows, args.seq_len, 0,
                              split="test", consecutive=True)
    forward_before = forward_seconds(lm.model, calib, args.batch_size)
    original = {"params": count_parameters(lm.model), "wikitext2_ppl": evaluate(lm.model, wiki)["ppl"],
                "ptb_ppl": evaluate(lm.model, ptb)["ppl"] if ptb is not None else None}

    rows = [run_one(lm, name, {}, ratio, calib, wiki, ptb, forward_before, args)
            for ratio in (float(r) for r in args.ratios.split(",")) for name in args.methods.split(",")]
    ablations = []
    if args.ablation_ratio:
        for name, options, variant in ABLATIONS:
            if name in args.methods.split(","):
                row = run_one(lm, name, options, args.ablation_ratio, calib, wiki, ptb, forward_before, args)
                ablations.append({**row, "variant": variant})
    forward_after = forward_seconds(lm.model, calib, args.batch_size)

    setting = (f"Model {lm.source} ({lm.revision}). Calibration: {calib_desc}. Evaluation: {wiki_desc}"
               + ("; PTB test, same windows" if ptb is not None else "") +
               f". Precision of the calibration passes: {args.precision}. One plain forward of the original model "
               f"over the calibration set: {forward_before:.1f} s before the runs, {forward_after:.1f} s after; "
               f"'x fwd' divides by the first. Machine: {psutil.cpu_count()} CPUs, torch {torch.__version__}.")
    text = f"## Methods\n\n{setting}\n\n{table(rows, original)}\n"
    if ablations:
        text += (f"\n## What each part contributes (ratio {args.ablation_ratio:g})\n\nSame setting; 'calib ppl' is the "
                 f"perplexity on the calibration windows themselves, the quantity variants are chosen on.\n\n"
                 f"{table(ablations, original, ablation=True)}\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"setting": setting, "original": original, "rows": rows,
                                                    "ablations": ablations}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
