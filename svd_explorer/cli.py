"""Command line: python -m svd_explorer {compress,evaluate,sweep,info,methods,allocations,presets} ...

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

from .allocation import ALLOCATIONS
from .config import DEFAULT_MODEL, PRECISIONS, PRESETS, REFINE_CHOICES, RunConfig, split_list, with_preset
from .methods import REGISTRY

RATIO_HELP = ("fraction of the parameters of the compressed projections to REMOVE, in (0, 1); a m x n "
              "projection kept at rank k stores k(m+n) numbers instead of mn, so k = floor((1-R) mn/(m+n)), "
              "and above the break-even rank mn/(m+n) nothing is saved")
RUN_FIELDS = {f for f in RunConfig.__dataclass_fields__}


# -- argument types: every count and length is checked here, before anything loads ------------------

def _integer(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _windows(text: str):
    return "all" if text.strip().lower() == "all" else _integer(0)(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _registry_options(registry) -> dict[str, tuple]:
    """Every option of every entry, once: name -> (Option, entries that accept it)."""
    out: dict[str, tuple] = {}
    for name, cls in registry.items():
        for option in cls.options:
            out.setdefault(option.name, (option, []))[1].append(name)
    return out


def _add_options(parser, registry, title: str, prefix: str) -> None:
    group = parser.add_argument_group(title)
    for name, (option, owners) in _registry_options(registry).items():
        shown = option.choices and "|".join("on" if v is True else "off" if v is False else str(v)
                                            for v in option.choices)
        group.add_argument(option.flag, dest=f"{prefix}{name}", default=None,
                           help=f"{', '.join(owners)}: {option.help}" + (f" [{shown}]" if shown else "") +
                           f" (default {option.unset or option.default})")


def _add_model(parser) -> None:
    parser.add_argument("--model", help=f"{DEFAULT_MODEL} (embedded), a Hugging Face id, a local folder or a "
                                        f"compressed-model folder (default {DEFAULT_MODEL})")
    parser.add_argument("--device", help="auto (an accelerator when present), cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", help="weights: auto (float32 on a CPU, bfloat16 on an accelerator), float32, "
                                        "bfloat16 or float16; statistics and decompositions stay float32/64")
    parser.add_argument("--offload", choices=("auto", "none", "cpu", "disk"),
                        help="keep the decoder blocks in CPU memory or on disk and compute one block at a time; "
                             "auto does it when the model does not fit")
    parser.add_argument("--offload-folder", help="folder for --offload disk (default: the user cache)")


def _add_evaluation(parser) -> None:
    parser.add_argument("--seq-len", type=_integer(2), help="tokens per window (demo 512, paper 2048)")
    parser.add_argument("--seed", type=_integer(0), help="seed of the calibration windows (default 0)")
    parser.add_argument("--eval", dest="eval_source",
                        help="evaluation text: wikitext2, ptb, self, a file, none, or auto (wikitext2 when "
                             "available, else self)")
    parser.add_argument("--eval-windows", type=_windows,
                        help="consecutive windows of --seq-len tokens, or all (demo 20, paper all)")
    parser.add_argument("--extra-eval", type=split_list, help="more evaluation sets for perplexity: ptb, lambada, "
                                                              "wikitext2, files (comma separated)")
    parser.add_argument("--dev-windows", type=_integer(0), help="development windows: calibration-domain text the "
                                                               "calibration never saw, where settings are chosen")
    parser.add_argument("--search-windows", type=_integer(1), help="development windows of 256 tokens a search "
                        "(sensitivity, depth) scores its candidates on (default 4); reported ones avoid them")
    parser.add_argument("--tasks", type=split_list, help="zero-shot tasks through lm-eval, comma separated")
    parser.add_argument("--limit", type=_integer(1), help="examples per zero-shot task")
    parser.add_argument("--task-data", help="folder of the local task files (default ../shared/data)")
    parser.add_argument("--json", dest="json_path", help="write the result as JSON to this file")
    parser.add_argument("--preset", choices=list(PRESETS), default="demo",
                        help="demo: today's CPU defaults; paper: the seed papers' protocol (explicit flags win)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _add_compression(c) -> None:
    c.add_argument("--method", required=True, help=f"one of: {', '.join(REGISTRY)} (erc-svd = ressvd)")
    c.add_argument("--ratio", type=_number, required=True, help=RATIO_HELP)
    c.add_argument("--allocation", help=f"where the rank goes: auto (the method's own), {', '.join(ALLOCATIONS)}")
    c.add_argument("--refine", choices=REFINE_CHOICES, help="block refinement stage: auto (on for aa-svd only)")
    c.add_argument("--refine-steps", type=_integer(0), help="refinement steps per block (demo 100, paper 200)")
    c.add_argument("--refine-lr", type=_number, help="peak learning rate of refinement (demo 3e-4, paper 1e-4)")
    c.add_argument("--refine-batch", type=_integer(1),
                   help="calibration windows per refinement step (demo 1, paper 32)")
    c.add_argument("--refine-params", choices=("all", "factors"), help="what refinement tunes (default all)")
    c.add_argument("--calib", help="calibration text: wikitext2, boolq, self, ptb, a file, or auto (boolq with the "
                                   "data folder, else wikitext2 when the hub is reachable, else self)")
    c.add_argument("--calib-samples", type=_integer(1), help="random calibration windows (demo 32, paper 256)")
    c.add_argument("--batch-size", type=_integer(1), help="windows per forward pass (default 8)")
    c.add_argument("--precision", choices=PRECISIONS, help="arithmetic of the calibration passes: bfloat16 "
                                                           "autocast or float32; auto = bfloat16 where it is fast")
    c.add_argument("--stats-cache", help="folder of cached original-stream statistics (default: the user cache)")
    c.add_argument("--no-stats-cache", dest="stats_cache", action="store_const", const="off",
                   help="compute statistics in the run and keep nothing on disk")
    c.add_argument("--output", help="save the compressed model to this (empty) folder")
    c.add_argument("--save-dtype", choices=("bfloat16", "float16", "float32"), help="dtype of the saved factors "
                                                                                    "(default bfloat16)")
    c.add_argument("--force", action="store_true", default=None, help="overwrite a non-empty --output folder")
    _add_options(c, REGISTRY, "method options (each applies to the methods named)", "opt_")
    _add_options(c, ALLOCATIONS, "allocation options (each applies to the allocations named)", "alloc_")
    c.add_argument("--last-layers", dest="alloc_blocks", help="ressvd's K, the same as --blocks")


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
    _add_model(c)
    _add_evaluation(c)
    _add_compression(c)
    e = sub.add_parser("evaluate", help="perplexity (and zero-shot tasks) of a model")
    _add_model(e)
    _add_evaluation(e)
    e.add_argument("--calib", help="the calibration text whose development windows --dev-windows reads (default auto)")
    e.add_argument("--calib-samples", type=_integer(1), help="how many calibration windows they avoid (default 32)")
    from .sweep import add_sweep_parser

    add_sweep_parser(sub)
    sub.add_parser("methods", help="list the methods")
    sub.add_parser("allocations", help="list the allocations")
    sub.add_parser("presets", help="what each preset sets, and where each value comes from")
    i = sub.add_parser("info", help="parameter counts and ranks for a ratio, without compressing")
    i.add_argument("--model", default=DEFAULT_MODEL)
    i.add_argument("--ratio", type=_number, default=0.2, help=RATIO_HELP)
    i.add_argument("--debug", action="store_true")
    return parser


def config_from_args(args) -> RunConfig:
    """The RunConfig the flags describe: the preset, then every flag the user gave."""
    values = vars(args)
    explicit = {k: v for k, v in values.items() if k in RUN_FIELDS and v is not None and k != "preset"}
    if explicit.get("eval_windows") == "all":
        explicit["eval_windows"] = None
    options = {k[4:]: v for k, v in values.items() if k.startswith("opt_") and v is not None}
    allocation = {k[6:]: v for k, v in values.items() if k.startswith("alloc_") and v is not None}
    if options:
        explicit["options"] = _accepted(values.get("method"), options)
    if allocation:
        explicit["allocation_options"] = allocation
    for key in ("tasks", "extra_eval"):
        if key in explicit:
            explicit[key] = tuple(explicit[key])
    return with_preset(values.get("preset") or "demo", **explicit)


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
    if result.get("placement", {}).get("mode"):
        lines.append(f"{'placement':>22}: {result['placement']['mode']}")
    for task, scores in (result.get("tasks") or {}).items():
        lines.append(f"{task:>22}: {scores}")
    return "\n".join(lines)


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
    from . import engine

    if args.command in ("methods", "allocations", "presets"):
        print(_listing(args.command))
        return 0
    if args.command == "info":
        print(json.dumps(engine.model_info(args.model, args.ratio), indent=1))
        return 0
    if args.command == "sweep":
        from .sweep import main as sweep_main

        return sweep_main(args)
    config = config_from_args(args)
    if args.command == "evaluate":
        result = engine.evaluate_model(config.validate(), emit=progress)
    else:
        result = engine.run(config, emit=progress).record.to_dict()
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


def _accepted(method: str | None, options: dict) -> dict:
    from .methods import method_class

    cls = method_class(method or "")
    names = {o.name for o in cls.options}
    wrong = sorted(set(options) - names)
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ValueError(f"{flags} does not apply to method {cls.name} "
                         f"(its options: {', '.join('--' + n.replace('_', '-') for n in names) or 'none'})")
    return options
