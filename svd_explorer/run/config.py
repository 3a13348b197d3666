"""One description of a run, built alike by the CLI, the app, the benchmarks and the sweeps.

A RunConfig is plain data: it round-trips through JSON and is recorded in every result and
manifest. `options` holds the method options the user set (the result records all of them, defaults
included). A preset fills what the user did not set: `demo` is what a CPU runs in minutes, `paper`
the seed papers' protocol; explicit values always win (`with_preset`).
`plan(config)` (plan.py) checks it once, before anything loads.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field

from ..compress.allocation import Allocation, allocation_for
from ..compress.methods import Method, get_method
from ..errors import ConfigError
from ..model import hub
from ..model.hub import DEFAULT_MODEL
from .records import label_of

REFINE_CHOICES = ("auto", "on", "off")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class RunConfig:
    model: str = DEFAULT_MODEL
    revision: str | None = None
    method: str = "svd-llm"
    options: dict = field(default_factory=dict)           # method options the user set
    ratio: float = 0.2
    allocation: str = "auto"                               # auto: the method's own (uniform; depth for ressvd)
    allocation_options: dict = field(default_factory=dict)
    refine: str = "auto"                                   # auto: the method's default (on for aa-svd)
    refine_steps: int = 100
    refine_lr: float = 3e-4
    refine_batch: int = 1
    refine_params: str = "all"
    calib: str = "auto"
    calib_samples: int = 32
    seq_len: int = 512
    seed: int = 0
    eval_source: str = "auto"
    eval_windows: int | None = 20                          # None: the whole test text
    extra_eval: tuple = ()                                 # more evaluation sets, perplexity only (ptb, lambada...)
    dev_windows: int = 0                                   # development windows, calibration domain, disjoint: dev_ppl
    search_windows: int = 4                                # development windows searches score on (reports avoid them)
    tasks: tuple = ()
    limit: int | None = None
    task_data: str | None = None
    batch_size: int = 8
    precision: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "auto"
    offload_folder: str | None = None
    stats_cache: str | None = None                         # a folder; None: the user cache; "off": no cache
    output: str | None = None
    save_dtype: str = "bfloat16"
    quantize: str = "none"                                 # weight-only after compression: none, int8, int4
    cost: bool = True                                      # measure serving cost (prefill, decode, memory, bytes)
    merge: bool = False                                    # --output gets a dense checkpoint instead of the factors
    force: bool = False
    preset: str = "demo"

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["tasks"], out["extra_eval"] = list(self.tasks), list(self.extra_eval)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown run setting(s) {unknown}; known: {', '.join(sorted(known))}")
        data = dict(data)
        for key in ("tasks", "extra_eval"):
            if key in data:
                data[key] = tuple(split_list(data[key]))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # -- what the run will use ----------------------------------------------------------------

    def build_method(self) -> Method:
        return get_method(self.method, **self.options)

    def build_allocation(self, method: Method | None = None) -> Allocation:
        return allocation_for(method or self.build_method(), self.allocation, self.allocation_options)

    def refines(self, method=None) -> bool:
        method = method or self.build_method()
        return method.refines_by_default if self.refine == "auto" else self.refine == "on"

    def label(self) -> str:
        """A short name for lists and legends: method, allocation when not the default, ratio."""
        return label_of(self.to_dict())


FLAG_NAMES = {"eval_source": "--eval"}   # fields whose command-line flag is not --field-name


def command_line(config: RunConfig) -> str:
    """The `python -m svd_explorer compress` line that describes `config`: its preset and every value that
    differs from the preset's, quoted for a shell (a saved model's card quotes it; a test parses it back)."""
    base = (with_preset(config.preset) if config.preset in PRESETS else RunConfig()).to_dict()
    words = ["python -m svd_explorer compress", f"--preset {config.preset}"]
    for name, value in config.to_dict().items():
        if name in ("preset", "options", "allocation_options") or (value == base.get(name) and
                                                                      name not in ("method", "ratio")):
            continue
        words.append(_flag(name, value))
    words += [_option_flag(k, v) for k, v in {**config.options, **config.allocation_options}.items()]
    return " ".join(w for w in words if w)


def _flag(name: str, value) -> str:
    flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    if name == "cost":
        return "" if value else "--no-cost"
    if isinstance(value, bool):
        return flag if value else ""
    if value is None:
        return f"{flag} all" if name == "eval_windows" else ""
    if name == "stats_cache" and value == "off":
        return "--no-stats-cache"
    return f"{flag} {shlex.quote(','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))}"


def _option_flag(name: str, value) -> str:
    """A method or allocation option as its flag; on/off for a switch (a bare flag takes no value)."""
    if value is None:
        return ""
    text = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return f"--{name.replace('_', '-')} {shlex.quote(text)}"


def split_list(value) -> list[str]:
    """'a, b' or ['a', 'b'] -> ['a', 'b']."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(v).strip() for v in items if str(v).strip()]


# ---------------------------------------------------------------------------------------------
# Presets: what they set and where each value comes from
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    values: dict
    sources: dict   # field -> where the value comes from


PRESETS = {
    "demo": Preset(
        "demo", "what a laptop CPU runs in minutes (today's defaults)",
        {"calib": "auto", "calib_samples": 32, "seq_len": 512, "eval_source": "auto", "eval_windows": 20,
         "refine_steps": 100, "refine_lr": 3e-4, "refine_batch": 1},
        {"calib": "BoolQ passages (Wikipedia paragraphs) from the data folder, else WikiText-2 train from the hub, "
                  "else text sampled from the model",
         "calib_samples": "32 x 512 tokens: 1/32 of the papers' calibration, a few minutes on a CPU",
         "seq_len": "32 x 512 tokens: 1/32 of the papers' calibration, a few minutes on a CPU",
         "eval_source": "WikiText-2 test (hub or local copy), else text sampled from the model",
         "eval_windows": "the first 20 x 512 tokens of WikiText-2 test",
         "refine_steps": "chosen on held-out calibration-domain text (bench/dev_select.py)",
         "refine_lr": "chosen on held-out calibration-domain text (bench/dev_select.py)",
         "refine_batch": "one window per step, to fit a CPU"}),
    "paper": Preset(
        "paper", "the seed papers' protocol (SVD-LLM, AA-SVD, SAES-SVD): for a GPU",
        {"calib": "wikitext2", "calib_samples": 256, "seq_len": 2048, "eval_source": "wikitext2", "eval_windows": None,
         "refine_steps": 200, "refine_lr": 1e-4, "refine_batch": 32},
        {"calib": "WikiText-2 train (SVD-LLM §4, AA-SVD §5); offline: the demo's calibration text, with a note",
         "calib_samples": "256 random windows (SVD-LLM, AA-SVD, SAES-SVD)",
         "seq_len": "2048 tokens (SVD-LLM, AA-SVD, SAES-SVD)",
         "eval_source": "WikiText-2 test, token perplexity on non-overlapping windows (all three papers)",
         "eval_windows": "the whole test text at 2048 tokens",
         "refine_steps": "25 epochs x 8 batches (AA-SVD code: epochs=25, 8 batches of 32 windows)",
         "refine_lr": "1e-4 with 10% warm-up and cosine decay to 0.1x (AA-SVD code)",
         "refine_batch": "32 windows per step: 256 calibration windows in 8 batches (AA-SVD code)"}),
}


def with_preset(preset: str = "demo", **explicit) -> RunConfig:
    """A RunConfig from a preset and the values the user gave (every keyword is explicit, None included:
    eval_windows=None means the whole test text); explicit values win.

    The paper preset calibrates on WikiText-2 train, which only the hub has: offline, and unless the
    user chose a calibration source, it falls back to the demo's (the result's calibration says so)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset].values)
    if preset == "paper" and "calib" not in explicit:
        if not hub.hub_reachable():
            values["calib"] = "auto"
    return RunConfig.from_dict({**values, **explicit, "preset": preset})
