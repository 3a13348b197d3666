"""Flags shared by `compress`, `evaluate` and `sweep`, and the RunConfig they describe.

Every count and length is checked by its argument type, before anything loads; method and allocation
options become flags from the registries, so a new plugin's options appear without touching this file.
"""
from __future__ import annotations

import argparse

from ..compress.allocation import ALLOCATIONS
from ..compress.methods import REGISTRY, method_class
from ..compress.quantize import SCHEMES
from ..model.hub import DEFAULT_MODEL, EMBEDDED
from ..run.config import PRECISIONS, PRESETS, REFINE_CHOICES, RunConfig, split_list, with_preset

RATIO_HELP = ("fraction of the parameters of the compressed projections to REMOVE, in (0, 1); a m x n "
              "projection kept at rank k stores k(m+n) numbers instead of mn, so k = floor((1-R) mn/(m+n)), "
              "and above the break-even rank mn/(m+n) nothing is saved")
RUN_FIELDS = {f for f in RunConfig.__dataclass_fields__}


# -- argument types: every count and length is checked here, before anything loads ------------------

def integer(low: int):
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


def windows(text: str):
    return "all" if text.strip().lower() == "all" else integer(0)(text)


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def registry_options(registry) -> dict[str, tuple]:
    """Every option of every entry, once: name -> (Option, entries that accept it, their defaults)."""
    out: dict[str, tuple] = {}
    for name, cls in registry.items():
        for option in cls.options:
            _, owners, defaults = out.setdefault(option.name, (option, [], {}))
            owners.append(name)
            defaults[name] = option.unset or option.default
    return out


def add_options(parser, registry, title: str, prefix: str) -> None:
    group = parser.add_argument_group(title)
    for name, (option, owners, defaults) in registry_options(registry).items():
        shown = option.choices and "|".join("on" if v is True else "off" if v is False else str(v)
                                            for v in option.choices)
        default = next(iter(defaults.values())) if len(set(map(str, defaults.values()))) == 1 else \
            ", ".join(f"{value} for {owner}" for owner, value in defaults.items())
        text = f"{', '.join(owners)}: {option.help}" + (f" [{shown}]" if shown else "") + f" (default {default})"
        group.add_argument(option.flag, dest=f"{prefix}{name}", default=None,
                           help=text.replace("%", "%%"))     # argparse formats help with %


def add_model(parser) -> None:
    parser.add_argument("--model", help=f"{', '.join(EMBEDDED)} (embedded), a Hugging Face id, a local folder or a "
                                        f"compressed-model folder (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", help="a hub model's branch, tag or commit (default: its main branch)")
    parser.add_argument("--device", help="auto (an accelerator when present), cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", help="weights: auto (float32 on a CPU, bfloat16 on an accelerator), float32, "
                                        "bfloat16 or float16; statistics and decompositions stay float32/64")
    parser.add_argument("--offload", choices=("auto", "none", "cpu", "disk"),
                        help="keep the decoder blocks in CPU memory or on disk and compute one block at a time; "
                             "auto does it when the model does not fit")
    parser.add_argument("--offload-folder", help="folder for --offload disk (default: the user cache)")


def add_evaluation(parser) -> None:
    parser.add_argument("--seq-len", type=integer(2), help="tokens per window (demo 512, paper 2048)")
    parser.add_argument("--seed", type=integer(0), help="seed of the calibration windows (default 0)")
    parser.add_argument("--eval", dest="eval_source",
                        help="evaluation text: wikitext2, ptb, self, a file, none, or auto (wikitext2 when "
                             "available, else self)")
    parser.add_argument("--eval-windows", type=windows,
                        help="consecutive windows of --seq-len tokens, or all (demo 20, paper all)")
    parser.add_argument("--extra-eval", type=split_list, help="more evaluation sets for perplexity: ptb, lambada, "
                                                              "wikitext2, files (comma separated)")
    parser.add_argument("--dev-windows", type=integer(0), help="development windows: calibration-domain text the "
                                                               "calibration never saw, where settings are chosen")
    parser.add_argument("--search-windows", type=integer(1), help="development windows of 256 tokens a search "
                        "(sensitivity, depth) scores its candidates on (default 4); reported ones avoid them")
    parser.add_argument("--tasks", type=split_list, help="zero-shot tasks through lm-eval, comma separated")
    parser.add_argument("--limit", type=integer(1), help="examples per zero-shot task")
    parser.add_argument("--task-data", help="folder of the local task files (default ../shared/data)")
    parser.add_argument("--json", dest="json_path", help="write the result as JSON to this file")
    parser.add_argument("--quantize", choices=SCHEMES, help="weight-only quantisation of the decoder blocks through "
                        "torchao, after compression (compress) or alone (evaluate): none, int8, int4")
    parser.add_argument("--no-cost", dest="cost", action="store_const", const=False,
                        help="skip the serving-cost measure (prefill and decode speed, a few seconds a model)")
    parser.add_argument("--preset", choices=list(PRESETS), default="demo",
                        help="demo: today's CPU defaults; paper: the seed papers' protocol (explicit flags win)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def add_compression(c) -> None:
    c.add_argument("--method", required=True, help=f"one of: {', '.join(REGISTRY)} (erc-svd = ressvd)")
    c.add_argument("--ratio", type=number, required=True, help=RATIO_HELP)
    c.add_argument("--allocation", help=f"where the rank goes: auto (the method's own), {', '.join(ALLOCATIONS)}")
    c.add_argument("--refine", choices=REFINE_CHOICES, help="block refinement stage: auto (on for aa-svd only)")
    c.add_argument("--refine-steps", type=integer(0), help="refinement steps per block (demo 100, paper 200)")
    c.add_argument("--refine-lr", type=number, help="peak learning rate of refinement (demo 3e-4, paper 1e-4)")
    c.add_argument("--refine-batch", type=integer(1),
                   help="calibration windows per refinement step (demo 1, paper 32)")
    c.add_argument("--refine-params", choices=("all", "factors"), help="what refinement tunes (default all)")
    c.add_argument("--calib", help="calibration text: wikitext2, boolq, self, ptb, a file, or auto (boolq with the "
                                   "data folder, else wikitext2 when the hub is reachable, else self)")
    c.add_argument("--calib-samples", type=integer(1), help="random calibration windows (demo 32, paper 256)")
    c.add_argument("--batch-size", type=integer(1), help="windows per forward pass (default 8)")
    c.add_argument("--precision", choices=PRECISIONS, help="arithmetic of the calibration passes: bfloat16 "
                                                           "autocast or float32; auto = bfloat16 where it is fast")
    c.add_argument("--stats-cache", help="folder of cached original-stream statistics (default: the user cache)")
    c.add_argument("--no-stats-cache", dest="stats_cache", action="store_const", const="off",
                   help="compute statistics in the run and keep nothing on disk")
    c.add_argument("--output", help="save the compressed model to this (empty) folder")
    c.add_argument("--save-dtype", choices=("bfloat16", "float16", "float32"), help="dtype of the saved factors "
                                                                                    "(default bfloat16)")
    c.add_argument("--force", action="store_true", default=None, help="overwrite a non-empty --output folder")
    c.add_argument("--merge", action="store_true", default=None,
                   help="--output gets a standard dense checkpoint (the factors multiplied back: same quality, "
                        "no savings)")
    add_options(c, REGISTRY, "method options (each applies to the methods named)", "opt_")
    add_options(c, ALLOCATIONS, "allocation options (each applies to the allocations named)", "alloc_")
    c.add_argument("--last-layers", dest="alloc_blocks", help="ressvd's K, the same as --blocks")


def config_from_args(args) -> RunConfig:
    """The RunConfig the flags describe: the preset, then every flag the user gave."""
    values = vars(args)
    explicit = {k: v for k, v in values.items() if k in RUN_FIELDS and v is not None and k != "preset"}
    if explicit.get("eval_windows") == "all":
        explicit["eval_windows"] = None
    options = {k[4:]: v for k, v in values.items() if k.startswith("opt_") and v is not None}
    allocation = {k[6:]: v for k, v in values.items() if k.startswith("alloc_") and v is not None}
    if options:
        explicit["options"] = accepted(values.get("method"), options)
    if allocation:
        explicit["allocation_options"] = allocation
    for key in ("tasks", "extra_eval"):
        if key in explicit:
            explicit[key] = tuple(explicit[key])
    return with_preset(values.get("preset") or "demo", **explicit)


def accepted(method: str | None, options: dict) -> dict:
    cls = method_class(method or "")
    names = {o.name for o in cls.options}
    wrong = sorted(set(options) - names)
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ValueError(f"{flags} does not apply to method {cls.name} "
                         f"(its options: {', '.join('--' + n.replace('_', '-') for n in names) or 'none'})")
    return options
