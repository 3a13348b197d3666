"""Data-free text: windows the model samples itself, kept on disk and reused.

Sampling is the slow part of a run without a data folder (50 of 101 s for the page's default run on a
2-core CPU): every token is one forward of the whole model. The windows depend only on the model's weights,
the tokenizer, the count, the length, the seed and the batch size, so a second run of the same model and
seed (another method, another ratio, another visitor) reads them back in milliseconds. The key includes a
digest of every parameter (a strided slice), the config and the device kind, so another revision of the
model, or another device, samples again. Files are
a few KB (int32 token ids); the folder keeps the newest MAX_FILES.
"""
from __future__ import annotations

import hashlib
import pickle
import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..errors import DataError
from ..files import cache_dir, modified_time, write_atomically
from ..model.devices import model_device

MAX_FILES = 64
BATCH = 16


def sampled_windows(model, tokenizer, count: int, length: int, seed: int, progress=None,
                    reuse: bool = True) -> torch.Tensor:
    """[count, length] token ids sampled from `model` (read back when the same sample was drawn before)."""
    path = cache_dir("text") / f"{sample_key(model, tokenizer, count, length, seed)}.pt"
    if reuse and path.exists():
        try:
            path.touch()
            return torch.load(path, weights_only=True).long()
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            path.unlink(missing_ok=True)      # a damaged file is sampled again
    windows = sample(model, tokenizer, count, length, seed, progress)
    if reuse:
        write_atomically(path, lambda partial: torch.save(windows.to(torch.int32), partial))
        _prune(path.parent)
    return windows


def sample_key(model, tokenizer, count: int, length: int, seed: int) -> str:
    """What the sample depends on, as a hex digest: the weights (a strided slice of every parameter), the
    config and generation config, the device kind (a CPU and a GPU draw different tokens from one seed)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        h.update(name.encode())
        h.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    h.update(model.config.to_json_string(use_diff=False).encode())
    generation = getattr(model, "generation_config", None)
    h.update((generation.to_json_string() if generation is not None else "").encode())
    h.update(f"{len(tokenizer)}|{start_token(tokenizer)}|{count}|{length}|{seed}|{BATCH}|{torch.__version__}|"
             f"{model_device(model).type}".encode())
    return h.hexdigest()[:32]


def start_token(tokenizer) -> int:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise DataError("'self' sampling needs a BOS or EOS token in the tokenizer")
    return start


@torch.no_grad()
def sample(model, tokenizer, count: int, length: int, seed: int, progress=None) -> torch.Tensor:
    """The model continues a BOS (or EOS) token with plain sampling, BATCH rows at a time.

    `progress(tokens_done, tokens_total)` is called at every generated token; it may raise to stop."""
    start, device = start_token(tokenizer), model_device(model)
    torch.manual_seed(seed)
    rows = []

    class Report(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if progress is not None:
                progress(sum(r.numel() for r in rows) + input_ids.shape[0] * (input_ids.shape[1] - 1), count * length)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    for i in range(0, count, BATCH):
        n = min(BATCH, count - i)
        prompt = torch.full((n, 1), start, dtype=torch.long, device=device)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, max_new_tokens=length, min_new_tokens=length,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
                             stopping_criteria=StoppingCriteriaList([Report()]))
        rows.append(out[:, 1:length + 1].cpu())
    return torch.cat(rows)


def _prune(folder) -> None:
    """Keep the MAX_FILES most recently used samples; partial files of writes that died go too."""
    files = sorted(folder.glob("*.pt"), key=modified_time, reverse=True)
    stale = [f for f in folder.glob("*.partial") if modified_time(f) < time.time() - 3600]
    for old in files[MAX_FILES:] + stale:
        old.unlink(missing_ok=True)
