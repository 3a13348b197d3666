"""Block refinement: a pipeline stage any method can switch on (AA-SVD's end-to-end block tuning).

Once every projection of a block is replaced, all of the block's parameters (low-rank factors, norms,
biases) are tuned so that the compressed block fed the compressed stream reproduces the original
block's output on the original stream: loss = MSE(block'(H_c), block(H_f)). As in AA-SVD's paper and
code: AdamW, weight decay 0.01, gradient clip 1.0, 10% linear warm-up then cosine decay to 0.1x.
A step takes `batch` calibration windows, drawn in a seeded shuffled order. If the tuned block's loss
on the first CHECK_WINDOWS calibration windows is not lower than before, the block is restored: the
stage never makes the objective it minimises worse there. (Ours: AA-SVD's code keeps the tuned block;
the check reads a quarter of the README's 32 windows since reading them all cost one more pass of the
block over the calibration set, a third of a 32-step refinement.) A block whose weights are not float32
is tuned in float32 and cast back (AdamW on bfloat16 weights loses most updates).
The tuned block's outputs on the whole calibration set, computed for the check, are handed back so the
pipeline does not run the block over the compressed stream a second time.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..model.devices import Clock
from ..model.lowrank import LowRankLinear

WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
WARMUP = 0.1      # share of the steps spent in linear warm-up
LR_FLOOR = 0.1    # cosine decay ends at this fraction of the learning rate
PARAMS = ("all", "factors")
CHECK_WINDOWS = 8  # calibration windows the restore check compares the loss on (the leading batches holding them)


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 100
    lr: float = 3e-4
    batch: int = 1
    params: str = "all"   # every block parameter, or only the low-rank factors
    seed: int = 0

    def describe(self) -> dict:
        return asdict(self)


@dataclass
class RefineData:
    """What the stage needs to tune a finished block."""

    inputs: list[torch.Tensor]    # the block's inputs in the compressed stream, per batch
    targets: list[torch.Tensor]   # the ORIGINAL block's outputs on the original stream, per batch
    calls: list                   # the block's call arguments, per batch (pipeline.BlockCall)
    check: object                 # raises Cancelled when the run is stopped
    autocast: object              # the run's precision context

    def steps(self, size: int) -> list[list[tuple]]:
        """The (inputs, targets, call) chunks of each optimizer step, in a fixed order: `size` windows a step
        (the last may hold fewer), cut from one calibration batch or gathered across several (the paper
        preset's 32 windows a step from batches of 8)."""
        groups, current, need = [], [], size
        for x, y, call in zip(self.inputs, self.targets, self.calls):
            rows, r = x.shape[0], 0
            while r < rows:
                stop = min(r + need, rows)
                current.append((x[r:stop], y[r:stop], call if (r, stop) == (0, rows) else call.rows(r, stop, rows)))
                need, r = need - (stop - r), stop
                if need == 0:
                    groups.append(current)
                    current, need = [], size
        return groups + ([current] if current else [])


def lr_multiplier(step: int, total: int) -> float:
    warm = max(1, int(total * WARMUP))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def block_errors(block, data: RefineData, batches: int | None = None) -> tuple[list[float], list[torch.Tensor]]:
    """Per batch (the first `batches`, or all), the summed squared error of the block's output against the
    targets, and the outputs themselves (in the inputs' dtype)."""
    errors, outputs = [], []
    dtype = next(block.parameters()).dtype
    for x, y, call in list(zip(data.inputs, data.targets, data.calls))[:batches]:
        data.check()
        with data.autocast:
            out = call(block, x.to(dtype))
        outputs.append(out.to(x.dtype))
        errors.append(F.mse_loss(out.float(), y.float(), reduction="sum").item())
    return errors, outputs


def checked_batches(data: RefineData) -> int:
    """How many leading batches hold at least CHECK_WINDOWS windows: where the restore check compares."""
    rows = 0
    for i, x in enumerate(data.inputs):
        rows += x.shape[0]
        if rows >= CHECK_WINDOWS:
            return i + 1
    return len(data.inputs)


def mean_error(errors: list[float], data: RefineData, batches: int) -> float:
    return sum(errors[:batches]) / sum(y.numel() for y in data.targets[:batches])


def trainable(block, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    if which == "all":
        return list(block.named_parameters())
    return [(f"{n}.{pn}", p) for n, m in block.named_modules() if isinstance(m, LowRankLinear)
            for pn, p in m.named_parameters(recurse=False) if pn != "bias"]


def adamw(params, lr):
    """Fused AdamW where this torch build has it (3-4x less optimizer time per step on a CPU)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)


def refine_block(block, data: RefineData, settings: RefineSettings) -> tuple[dict, list[torch.Tensor] | None]:
    """Tune `block` in place; returns the losses and whether the block was restored, and the block's outputs
    on the inputs when they are what the block now computes (None when it was tuned in another dtype or
    restored: the caller runs it again)."""
    dtype = next(block.parameters()).dtype
    if dtype != torch.float32:
        block.float()
    try:
        record, outputs = _refine(block, data, settings)
    finally:
        block.to(dtype)
    same = dtype == torch.float32 and all(x.dtype == torch.float32 for x in data.inputs)
    return record, outputs if same and not record["restored"] else None


def _refine(block, data: RefineData, s: RefineSettings) -> tuple[dict, list[torch.Tensor]]:
    clock = Clock(next(block.parameters()).device)
    params = trainable(block, s.params)
    snapshot = {n: p.detach().clone() for n, p in params}
    checked = checked_batches(data)
    before = mean_error(block_errors(block, data, checked)[0], data, checked)
    losses = _train(block, params, data, s)
    errors, outputs = block_errors(block, data)
    after = mean_error(errors, data, checked)
    restored = not after < before
    if restored:
        with torch.no_grad():
            for n, p in params:
                p.copy_(snapshot[n])
    return {"steps": s.steps, "lr": s.lr, "batch": s.batch, "params": s.params, "loss_before": before,
            "loss_after": before if restored else after, "restored": restored,
            "checked_windows": sum(x.shape[0] for x in data.inputs[:checked]),
            "losses": [float(f"{v:.6g}") for v in losses], "seconds": clock.seconds()}, outputs


def _train(block, params, data: RefineData, s: RefineSettings) -> list[float]:
    steps = data.steps(s.batch)
    order: list[int] = []
    generator = torch.Generator().manual_seed(s.seed)
    while len(order) < s.steps:
        order += torch.randperm(len(steps), generator=generator).tolist()
    for _, p in params:
        p.requires_grad_(True)
    optimizer = adamw([p for _, p in params], s.lr)
    losses = []
    try:
        for step in range(s.steps):
            data.check()
            for group in optimizer.param_groups:
                group["lr"] = s.lr * lr_multiplier(step, s.steps)
            optimizer.zero_grad(set_to_none=True)
            losses.append(_accumulate(block, steps[order[step]], data))
            torch.nn.utils.clip_grad_norm_([p for _, p in params], GRAD_CLIP)
            optimizer.step()
    finally:
        for _, p in params:
            p.requires_grad_(False)
            p.grad = None
    return losses


def _accumulate(block, chunks: list[tuple], data: RefineData) -> float:
    """One step's gradient of the mean squared error over its windows, one chunk's backward at a time (a step of
    one chunk takes the plain mean, bit for bit as before steps could span batches)."""
    total, summed = sum(y.numel() for _, y, _ in chunks), 0.0
    for x, y, call in chunks:
        with torch.enable_grad(), data.autocast:
            out = call(block, x.float())
        loss = F.mse_loss(out.float(), y.float()) if len(chunks) == 1 else \
            F.mse_loss(out.float(), y.float(), reduction="sum") / total
        loss.backward()
        summed += loss.item()
    return summed
