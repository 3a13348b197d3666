"""What the pipeline produces, as typed records until they are written as JSON.

ProjectionRecord and BlockRecord are what the pipeline emits while it works (the app draws them
live); CompressionRecord is the pipeline's whole output (run/records.py wraps it in a RunRecord).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

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

    @classmethod
    def from_dict(cls, data: dict) -> "CompressionRecord":
        """The record `to_dict()` wrote (extra keys, such as the derived depth_error, are ignored)."""
        values = known_fields(cls, data)
        values["layers"] = [ProjectionRecord(**known_fields(ProjectionRecord, layer) |
                                             {"shape": tuple(layer["shape"])}) for layer in values.get("layers", [])]
        values["blocks"] = [BlockRecord(**known_fields(BlockRecord, block)) for block in values.get("blocks", [])]
        return cls(**values)

    def ranks(self) -> dict[str, dict]:
        return {r.name: {"rank": r.rank, "residual_rank": r.residual_rank} for r in self.layers if r.rank}


def known_fields(cls, data: dict) -> dict:
    """The entries of `data` that are fields of the dataclass `cls`."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def floats(t: torch.Tensor, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in t.detach().double().cpu().tolist()]
