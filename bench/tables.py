"""Results tables as data: docs/results/NAME.json becomes the Markdown table between
<!-- table:NAME --> and <!-- /table:NAME --> in README.md and docs/*.md.

    python bench/tables.py           rewrite every marked table from its JSON file
    python bench/tables.py --check   change nothing; exit 1 naming each table whose page disagrees with its data

A result file is one JSON object: "title", "command" (a string or a list of command lines), "commit",
"machine", "columns" and "rows". A column is {"key", "header"} with optional "format" (of a value or a
mean), "std_format", "seeds_format", "join" (between the items of a list, " / " by default) and
"labels" (a stored word -> the text shown). A row maps column keys to cells:

    null                      shown as —
    "text"                    shown as is (or as its label)
    3.14                      a number, written with the column's format
    [1, 2, "cached"]          items joined with the column's "join"
    {"mean": m, "std": s}     "m ± s"; {"value": v, "stderr": e} likewise
    {"value": v}              one number; {"values": [...]} a list; {"range": [a, b]} "a–b"

and a dict may add "seeds" (shown as " (s0 / s1 / s2)" after a mean), "bold" (the main part in **),
"suffix" (text after everything) and its own "format", "std_format" or "seeds_format".

Formats: "auto" (an integer as is, a float as Python writes it), "f0" … "f4" (fixed decimals),
"e2" (1.23e+05), "se2" (1.23e5), "ppl" (e2 at or above 1e5, else one decimal: what the sweep's
summary.md writes) and "mmss" (seconds as minutes:seconds).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "docs/results"
# markers stand alone on their lines (a marker quoted inside a sentence is not one)
REGION = re.compile(r"^<!-- table:([\w.-]+) -->\n(.*?)^<!-- /table:\1 -->$", re.DOTALL | re.MULTILINE)
OPENING = re.compile(r"^<!-- table:([\w.-]+) -->$", re.MULTILINE)


def number(value, fmt: str | None) -> str:
    fmt = fmt or "auto"
    if fmt == "auto":
        return str(value)
    if fmt == "mmss":
        seconds = round(value)
        return f"{seconds // 60}:{seconds % 60:02d}"
    if fmt == "ppl":
        return f"{value:.2e}" if abs(value) >= 1e5 else f"{value:.1f}"
    match = re.fullmatch(r"(f|e|se)(\d)", fmt)
    if not match:
        raise ValueError(f"unknown format {fmt!r}")
    kind, digits = match.group(1), int(match.group(2))
    if kind == "f":
        return f"{value:.{digits}f}"
    text = f"{value:.{digits}e}"
    if kind == "se":
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def cell(value, column: dict) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        raise TypeError(f"a cell cannot be a boolean ({column['key']})")
    if isinstance(value, str):
        return column.get("labels", {}).get(value, value)
    if isinstance(value, (int, float)):
        return number(value, column.get("format"))
    if isinstance(value, list):
        return column.get("join", " / ").join(cell(item, column) for item in value)
    if not isinstance(value, dict):
        raise TypeError(f"cannot show {value!r} in column {column['key']}")
    own = {**column, **{k: value[k] for k in ("format", "std_format", "seeds_format") if k in value}}
    std_fmt = own.get("std_format") or own.get("format")
    if "mean" in value or "stderr" in value:
        centre = value["mean"] if "mean" in value else value["value"]
        spread = value["std"] if "mean" in value else value["stderr"]
        main = f"{number(centre, own.get('format'))} ± {number(spread, std_fmt)}"
    elif "value" in value:
        main = cell(value["value"], own)
    elif "values" in value:
        main = cell(list(value["values"]), own)
    elif "range" in value:
        low, high = value["range"]
        main = f"{number(low, own.get('format'))}–{number(high, own.get('format'))}"
    else:
        raise ValueError(f"a cell of column {column['key']} has no value: {value!r}")
    if value.get("bold"):
        main = f"**{main}**"
    if "seeds" in value:
        seeds_column = {**own, "format": own.get("seeds_format") or own.get("format"), "join": " / "}
        main += f" ({cell(list(value['seeds']), seeds_column)})"
    return main + value.get("suffix", "")


def render(data: dict) -> str:
    """The Markdown table of one result file, ending with a newline."""
    columns = data["columns"]
    lines = ["| " + " | ".join(c["header"] for c in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in data["rows"]:
        unknown = set(row) - {c["key"] for c in columns}
        if unknown:
            raise ValueError(f"row {row} has keys no column names: {sorted(unknown)}")
        lines.append("| " + " | ".join(cell(row.get(c["key"]), c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def load_results(root: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((root / RESULTS).glob("*.json"))}


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def update(root: Path = ROOT, write: bool = True) -> tuple[list[str], list[str]]:
    """Rewrite (with write=False only compare) every marked table.

    Returns the problems (a table that cannot be written, markers without data or data without
    markers) and the tables whose page differed from their data, one line each."""
    problems: list[str] = []
    differing: list[str] = []
    results = load_results(root)
    tables: dict[str, str] = {}
    for name, data in results.items():
        try:
            tables[name] = render(data)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"table {name}: {RESULTS}/{name}.json cannot be rendered: {error}")
    placed: set[str] = set()
    for page in pages(root):
        if not page.exists():
            continue
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(root).as_posix()
        closed = {m.start() for m in REGION.finditer(text)}
        for opening in OPENING.finditer(text):
            if opening.start() not in closed:
                problems.append(f"table {opening.group(1)} in {where}: no <!-- /table:{opening.group(1)} --> after it")

        def replace(match: re.Match, where: str = where) -> str:
            name, body = match.group(1), match.group(2)
            placed.add(name)
            if name not in results:
                problems.append(f"table {name} in {where}: there is no {RESULTS}/{name}.json")
                return match.group(0)
            if name not in tables:
                return match.group(0)
            if body != tables[name]:
                differing.append(f"table {name} in {where} differs from {RESULTS}/{name}.json"
                                 + first_difference(body, tables[name]))
            return f"<!-- table:{name} -->\n{tables[name]}<!-- /table:{name} -->"

        new = REGION.sub(replace, text)
        if write and new != text:
            page.write_text(new, encoding="utf-8")
    for name in sorted(set(results) - placed):
        problems.append(f"table {name}: {RESULTS}/{name}.json is shown on no page (no <!-- table:{name} --> markers)")
    return problems, differing


def first_difference(page: str, data: str) -> str:
    shown, generated = page.splitlines(), data.splitlines()
    for number_, (a, b) in enumerate(zip(shown, generated), 1):
        if a != b:
            return f" (line {number_} of the table: page has {a!r}, data gives {b!r})"
    return f" (the page has {len(shown)} lines, the data {len(generated)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the results tables of the docs from docs/results/*.json.")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a page disagrees with its data")
    args = parser.parse_args(argv)
    problems, differing = update(ROOT, write=not args.check)
    for line in problems + (differing if args.check else []):
        print(line, file=sys.stderr)
    if not args.check:
        for line in differing:
            print("rewrote " + line.split(" differs from ")[0].removeprefix("table "))
        if not differing and not problems:
            print(f"{len(load_results(ROOT))} tables already equal their data")
    elif not problems and not differing:
        print(f"{len(load_results(ROOT))} tables agree with their data")
    return 1 if problems or (args.check and differing) else 0


if __name__ == "__main__":
    sys.exit(main())
