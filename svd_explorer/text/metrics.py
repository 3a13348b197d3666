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

LOGITS_BYTES = 2**31    # one model's logits per batch at most (Gemma 3's 262k vocabulary: 2 GiB a 2048 window)
POSITIONS = 512         # positions compared at once: the vocabulary-wide temporaries stay a few 512 x V floats


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, reference=None, batch_size: int = 4, should_stop=None,
             progress=None) -> dict:
    """Perplexity of `model` on `windows`; with `reference`, also its perplexity, KL and top-1 agreement.
    `should_stop()` may raise between batches; `progress(windows_done, windows_total)` follows them.
    A batch holds at most LOGITS_BYTES of logits per model (fewer windows for a large vocabulary), and the
    distributions are compared POSITIONS at a time, so memory stays bounded by evaluation_bytes."""
    totals = {"nll": 0.0, "ref_nll": 0.0, "kl": 0.0, "agree": 0.0}
    count = 0
    batch_size = batch_for(windows.shape[1], vocabulary(model), batch_size)
    for start in range(0, len(windows), batch_size):
        if should_stop is not None:
            should_stop()
        if progress is not None:
            progress(start, len(windows))
        batch = windows[start:start + batch_size]
        logits = _logits(model, batch)
        ref_logits = _logits(reference, batch) if reference is not None else None
        for row in range(len(batch)):
            for at in range(0, logits.shape[1], POSITIONS):
                part = slice(at, at + POSITIONS)
                _accumulate(totals, logits[row, part], None if ref_logits is None else ref_logits[row, part],
                            batch[row, 1:][part])
        count += batch[:, 1:].numel()
    out = {"ppl": _ppl(totals["nll"] / count), "tokens": count}
    if reference is not None:
        out.update({"ppl_reference": _ppl(totals["ref_nll"] / count), "kl_to_original": totals["kl"] / count,
                    "top1_agreement": totals["agree"] / count})
    return out


def vocabulary(model) -> int:
    """The size of the model's next-token distribution (its output layer's rows)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def batch_for(seq_len: int, vocab: int, batch_size: int) -> int:
    """Windows per evaluation batch: at most `batch_size`, and at most LOGITS_BYTES of float32 logits."""
    return max(1, min(batch_size, LOGITS_BYTES // (seq_len * vocab * 4)))


def evaluation_bytes(seq_len: int, vocab: int, batch_size: int = 4) -> int:
    """Memory an evaluation against a reference holds beyond the weights: both models' logits for one batch
    and about five POSITIONS x vocab temporaries."""
    return 2 * batch_for(seq_len, vocab, batch_size) * seq_len * vocab * 4 + 5 * POSITIONS * vocab * 4


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
