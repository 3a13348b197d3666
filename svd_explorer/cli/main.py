"""Command line: python -m svd_explorer {compress,evaluate,sweep,merge,push,info,methods,allocations,presets}

Rank budget: --ratio R removes the fraction R of the parameters of the compressed projections
(attention and MLP linears of the decoder blocks; embeddings and LM head stay dense). A projection
of shape m x n kept at rank k stores k (m + n) numbers instead of m n, so k = floor((1-R) m n/(m+n));
the break-even rank m n / (m + n) is where a factorised layer stops saving anything.

Every run is a RunConfig built from a preset (--preset demo|paper) and the flags given; everything
that can be checked is checked before the model loads, and any failure is one line on stderr with
exit status 2 (--debug shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ..compress.allocation import ALLOCATIONS
from ..compress.budget import model_info
from ..compress.methods import REGISTRY
from ..model.hub import DEFAULT_MODEL
from ..run import engine
from ..run.config import PRESETS
from ..run.plan import plan
from ..run.timings import describe
from .flags import RATIO_HELP, add_compression, add_evaluation, add_model, config_from_args, integer, number
from .folders import add_folder_parsers, merge_command, push_command
from .sweep import add_sweep_parser
from .sweep import main as sweep_command

FOLDER_COMMANDS = {"merge": merge_command, "push": push_command}


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m svd_explorer", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    c = sub.add_parser("compress", help="compress a model and measure what was lost",
                       description="Compress a model and measure what was lost. --ratio R: " + RATIO_HELP)
    add_model(c)
    add_evaluation(c)
    add_compression(c)
    c.add_argument("--no-forward-timing", dest="time_forward", action="store_false",
                   help="skip the timed plain forward over the calibration set that 'x fwd' divides by (20 min "
                        "with --preset paper on a 2-core CPU); the result's calib_forward_seconds is then null")
    e = sub.add_parser("evaluate", help="perplexity (and zero-shot tasks) of a model")
    add_model(e)
    add_evaluation(e)
    e.add_argument("--calib", help="the calibration text whose development windows --dev-windows reads (default auto)")
    e.add_argument("--calib-samples", type=integer(1), help="how many calibration windows they avoid (default 32)")
    add_sweep_parser(sub)
    add_folder_parsers(sub)
    sub.add_parser("methods", help="list the methods")
    sub.add_parser("allocations", help="list the allocations")
    sub.add_parser("presets", help="what each preset sets, and where each value comes from")
    i = sub.add_parser("info", help="parameter counts and ranks for a ratio, without compressing")
    i.add_argument("--model", default=DEFAULT_MODEL)
    i.add_argument("--ratio", type=number, default=0.2, help=RATIO_HELP)
    i.add_argument("--debug", action="store_true")
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
    keys = ("model", "label", "params_before", "params_after", "ppl_original", "ppl_compressed", "ppl",
            "kl_to_original", "top1_agreement", "dev_ppl_original", "dev_ppl", "seconds", "calib_forward_seconds",
            "output_bytes", "peak_rss_mb")
    lines = [f"{k:>22}: {result[k]}" for k in keys if result.get(k) is not None]
    lines += [f"{'ppl on ' + source:>22}: {ppl}" for source, ppl in (result.get("extra_ppl") or {}).items()]
    if result.get("timings"):
        lines.append(f"{'time':>22}: {describe(result['timings'])}")
    lines += _cost_lines(result.get("cost") or {})
    if result.get("placement", {}).get("mode"):
        lines.append(f"{'placement':>22}: {result['placement']['mode']}")
    for task, scores in (result.get("tasks") or {}).items():
        lines.append(f"{task:>22}: {scores}")
    return "\n".join(lines)


def _cost_lines(cost: dict) -> list[str]:
    """Serving cost, original -> compressed, in the summary's two columns."""
    if cost.get("skipped"):
        return [f"{'serving cost':>22}: {cost['skipped']}"]
    if "prefill_tokens_per_s" in cost:             # evaluate: one model
        return [f"{k.replace('_per_s', '/s'):>22}: {v:.1f}" for k, v in cost.items() if "_per_s" in k]
    if not cost.get("original"):
        return []
    keys = [k for k in cost["original"] if k.endswith("tokens_per_s") or k.startswith("decode_tokens_per_s")]
    return [f"{k.replace('_per_s', '/s'):>22}: {cost['original'][k]:.1f} -> {cost['compressed'][k]:.1f}"
            for k in dict.fromkeys(keys)]


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:       # --help, or a usage error already printed in one line
        return int(done.code or 0)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure is one line; --debug shows the traceback
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ValueError, RuntimeError, OSError)) else f"{type(err).__name__}: {text}"


def _dispatch(args) -> int:
    if args.command in ("methods", "allocations", "presets"):
        print(_listing(args.command))
        return 0
    if args.command == "info":
        print(json.dumps(model_info(args.model, args.ratio), indent=1))
        return 0
    if args.command in FOLDER_COMMANDS:
        return FOLDER_COMMANDS[args.command](args)
    if args.command == "sweep":
        return sweep_command(args)
    checked = plan(config_from_args(args))
    if args.command == "evaluate":
        result = engine.evaluate_model(checked, emit=progress)
    else:
        result = engine.run(checked, emit=progress, measure_forward=args.time_forward).record.to_dict()
    _write(result, args.json_path)
    print(_summary(result))
    return 0


def _listing(what: str) -> str:
    if what == "methods":
        return "\n".join(f"{n:<10} {c.title}\n{'':<10} {c.summary}\n{'':<10} {c.paper}\n" for n, c in REGISTRY.items())
    if what == "allocations":
        return "\n".join(f"{n:<12} {c.title}: {c.summary}\n{'':<12} source: {c.source}\n{'':<12} cost: {c.cost}\n"
                         for n, c in ALLOCATIONS.items())
    lines = []
    for preset in PRESETS.values():
        lines.append(f"{preset.name}: {preset.summary}")
        lines += [f"  {k} = {v!r:<12} {preset.sources.get(k, '')}" for k, v in preset.values.items()]
    return "\n".join(lines)
