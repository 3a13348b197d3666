"""Perplexity, and fidelity to the original model (KL divergence, top-1 agreement).

Perplexity follows the papers' protocol: token level, over non-overlapping windows of the
sequence length cut from the concatenated test text; within a window every token but the first is
predicted from the ones before it; PPL = exp(mean NLL over all predicted tokens).
KL(P_original ‖ P_compressed) and top-1 agreement need no labels: they compare the two models'
next-token distributions at the same positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model.devices import model_device


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, reference=None, batch_size: int = 4, should_stop=None,
             progress=None) -> dict:
    """Perplexity of `model` on `windows`; with `reference`, also its perplexity, KL and top-1 agreement.
    `should_stop()` may raise between batches; `progress(windows_done, windows_total)` follows them.
    The vocabulary-sized distributions are compared one window at a time, so memory holds one batch of
    logits per model and a few window-sized temporaries."""
    totals = {"nll": 0.0, "ref_nll": 0.0, "kl": 0.0, "agree": 0.0}
    count = 0
    for start in range(0, len(windows), batch_size):
        if should_stop is not None:
            should_stop()
        if progress is not None:
            progress(start, len(windows))
        batch = windows[start:start + batch_size]
        logits = _logits(model, batch)
        ref_logits = _logits(reference, batch) if reference is not None else None
        for row in range(len(batch)):
            _accumulate(totals, logits[row], None if ref_logits is None else ref_logits[row], batch[row, 1:])
        count += batch[:, 1:].numel()
    out = {"ppl": _ppl(totals["nll"] / count), "tokens": count}
    if reference is not None:
        out.update({"ppl_reference": _ppl(totals["ref_nll"] / count), "kl_to_original": totals["kl"] / count,
                    "top1_agreement": totals["agree"] / count})
    return out


def _logits(model, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch.to(model_device(model)), use_cache=False).logits[:, :-1]


def _accumulate(totals: dict, logits, ref_logits, targets) -> None:
    logp = F.log_softmax(logits.float(), dim=-1)
    targets = targets.to(logp.device).unsqueeze(-1)
    totals["nll"] -= logp.gather(-1, targets).sum().item()
    if ref_logits is not None:
        ref = F.log_softmax(ref_logits.float(), dim=-1)
        totals["ref_nll"] -= ref.gather(-1, targets).sum().item()
        totals["kl"] += (ref.exp() * (ref - logp)).sum().item()
        totals["agree"] += (ref.argmax(-1) == logp.argmax(-1)).sum().item()


def _ppl(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")
