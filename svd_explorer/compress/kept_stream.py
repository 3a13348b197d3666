"""The original model's block outputs, kept by a pass that computed them anyway.

A run that computes its statistics runs every original block over the calibration set; the pipeline
then needs each block's original output again (the refinement's targets, the next block's input), one
more forward of the model. When both passes cut the same windows into the same batches with the same
precision, the statistics pass keeps its outputs here and the pipeline takes them instead (the same
tensors, bit for bit: a test compares the compressed models). Ours, not a paper's: a saving of about one
calibration forward, bounded so a large model, a large calibration set or little free memory simply
keeps nothing.
"""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from ..model.offload import free_memory

LIMIT_VARIABLE, LIMIT_MB = "SVD_EXPLORER_KEEP_OUTPUTS_MB", 2048


def limit_bytes() -> int:
    """The most the kept outputs may hold: SVD_EXPLORER_KEEP_OUTPUTS_MB (default 2048; 0 keeps nothing: less
    memory, one forward more, as bench/allocations.py kept compares), and never more than a quarter of the
    memory free when the first block's arrive; beyond it nothing is kept and the pipeline recomputes them."""
    text = os.environ.get(LIMIT_VARIABLE, str(LIMIT_MB))
    try:
        megabytes = int(text)
    except ValueError:
        raise ConfigError(f"{LIMIT_VARIABLE} must be a whole number of MiB, got {text!r}") from None
    return max(0, megabytes) << 20


class KeptStream:
    """Per block, the original block's outputs on each calibration batch; each block's are handed out once."""

    def __init__(self, blocks: int, limit: int):
        self.blocks, self.limit = blocks, limit
        self.outputs: list[list[torch.Tensor] | None] | None = []
        self.taken, self.refused = 0, ""

    def keep(self, outputs: list[torch.Tensor]) -> None:
        """Keep one more block's outputs; nothing at all when every block's would pass the bound (known from
        the first block's, since all blocks give outputs of one shape)."""
        if self.outputs is None or not outputs:
            return
        if not self.outputs:
            need = self.blocks * sum(t.numel() * t.element_size() for t in outputs)
            room = min(self.limit, free_memory(outputs[0].device) // 4)
            if need > room:
                self.outputs, self.refused = None, f"they would take {need >> 20} MiB, over the {room >> 20} allowed"
                return
        self.outputs.append(list(outputs))

    def take(self, block: int, batches: int) -> list[torch.Tensor] | None:
        """Block `block`'s outputs on the first `batches` batches, then forgotten (None when not kept)."""
        if self.outputs is None or block >= len(self.outputs) or self.outputs[block] is None:
            return None
        outputs, self.outputs[block] = self.outputs[block], None
        if len(outputs) < batches:
            return None
        self.taken += 1
        return outputs[:batches]

    def describe(self) -> str:
        """For the run record: where the pipeline's original-stream outputs came from."""
        if self.taken:
            return f"kept from the statistics pass ({self.taken} of {self.blocks} blocks)"
        return f"computed by the pipeline ({self.refused})" if self.refused else "computed by the pipeline"
