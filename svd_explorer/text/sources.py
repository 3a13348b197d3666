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

from ..errors import DataError
from ..model import hub
from .sampled import sampled_windows

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NAMED_SOURCES = ("wikitext2", "ptb", "boolq", "lambada", "self")
TEXT_SUFFIXES = (".txt", ".raw", ".text", ".md", "")
DEV_SEED_OFFSET = 1000   # development text of seed s is drawn with seed s + 1000
PARQUET_CHARS = 200_000_000   # text read from a parquet file at most: its compression can hide gigabytes
PARQUET_BATCH = 64            # rows decoded at a time (a repeated dictionary value costs its length every row)


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
        raise DataError("'self' text is sampled from the model: use text_windows()")
    if source == "wikitext2":
        text = _hub_or_local("wikitext", "wikitext-2-raw-v1", "text", split,
                             "wikitext-2-raw/wiki.test.raw" if split == "test" else None)
    elif source == "ptb":
        text = _hub_or_local("ptb_text_only", "penn_treebank", "sentence", split,
                             "ptb/ptb.test.txt" if split == "test" else None)
    elif source == "boolq":
        text = _boolq_passages()
    elif source == "lambada":
        text = _lambada_passages()
    else:
        text = _read_file(source)
    if not text.text.strip():
        raise DataError(f"{text.description} is empty")
    return text


def _hub_or_local(dataset: str, config: str, field: str, split: str, fallback: str | None) -> Text:
    
    if hub.hub_reachable():
        import datasets

        try:
            rows = datasets.load_dataset(dataset, config, split=split, token=False)[field]  # public data: no token
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
    return _read_file(str(path), f"{dataset} {split} (local copy, {reason})")


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
    return Text("\n\n".join(passages),
                f"BoolQ passages (Wikipedia paragraphs, {len(passages)} unique) from {path.name}")


def _lambada_passages() -> Text:
    """LAMBADA's passages (novels: another domain than Wikipedia and newswire), each with its last word."""
    path = local_file("lambada_openai/lambada_openai.jsonl")
    if path is None:
        raise DataError("'lambada' needs the data folder (../shared/data or $SVD_EXPLORER_DATA)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = "\n\n".join(f"{r['context']} {r['continuation']}" for r in rows)
    return Text(text, f"LAMBADA passages (novels, {len(rows)}) from {path.name}")


def _read_file(path: str, description: str | None = None) -> Text:
    """A local file; messages name the file itself (an upload's server path means nothing to its owner)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no file {p.name} (named sources are {', '.join(NAMED_SOURCES)})")
    if p.is_dir():
        raise DataError(f"{p.name} is a folder; give a .txt, .raw, .jsonl or .parquet file")
    try:
        return Text(_file_text(p), description or p.name)
    except OSError as err:   # its message would carry the full path
        raise DataError(f"{p.name} could not be read ({err.strerror or type(err).__name__})") from err


def _file_text(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        with open(p, encoding="utf-8", errors="replace", newline="") as f:
            return f.read().replace("\r\n", "\n").replace("\r", "\n")
    if suffix == ".jsonl":
        return "\n\n".join(_jsonl_texts(p))
    if suffix == ".parquet":
        return "\n\n".join(_parquet_texts(p))
    raise DataError(f"{p.name}: unsupported file type {suffix!r}; use .txt, .raw, .jsonl or .parquet")


def _reason(err: Exception, p: Path) -> str:
    """The first line of a library's error about `p`, with the file's folder taken out (an upload's server
    path means nothing to its owner and should not be shown to strangers)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    for full in sorted({str(p), str(p.absolute()), str(p.resolve())}, key=len, reverse=True):
        text = text.replace(full, p.name)
    return text[:160]


def _jsonl_texts(p: Path) -> list[str]:
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{p.name}: line {i + 1} is not JSON") from None
        if not isinstance(record, dict) or "text" not in record:
            raise DataError(f"{p.name}: line {i + 1} is not an object with a 'text' field")
        rows.append(str(record["text"]))
    return rows


def _parquet_texts(p: Path) -> list[str]:
    """The 'text' column, read a few rows at a time up to PARQUET_CHARS characters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, chars = [], 0
    try:
        file = pq.ParquetFile(p)
        if "text" not in file.schema_arrow.names:
            raise DataError(f"{p.name}: no 'text' column (columns: {file.schema_arrow.names})")
        for batch in file.iter_batches(batch_size=PARQUET_BATCH, columns=["text"]):
            for text in batch.column(0).to_pylist():
                if text and chars < PARQUET_CHARS:
                    rows.append(str(text)[:PARQUET_CHARS - chars])
                    chars += len(rows[-1])
            if chars >= PARQUET_CHARS:
                break
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{p.name} could not be read as parquet ({_reason(err, p)})") from err
    return rows


def check_source(source: str, split: str) -> None:
    """Whether `source` can give text for `split` here, without reading it (named sources) or by its size
    (files): raises DataError naming what is missing. Run before any model is loaded."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"choose a {'calibration' if split == 'train' else 'evaluation'} text")
    if source in ("auto", "self") or (source == "none" and split == "test"):
        return
    if source in ("wikitext2", "ptb"):
        local = {"wikitext2": "wikitext-2-raw/wiki.test.raw", "ptb": "ptb/ptb.test.txt"}[source]
        if not hub.hub_reachable() and (split != "test" or local_file(local) is None):
            where = "" if split == "test" else " (the data folder has only the test split)"
            raise DataError(f"{source} {split}: the Hugging Face hub is not reachable and no local copy was "
                            f"found{where}; use a local file, 'boolq' (with ../shared/data) or 'self'")
        return
    if source == "lambada":
        if local_file("lambada_openai/lambada_openai.jsonl") is None:
            raise DataError("'lambada' needs the data folder (../shared/data or $SVD_EXPLORER_DATA)")
        return
    if source == "boolq":
        if local_file("boolq/boolq.jsonl") is None:
            raise DataError("'boolq' needs the data folder (../shared/data or $SVD_EXPLORER_DATA); use 'self' or a "
                            "local text file instead")
        return
    p = Path(source).expanduser()
    if not p.is_file():
        raise DataError(f"no file {p.name} (named sources are {', '.join(NAMED_SOURCES)}, or a file)")
    if p.suffix.lower() not in TEXT_SUFFIXES + (".jsonl", ".parquet"):
        raise DataError(f"{p.name}: unsupported file type {p.suffix!r}; use .txt, .raw, .jsonl or .parquet")
    if p.stat().st_size == 0:
        raise DataError(f"{p.name} is empty")
    if p.suffix.lower() == ".parquet":
        _check_parquet(p)


def _check_parquet(p: Path) -> None:
    """Refuse a parquet file whose 'text' pages unpack beyond what is ever read (one huge compressed value)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(p).metadata
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{p.name} could not be read as parquet ({_reason(err, p)})") from err
    size = sum(column.total_uncompressed_size for i in range(meta.num_row_groups)
               for column in (meta.row_group(i).column(j) for j in range(meta.num_columns))
               if column.path_in_schema == "text")
    if size > 4 * PARQUET_CHARS:
        raise DataError(f"{p.name} unpacks to {size >> 20} MB; at most {4 * PARQUET_CHARS >> 20} MB are read")


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one token stream, without special tokens (the papers add no BOS)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def random_starts(total: int, count: int, length: int, seed: int, what: str = "text") -> list[int]:
    """Offsets of `count` windows of `length` tokens in a text of `total` tokens, reproducible from `seed`."""
    if count < 1 or length < 2:
        raise DataError(f"need at least 1 window of at least 2 tokens (got {count} x {length})")
    if total < length + 1:
        raise DataError(f"{what} has {total} tokens, fewer than one window of {length}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, total - length, (count,), generator=generator).tolist()


def random_windows(tokens: torch.Tensor, count: int, length: int, seed: int, what: str = "text") -> torch.Tensor:
    """`count` windows of `length` tokens at random offsets, reproducible from `seed`."""
    starts = random_starts(tokens.numel(), count, length, seed, what)
    return torch.stack([tokens[s:s + length] for s in starts])


def disjoint_starts(total: int, count: int, length: int, seed: int, spans: list[tuple[int, int]],
                    what: str = "text", avoided: str = "the calibration windows") -> list[int]:
    """Offsets of `count` windows of `length` at random, reproducible from `seed`, overlapping none of the
    (start, length) `spans`: development text from the calibration domain that the calibration never saw."""
    free = torch.ones(max(total - length, 0), dtype=torch.bool)
    for start, span in spans:
        free[max(0, start - length + 1):start + span] = False
    candidates = free.nonzero().flatten()
    if len(candidates) < count:
        raise DataError(f"{what}: not enough text outside {avoided} for {count} development "
                        f"windows of {length} tokens")
    generator = torch.Generator().manual_seed(seed)
    return candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values.tolist()


def consecutive_windows(tokens: torch.Tensor, count: int, length: int, what: str = "text") -> torch.Tensor:
    """The first `count` non-overlapping windows of `length` tokens (the papers' perplexity protocol)."""
    available = tokens.numel() // length
    if available < 1:
        raise DataError(f"{what} has {tokens.numel()} tokens, fewer than one window of {length}")
    count = min(count, available) if count else available
    return tokens[: count * length].view(count, length)


_TOKENS: dict = {}


def text_tokens(source: str, tokenizer, split: str) -> tuple[torch.Tensor, str]:
    """The whole text of a source as one token stream (kept for the process: sources are re-read often)."""
    key = (source, split, getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _TOKENS:
        text = load_text(source, split=split)
        if len(_TOKENS) >= 4:
            _TOKENS.pop(next(iter(_TOKENS)))
        _TOKENS[key] = (tokenize(tokenizer, text.text), text.description)
    return _TOKENS[key]


def text_windows(source: str, model, tokenizer, count: int, length: int, seed: int, *,
                 split: str, consecutive: bool, progress=None) -> tuple[torch.Tensor, str]:
    """Token windows from any source, with a description for manifests and results."""
    if source == "self":
        windows = sampled_windows(model, tokenizer, count, length, seed, progress=progress)
        return windows, f"self: {count} x {length} tokens sampled from the original model (seed {seed})"
    tokens, description = text_tokens(source, tokenizer, split)
    if consecutive:
        windows = consecutive_windows(tokens, count, length, description)
        return windows, f"{description}: first {len(windows)} x {length} consecutive tokens"
    windows = random_windows(tokens, count, length, seed, description)
    return windows, f"{description}: {count} random windows x {length} tokens (seed {seed})"


def development_windows(source: str, model, tokenizer, count: int, length: int, seed: int,
                        calibration: tuple[int, int], searched: tuple[int, int] | None = None,
                        progress=None) -> tuple[torch.Tensor, str]:
    """Windows of the calibration domain that overlap none of the `calibration` = (count, length) windows
    drawn with the same seed: where settings are chosen. `searched` = (count, length) asks instead for
    windows that also avoid the windows a search scored on (what this function returns for that count
    and length): where a chosen setting is reported, held out from the choice. 'self' text is sampled
    again with another seed."""
    offset = DEV_SEED_OFFSET * (2 if searched else 1)
    if source == "self":
        windows = sampled_windows(model, tokenizer, count, length, seed + offset, progress=progress)
        return windows, f"self: {count} x {length} tokens sampled with seed {seed + offset} (development)"
    tokens, description = text_tokens(source, tokenizer, "train")
    calibration_count, calibration_length = calibration
    spans = [(a, calibration_length) for a in
             random_starts(tokens.numel(), calibration_count, calibration_length, seed, description)]
    where = f"the {calibration_count} calibration windows of {calibration_length}"
    if searched:
        searched_count, searched_length = searched
        spans += [(a, searched_length) for a in disjoint_starts(
            tokens.numel(), searched_count, searched_length, seed + DEV_SEED_OFFSET, spans, description, where)]
        where += f" and the {searched_count} search windows of {searched_length}"
    starts = disjoint_starts(tokens.numel(), count, length, seed + offset, spans, description, where)
    windows = torch.stack([tokens[s:s + length] for s in starts])
    return windows, f"{description}: {count} random windows x {length} tokens outside {where} (development)"


def resolve_calibration(source: str) -> str:
    """auto: the offline Wikipedia passages when the data folder exists, else WikiText-2 train from the
    hub, else text sampled from the model itself."""
    if source != "auto":
        return source
    if local_file("boolq/boolq.jsonl") is not None:
        return "boolq"
    return "wikitext2" if hub.hub_reachable() else "self"


def resolve_evaluation(source: str) -> str:
    if source != "auto":
        return source
    if hub.hub_reachable() or local_file("wikitext-2-raw/wiki.test.raw") is not None:
        return "wikitext2"
    return "self"
