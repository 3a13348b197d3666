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


@torch.no_grad()
def window_logprobs(model, batch: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position but the last: [B, L-1, V] in float32."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch.to(device), use_cache=False).logits[:, :-1]
    return F.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, reference=None, batch_size: int = 4, should_stop=None) -> dict:
    """Perplexity of `model` on `windows`; with `reference`, also its perplexity, KL and top-1 agreement."""
    nll = ref_nll = kl = agree = 0.0
    count = 0
    for start in range(0, len(windows), batch_size):
        if should_stop is not None:
            should_stop()
        batch = windows[start:start + batch_size]
        targets = batch[:, 1:].unsqueeze(-1)
        logp = window_logprobs(model, batch)
        nll -= logp.gather(-1, targets.to(logp.device)).sum().item()
        count += targets.numel()
        if reference is not None:
            ref = window_logprobs(reference, batch)
            ref_nll -= ref.gather(-1, targets.to(ref.device)).sum().item()
            kl += (ref.exp() * (ref - logp)).sum().item()
            agree += (ref.argmax(-1) == logp.argmax(-1)).sum().item()
    out = {"ppl": _ppl(nll / count), "tokens": count}
    if reference is not None:
        out.update({"ppl_reference": _ppl(ref_nll / count), "kl_to_original": kl / count,
                    "top1_agreement": agree / count})
    return out


def _ppl(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")
