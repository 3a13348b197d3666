"""Gradients of the language-model loss with respect to the projections' weights, one window at a time.

FWSVD sums their squares per input channel (its Fisher importances); the `zero-sum` allocation averages
them (its first-order scores). One backward pass per window (batch of one), the loss the mean next-token
cross-entropy of the window; only the projections' weights ask for gradients. The model must be in memory
(not offloaded); gradients come back in PyTorch's [out, in] layout (GPT-2's Conv1D transposed).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def window_gradients(model, projections, windows: torch.Tensor, check=lambda: None) -> Iterator[dict]:
    """Yield {projection name: ∂L/∂W [out, in]} for each window of token ids [count, length]."""
    modules = {p.name: model.get_submodule(p.name) for p in projections}
    params = [m.weight for m in modules.values()]
    device = params[0].device
    for p in params:
        p.requires_grad_(True)
    try:
        for row in windows:
            check()
            ids = row[None].to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            grads = torch.autograd.grad(loss, params)
            yield {name: g.t() if type(module).__name__ == "Conv1D" else g        # Conv1D stores W transposed
                   for (name, module), g in zip(modules.items(), grads)}
    finally:
        for p in params:
            p.requires_grad_(False)


def summed_over_windows(model, projections, windows: torch.Tensor, each, check=lambda: None) -> dict:
    """{projection name: Σ_windows each(∂L/∂W)}: one accumulation for every statistic of the gradients."""
    sums: dict[str, torch.Tensor] = {}
    for grads in window_gradients(model, projections, windows, check):
        for name, g in grads.items():
            value = each(g)
            sums[name] = sums[name] + value if name in sums else value
    return sums


def mean_gradients(model, projections, windows: torch.Tensor, check=lambda: None) -> dict[str, torch.Tensor]:
    """The mean over windows of each projection's gradient (float32, on the model's device)."""
    sums = summed_over_windows(model, projections, windows, lambda g: g.float(), check)
    return {name: g / len(windows) for name, g in sums.items()}


def dropped_component_scores(weight: torch.Tensor, directions: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """First-order change of the loss when each singular component of A = W T is dropped (ZS-SVD's ΔL_i).

    Dropping component i removes u_i u_iᵀ W from W (`directions` = U, columns by decreasing σ), so
    ΔL_i ≈ −⟨G, u_i u_iᵀ W⟩ = −(Uᵀ G)_i · (Uᵀ W)_i. Positive: the loss is predicted to rise. Same value as
    the paper's −σ_i u_iᵀ (G T⁻ᵀ) v_i, without inverting T."""
    u = directions.double()
    return -((u.T @ gradient.double()) * (u.T @ weight.double())).sum(1)
