"""Many runs compared: reading a sweep folder (or an uploaded zip of one), mean ± std over seeds, tables.

A run's result file is the RunRecord JSON the CLI writes, plus "status" (done or failed). Rows are
grouped by everything but the calibration seed, so each group's spread is the seed-to-seed spread
that a difference must exceed to mean something.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import finite_number

RESULTS = "runs"
ZIP_LIMIT_BYTES = 50 << 20      # an uploaded sweep zip, compressed
ZIP_MEMBER_LIMIT = 20 << 20     # one JSON member, uncompressed
ZIP_MEMBERS = 2000
ZIP_TOTAL_LIMIT = 200 << 20     # all members together, uncompressed (a zip bomb is refused before reading)
BF16_BYTES = 2                  # the saved size of a run: every tensor in bfloat16 (saving.py's default)


class ComparisonError(ValueError):
    """A folder or archive that is not a readable sweep."""


def group_key(row: dict) -> tuple:
    c = row.get("config", {})
    options = " ".join(f"{k}={v}" for k, v in sorted((c.get("allocation_options") or {}).items()))
    allocation = c.get("allocation", "auto") + (f" ({options})" if options else "")
    return (row["method"], allocation, c.get("refine", "auto"), row["ratio"])


def eval_sets(row: dict) -> dict[str, float]:
    """Perplexity on every evaluation set of a run: the main one and the extra ones."""
    out = {}
    if row.get("ppl_compressed") is not None:
        out[row.get("evaluation", {}).get("source", "eval")] = row["ppl_compressed"]
    out.update(row.get("extra_ppl") or {})
    if row.get("dev_ppl") is not None:
        out["dev"] = row["dev_ppl"]
    return out


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per configuration: mean and sample standard deviation over seeds of every measure."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("status", "done") == "done":
            groups.setdefault(group_key(row), []).append(row)
    out = []
    for (method, allocation, refine, ratio), members in sorted(groups.items(), key=lambda g: (g[0][3], g[0][:3])):
        measures = {"kept": [r["params_after"] / r["params_before"] for r in members],
                    "mb_bf16": [r["params_after"] * BF16_BYTES / 1e6 for r in members],
                    "kl": [r.get("kl_to_original") for r in members],
                    "top1": [r.get("top1_agreement") for r in members],
                    "seconds": [work_seconds(r) for r in members],
                    "x_forward": [work_seconds(r) / r["calib_forward_seconds"] for r in members
                                  if r.get("calib_forward_seconds")]}
        for name in eval_sets(members[0]):
            measures[f"ppl_{name}"] = [eval_sets(r).get(name) for r in members]
        out.append({"method": method, "allocation": allocation, "refine": refine, "ratio": ratio,
                    "label": members[0].get("label"), "seeds": sorted(r["config"]["seed"] for r in members),
                    **{k: mean_std(v) for k, v in measures.items()}})
    return out


def work_seconds(row: dict) -> float:
    """A run's own time: its allocation (a sensitivity or depth search is most of some runs) and its
    compression; the statistics pass a sweep shares between runs is reported apart."""
    return row["seconds"] + (row.get("allocation_seconds") or 0.0)


def mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if finite_number(v)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(pair: tuple, digits: int = 1) -> str:
    mean, std = pair
    if mean is None:
        return "-"
    text = f"{mean:.2e}" if abs(mean) >= 1e5 else f"{mean:.{digits}f}"
    return text if std is None else text + (f" ± {std:.2e}" if abs(std) >= 1e5 else f" ± {std:.{digits}f}")


def markdown(summary: list[dict]) -> str:
    sets = sorted({k for row in summary for k in row if k.startswith("ppl_")})
    head = (["method", "allocation", "refine", "ratio", "seeds", "kept", "MB (bf16)"] + [s[4:] + " ppl" for s in sets]
            + ["KL", "top-1", "seconds", "x fwd"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        cells = [r["method"], r["allocation"], r["refine"], f"{r['ratio']:g}", str(len(r["seeds"])), fmt(r["kept"], 3),
                 fmt(r["mb_bf16"], 0)]
        cells += [fmt(r.get(s, (None, None))) for s in sets]
        cells += [fmt(r["kl"], 3), fmt(r["top1"], 3), fmt(r["seconds"], 0), fmt(r["x_forward"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(summary: list[dict]) -> str:
    sets = sorted({k for row in summary for k in row if k.startswith("ppl_")})
    measures = ["kept", "mb_bf16"] + sets + ["kl", "top1", "seconds", "x_forward"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "allocation", "refine", "ratio", "seeds"] +
                    [f"{m}_{s}" for m in measures for s in ("mean", "std")])
    for r in summary:
        writer.writerow([r["method"], r["allocation"], r["refine"], r["ratio"], " ".join(map(str, r["seeds"]))] +
                        [v for m in measures for v in r.get(m, (None, None))])
    return buffer.getvalue()


def read_folder(folder) -> list[dict]:
    """Every result file of a sweep folder (its runs/ subfolder, or the folder itself)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ComparisonError(f"{folder.name} is not a folder")
    files = sorted((folder / RESULTS).glob("*.json")) if (folder / RESULTS).is_dir() else sorted(folder.glob("*.json"))
    rows = [_row(f.name, f.read_text(errors="replace")) for f in files]
    return [r for r in rows if r is not None]


def read_zip(path) -> list[dict]:
    """Result files from an uploaded zip of a sweep folder: size-capped, JSON members only, none outside it."""
    path = Path(path)
    if path.stat().st_size > ZIP_LIMIT_BYTES:
        raise ComparisonError(f"{path.name} is larger than {ZIP_LIMIT_BYTES >> 20} MB")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ComparisonError(f"{path.name} is not a zip archive") from None
    with archive:
        members = archive.infolist()
        if len(members) > ZIP_MEMBERS:
            raise ComparisonError(f"{path.name} holds more than {ZIP_MEMBERS} files")
        if sum(info.file_size for info in members) > ZIP_TOTAL_LIMIT:
            raise ComparisonError(f"{path.name} unpacks to more than {ZIP_TOTAL_LIMIT >> 20} MB")
        rows = []
        for info in members:
            if info.is_dir():
                continue
            _check_member(path.name, info)
            if info.filename.endswith(".json"):
                rows.append(_slim(_row(info.filename, _member_text(archive, info))))
    return [r for r in rows if r is not None]


def _member_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A member's text; a damaged, encrypted or oddly compressed member is refused by name."""
    try:
        return archive.read(info).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as err:
        raise ComparisonError(f"{info.filename} cannot be read from the archive ({type(err).__name__})") from None


SLIM = ("method", "ratio", "status", "label", "params_after", "params_before", "seconds", "allocation_seconds",
        "calib_forward_seconds", "kl_to_original", "top1_agreement", "ppl_compressed", "extra_ppl", "dev_ppl")
SLIM_SETS = 8           # extra evaluation sets and allocation options kept of an uploaded run
TEXT = ("method", "status", "label")


def _slim(row: dict | None) -> dict | None:
    """What a comparison reads of an uploaded run, numbers only where it computes (a stranger's JSON may carry
    megabytes beside them, or text where a number belongs)."""
    if row is None:
        return None
    out = {k: (str(row[k])[:200] if k in TEXT else row[k] if finite_number(row[k]) else None)
           for k in SLIM if k in row and k != "extra_ppl"}
    extra = {str(k)[:40]: v for k, v in (row.get("extra_ppl") or {}).items() if finite_number(v)}
    config = row["config"]
    options = {str(k)[:40]: str(v)[:40] for k, v in (config.get("allocation_options") or {}).items()
               if isinstance(v, (str, int, float))}
    source = (row.get("evaluation") or {}).get("source") if isinstance(row.get("evaluation"), dict) else None
    return out | {"extra_ppl": dict(list(extra.items())[:SLIM_SETS]),
                  "evaluation": {} if source is None else {"source": str(source)[:40]},
                  "config": {"seed": config.get("seed"), "allocation": str(config.get("allocation", "auto"))[:40],
                             "allocation_options": dict(list(options.items())[:SLIM_SETS]),
                             "refine": str(config.get("refine", "auto"))[:10]}}


def _check_member(archive: str, info: zipfile.ZipInfo) -> None:
    name = PurePosixPath(info.filename)
    if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
        raise ComparisonError(f"{archive}: member {info.filename!r} points outside the folder")
    if name.suffix not in (".json", ".csv", ".md", ".html"):
        raise ComparisonError(f"{archive}: member {name.name} is not a sweep file (JSON results only)")
    if info.file_size > ZIP_MEMBER_LIMIT:
        raise ComparisonError(f"{archive}: member {name.name} is larger than {ZIP_MEMBER_LIMIT >> 20} MB")


def _row(name: str, text: str) -> dict | None:
    """A run result, or None for the sweep's other JSON files; malformed results are refused by name."""
    try:
        row = json.loads(text)
    except (ValueError, RecursionError):
        raise ComparisonError(f"{name} is not valid JSON") from None
    if not isinstance(row, dict) or "method" not in row or "config" not in row:
        return None
    if not _well_formed(row):
        raise ComparisonError(f"{name} is not a run result of SVD Explorer")
    return row


def _well_formed(row: dict) -> bool:
    """The fields a comparison computes with, of the types it needs (a finished run; a failed one names itself)."""
    config = row["config"]
    if not isinstance(config, dict) or not isinstance(row["method"], str) or \
            not isinstance(config.get("allocation", "auto"), str):
        return False
    if row.get("status", "done") != "done":
        return True
    numbers = [row.get(k) for k in ("ratio", "params_after", "params_before", "seconds")]
    extra = [row.get(k) or 0 for k in ("allocation_seconds", "calib_forward_seconds")]
    seed = config.get("seed")
    return all(finite_number(v) for v in numbers + extra) and row["params_before"] > 0 and \
        isinstance(seed, int) and not isinstance(seed, bool) and \
        isinstance(config.get("allocation_options") or {}, dict) and isinstance(row.get("extra_ppl") or {}, dict)



