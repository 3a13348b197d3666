"""Command line: python -m svd_explorer {compress,evaluate,methods,info} ...

Rank budget: --ratio R removes the fraction R of the parameters of the compressed projections
(attention and MLP linears of the decoder blocks; embeddings and LM head stay dense). A projection
of shape m x n kept at rank k stores k (m + n) numbers instead of m n, so k = floor((1-R) m n/(m+n));
the break-even rank m n / (m + n) is where a factorised layer stops saving anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import engine
from .methods import REGISTRY, get_method, method_class
from .models import DEFAULT_MODEL

RATIO_HELP = ("fraction of the parameters of the compressed projections to REMOVE, in (0, 1); a m x n "
              "projection kept at rank k stores k(m+n) numbers instead of mn, so k = floor((1-R) mn/(m+n)), "
              "and above the break-even rank mn/(m+n) nothing is saved")


def _method_options() -> dict[str, tuple]:
    """Every option of every method, once: flag name -> (Option, methods that accept it)."""
    out: dict[str, tuple] = {}
    for name, cls in REGISTRY.items():
        for option in cls.options:
            entry = out.setdefault(option.name, (option, []))
            entry[1].append(name)
    return out


def _parse_value(option, text: str):
    if isinstance(option.default, bool):
        lowered = text.lower()
        if lowered not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"--{option.name.replace('_', '-')} takes on or off")
        return lowered in ("on", "true", "1", "yes")
    if isinstance(option.default, int):
        return int(text)
    if isinstance(option.default, float) or option.default is None:
        return float(text)
    return text


def _add_common(parser, evaluation: bool = True):
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="smollm2-135m (embedded), a Hugging Face id, a local folder or a compressed-model folder")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per window (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed for window sampling (default 0)")
    if evaluation:
        parser.add_argument("--eval", default="auto",
                            help="evaluation text: wikitext2, ptb, self, a file, none, or auto (wikitext2 when "
                                 "available, else self)")
        parser.add_argument("--eval-windows", type=int, default=20,
                            help="consecutive non-overlapping windows of --seq-len tokens (default 20)")
        parser.add_argument("--tasks", default="", help="zero-shot tasks through lm-eval, comma separated")
        parser.add_argument("--limit", type=int, default=None, help="examples per zero-shot task")
        parser.add_argument("--task-data", default=None, help="folder of the local task files (default ../shared/data)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the result as JSON to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m svd_explorer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a model and measure what was lost",
                       description="Compress a model and measure what was lost. --ratio R: " + RATIO_HELP)
    _add_common(c)
    c.add_argument("--method", required=True, help=f"one of: {', '.join(REGISTRY)} (erc-svd = ressvd)")
    c.add_argument("--ratio", type=float, required=True, help=RATIO_HELP)
    c.add_argument("--calib", default="auto",
                   help="calibration text: wikitext2, boolq, self, ptb, a file, or auto (boolq with the data "
                        "folder, else wikitext2 when the hub is reachable, else self)")
    c.add_argument("--calib-samples", type=int, default=32, help="random calibration windows (default 32)")
    c.add_argument("--batch-size", type=int, default=8, help="calibration windows per forward pass (default 8)")
    c.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="arithmetic of the calibration passes: bfloat16 autocast (as the papers' GPU code) or "
                        "float32; auto = bfloat16 where the hardware makes it fast")
    c.add_argument("--output", default=None, help="save the compressed model to this folder")
    group = c.add_argument_group("method options (each applies to the methods named)")
    for name, (option, methods) in _method_options().items():
        choices = f" [{'|'.join('on' if v is True else 'off' if v is False else str(v) for v in option.choices)}]" \
            if option.choices else ""
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None,
                           type=lambda text, o=option: _parse_value(o, text),
                           help=f"{', '.join(methods)}: {option.help}{choices} (default {option.default})")

    e = sub.add_parser("evaluate", help="perplexity (and zero-shot tasks) of a model")
    _add_common(e)

    sub.add_parser("methods", help="list the methods")

    i = sub.add_parser("info", help="parameter counts and ranks for a ratio, without compressing")
    i.add_argument("--model", default=DEFAULT_MODEL)
    i.add_argument("--ratio", type=float, default=0.2, help=RATIO_HELP)
    return parser


def progress(kind: str, data) -> None:
    """Progress lines on stderr."""
    if kind == "status":
        print(f"[svd-explorer] {data}", file=sys.stderr, flush=True)
    elif kind == "projection":
        err = f"{data['rel_error']:.3f}" if data["rel_error"] is not None else "-"
        print(f"  block {data['block']:>3} {data['kind']:<16} rank {data['rank']:>5}  rel.err {err}",
              file=sys.stderr, flush=True)
    elif kind == "block":
        print(f"block {data['block']} done: depth error {data['rel_error']:.4f} ({data['seconds']:.1f}s)",
              file=sys.stderr, flush=True)


def _write(result: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1))
        print(f"[svd-explorer] wrote {path}", file=sys.stderr)


def _summary(result: dict) -> str:
    keys = ("model", "method", "ratio", "params_before", "params_after", "ppl_original", "ppl_compressed",
            "ppl", "kl_to_original", "top1_agreement", "seconds", "calib_forward_seconds", "peak_rss_mb")
    lines = [f"{k:>22}: {result[k]}" for k in keys if k in result]
    for task, scores in (result.get("tasks") or {}).items():
        lines.append(f"{task:>22}: {scores}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "methods":
            for name, cls in REGISTRY.items():
                print(f"{name:<10} {cls.title}\n{'':<10} {cls.summary}\n{'':<10} {cls.paper}\n")
            return 0
        if args.command == "info":
            print(json.dumps(engine.model_info(args.model, args.ratio), indent=1))
            return 0
        if args.command == "evaluate":
            result = engine.evaluate_model(args.model, eval_source=args.eval, windows=args.eval_windows,
                                           seq_len=args.seq_len, seed=args.seed, tasks=args.tasks,
                                           limit=args.limit, task_data=args.task_data, log=progress)
        else:
            options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
            method = get_method(args.method, **_accepted(args.method, options))
            result = engine.run_compression(
                args.model, method, args.ratio, calib=args.calib, calib_samples=args.calib_samples,
                seq_len=args.seq_len, seed=args.seed, eval_source=args.eval, eval_windows=args.eval_windows,
                batch_size=args.batch_size, precision=args.precision, output=args.output, tasks=args.tasks,
                limit=args.limit, task_data=args.task_data, log=progress)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _write(result, args.json_path)
    print(_summary(result))
    return 0


def _accepted(method: str, options: dict) -> dict:
    cls = method_class(method)
    names = {o.name for o in cls.options}
    wrong = sorted(set(options) - names)
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ValueError(f"{flags} does not apply to method {cls.name} "
                         f"(its options: {', '.join('--' + n.replace('_', '-') for n in names) or 'none'})")
    return options
