"""Calibration and evaluation text: named datasets, local files, tokenised windows.

A text source is one of:
  wikitext2      WikiText-2 raw via `datasets` (train split for calibration, test for evaluation);
                 offline, the test split falls back to the copy in the data folder
  ptb            Penn Treebank test (hub, or the copy in the data folder)
  boolq          the BoolQ passages (Wikipedia paragraphs) from the data folder: offline calibration
  self           text sampled from the original model itself: data-free, always works offline
  PATH           a .txt / .raw file (CRLF tolerated), a .jsonl with a "text" field, or a .parquet
The data folder is $SVD_EXPLORER_DATA, else ../shared/data beside the project when it exists.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NAMED_SOURCES = ("wikitext2", "ptb", "boolq", "self")


class DataError(ValueError):
    """Text that cannot be read or is too short; the message says what to do."""


def data_dir() -> Path | None:
    """The folder with the offline datasets, or None (a user's clone usually has none)."""
    env = os.environ.get("SVD_EXPLORER_DATA")
    for candidate in ([Path(env)] if env else []) + [PROJECT_ROOT.parent / "shared" / "data",
                                                     Path.cwd().parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


def local_file(relative: str) -> Path | None:
    folder = data_dir()
    if folder is not None and (folder / relative).exists():
        return folder / relative
    return None


@dataclass
class Text:
    text: str
    description: str


def load_text(source: str, split: str = "test") -> Text:
    """Read a named dataset or a file into one string (documents joined by blank lines)."""
    source = (source or "").strip()
    if source == "self":
        raise DataError("'self' text is sampled from the model: use sample_self_windows()")
    if source == "wikitext2":
        text = _hub_or_local("wikitext", "wikitext-2-raw-v1", "text", split,
                             "wikitext-2-raw/wiki.test.raw" if split == "test" else None)
    elif source == "ptb":
        text = _hub_or_local("ptb_text_only", "penn_treebank", "sentence", split,
                             "ptb/ptb.test.txt" if split == "test" else None)
    elif source == "boolq":
        text = _boolq_passages()
    else:
        text = _read_file(source)
    if not text.text.strip():
        raise DataError(f"{text.description} is empty")
    return text


def _hub_or_local(dataset: str, config: str, field: str, split: str, fallback: str | None) -> Text:
    from .models import hub_reachable

    if hub_reachable():
        import datasets

        try:
            rows = datasets.load_dataset(dataset, config, split=split)[field]
            return Text("\n\n".join(rows), f"{dataset}/{config} {split} (hub)")
        except Exception as err:  # noqa: BLE001 - any hub failure falls through to the local copy
            reason = f"the hub failed ({str(err).splitlines()[0][:120]})"
    else:
        reason = "the Hugging Face hub is not reachable"
    path = local_file(fallback) if fallback else None
    if path is None:
        hint = " (the data folder has only the test split)" if fallback is None else ""
        raise DataError(f"{dataset} {split}: {reason} and no local copy was found{hint}; use a local file, "
                        f"'boolq' (with ../shared/data) or 'self'")
    return _read_file(str(path), f"{dataset} {split} (local copy {path}; {reason})")


def _boolq_passages() -> Text:
    path = local_file("boolq/boolq.jsonl")
    if path is None:
        raise DataError("'boolq' needs the data folder (../shared/data or $SVD_EXPLORER_DATA); "
                        "use 'self' or a local text file instead")
    passages, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        query = json.loads(line)["query"]
        passage = query.split("\nQuestion:", 1)[0].removeprefix("Passage: ").strip()
        if passage and passage not in seen:
            seen.add(passage)
            passages.append(passage)
    return Text("\n\n".join(passages), f"BoolQ passages (Wikipedia paragraphs, {len(passages)} unique) from {path}")


def _read_file(path: str, description: str | None = None) -> Text:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no file {path} (named sources are {', '.join(NAMED_SOURCES)})")
    if p.is_dir():
        raise DataError(f"{path} is a folder; give a .txt, .raw, .jsonl or .parquet file")
    description = description or str(p)
    suffix = p.suffix.lower()
    if suffix in (".txt", ".raw", ".text", ".md", ""):
        with open(p, encoding="utf-8", errors="replace", newline="") as f:
            return Text(f.read().replace("\r\n", "\n").replace("\r", "\n"), description)
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                record = json.loads(line)
                if "text" not in record:
                    raise DataError(f"{path}: line {i + 1} has no 'text' field")
                rows.append(str(record["text"]))
        return Text("\n\n".join(rows), description)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        if "text" not in table.column_names:
            raise DataError(f"{path}: no 'text' column (columns: {table.column_names})")
        return Text("\n\n".join(str(t) for t in table.column("text").to_pylist() if t), description)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .txt, .raw, .jsonl or .parquet")


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one token stream, without special tokens (the papers add no BOS)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def random_windows(tokens: torch.Tensor, count: int, length: int, seed: int, what: str = "text") -> torch.Tensor:
    """`count` windows of `length` tokens at random offsets, reproducible from `seed`."""
    if count < 1 or length < 2:
        raise DataError(f"need at least 1 window of at least 2 tokens (got {count} x {length})")
    if tokens.numel() < length + 1:
        raise DataError(f"{what} has {tokens.numel()} tokens, fewer than one window of {length}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length, (count,), generator=generator)
    return torch.stack([tokens[s:s + length] for s in starts.tolist()])


def consecutive_windows(tokens: torch.Tensor, count: int, length: int, what: str = "text") -> torch.Tensor:
    """The first `count` non-overlapping windows of `length` tokens (the papers' perplexity protocol)."""
    available = tokens.numel() // length
    if available < 1:
        raise DataError(f"{what} has {tokens.numel()} tokens, fewer than one window of {length}")
    count = min(count, available) if count else available
    return tokens[: count * length].view(count, length)


@torch.no_grad()
def sample_self_windows(model, tokenizer, count: int, length: int, seed: int, batch_size: int = 16) -> torch.Tensor:
    """Data-free text: the model continues a BOS (or EOS) token with plain sampling."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise DataError("'self' sampling needs a BOS or EOS token in the tokenizer")
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    rows = []
    for i in range(0, count, batch_size):
        n = min(batch_size, count - i)
        prompt = torch.full((n, 1), start, dtype=torch.long, device=device)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, max_new_tokens=length, min_new_tokens=length,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        rows.append(out[:, 1:length + 1].cpu())
    return torch.cat(rows)


def text_windows(source: str, model, tokenizer, count: int, length: int, seed: int, *,
                 split: str, consecutive: bool) -> tuple[torch.Tensor, str]:
    """Token windows from any source, with a description for manifests and results."""
    if source == "self":
        windows = sample_self_windows(model, tokenizer, count, length, seed)
        return windows, f"self: {count} x {length} tokens sampled from the original model (seed {seed})"
    text = load_text(source, split=split)
    tokens = tokenize(tokenizer, text.text)
    if consecutive:
        windows = consecutive_windows(tokens, count, length, text.description)
        return windows, f"{text.description}: first {len(windows)} x {length} consecutive tokens"
    windows = random_windows(tokens, count, length, seed, text.description)
    return windows, f"{text.description}: {count} random windows x {length} tokens (seed {seed})"
