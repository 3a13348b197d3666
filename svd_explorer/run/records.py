"""A whole run as the engine measures it (the CLI's --json, the app's history, a sweep's result files).

`to_dict()` gives the flat dictionary that the figures and the comparison read; `from_dict()` reads it
back, so a result file is a typed RunRecord again (the pipeline's part is compress/records.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..compress.records import CompressionRecord, known_fields

SCORES = ("ppl_original", "ppl_compressed", "kl_to_original", "top1_agreement")   # what `scores` holds


@dataclass
class RunRecord:
    """A whole run: its description, what the pipeline did and what the engine measured."""

    config: dict                       # the RunConfig, as JSON
    model: str
    model_revision: str | None
    compression: CompressionRecord
    allocation: dict = field(default_factory=dict)     # name, options, what it decided
    refine: dict | None = None                         # the refinement stage's settings when on
    calib_forward_seconds: float | None = None
    calib_prep_seconds: float = 0.0
    allocation_seconds: float = 0.0
    evaluation: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)         # ppl_original, ppl_compressed, kl_to_original, ...
    extra_ppl: dict = field(default_factory=dict)      # evaluation set -> perplexity of the compressed model
    extra_ppl_original: dict = field(default_factory=dict)
    dev_ppl: float | None = None                       # development text (calibration domain, never calibrated on)
    dev_ppl_original: float | None = None
    tasks: dict | None = None
    placement: dict = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    linalg: dict = field(default_factory=dict)
    output: str | None = None
    output_bytes: int | None = None
    original_bytes: int | None = None
    versions: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    cost: dict = field(default_factory=dict)           # serving cost of both models (model/serving.py)
    timings: dict = field(default_factory=dict)        # seconds per phase and in all (run/timings.py)
    notes: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.compression.seconds

    def to_dict(self) -> dict:
        c = self.compression.to_dict()
        out = {"model": self.model, "model_revision": self.model_revision, "method": c["method"],
               "ratio": c["ratio"], "options": c["options"], "label": label_of(self.config)}
        out |= {k: c[k] for k in ("params_before", "params_after", "linear_params_before", "linear_params_after",
                                  "seconds", "calibration", "layers", "blocks", "depth_error", "extras", "layout")}
        out |= {k: v for k, v in asdict(self).items() if k != "compression"}
        out |= self.scores
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        """The record `to_dict()` wrote, typed again (a sweep's result file, the CLI's --json)."""
        values = known_fields(cls, {k: v for k, v in data.items() if k != "compression"})
        values["scores"] = {k: data[k] for k in SCORES if k in data}
        return cls(compression=CompressionRecord.from_dict(data), **values)


def label_of(config: dict) -> str:
    """'aa-svd + sensitivity, refinement off, 20%': the words a legend needs, no sign that reads as a name."""
    parts = [config.get("method", "?")]
    if config.get("allocation", "auto") != "auto":
        parts[0] += f" + {config['allocation']}"
    refine = {"on": "refinement on", "off": "refinement off"}.get(config.get("refine", "auto"))
    return ", ".join([*parts, *([refine] if refine else []), f"{100 * config.get('ratio', 0):g}%"])
