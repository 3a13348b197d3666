"""What a run produces, as typed records until they are written as JSON.

ProjectionRecord and BlockRecord are what the pipeline emits while it works (the app draws them
live); CompressionRecord is the pipeline's whole output; RunRecord is a whole run as the engine
measures it (the CLI's --json, the app's history, a sweep's result files). `to_dict()` gives the
flat dictionary that plots.py and the comparison read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class ProjectionRecord:
    name: str
    block: int
    kind: str
    shape: tuple[int, int]
    rank: int | None
    residual_rank: int
    params_before: int
    params_after: int
    rel_error: float | None
    error_inputs: str | None          # "compressed" (X_c) or "original" (X_f)
    truncated: str | None             # which matrix was truncated, e.g. "W S"
    spectrum_raw: list[float]
    spectrum_truncated: list[float]
    whitening: dict | None = None
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class BlockRecord:
    block: int
    compressed: bool
    rel_error: float          # ‖H_c − H_f‖_F / ‖H_f‖_F after the block
    cosine_distance: float    # mean over tokens of 1 − cos(h_c, h_f)
    refine: dict | None = None
    seconds: float = 0.0


@dataclass
class CompressionRecord:
    method: str
    ratio: float
    options: dict
    layout: str
    params_before: int = 0
    params_after: int = 0
    linear_params_before: int = 0
    linear_params_after: int = 0
    seconds: float = 0.0
    calibration: dict = field(default_factory=dict)
    layers: list[ProjectionRecord] = field(default_factory=list)
    blocks: list[BlockRecord] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    def depth_error(self) -> list[dict]:
        return [{"block": b.block, "rel_error": b.rel_error, "cosine_distance": b.cosine_distance}
                for b in self.blocks]

    def to_dict(self) -> dict:
        return asdict(self) | {"depth_error": self.depth_error()}

    def ranks(self) -> dict[str, dict]:
        return {r.name: {"rank": r.rank, "residual_rank": r.residual_rank} for r in self.layers if r.rank}


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


def label_of(config: dict) -> str:
    allocation = "" if config.get("allocation", "auto") == "auto" else f"+{config['allocation']}"
    refine = {"on": "+refine", "off": "-refine"}.get(config.get("refine", "auto"), "")
    return f"{config.get('method')}{allocation}{refine} {config.get('ratio'):g}"


def floats(t: torch.Tensor, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in t.detach().double().cpu().tolist()]
