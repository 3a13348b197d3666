"""The docs hold together: results tables equal their data, the README stays short, relative links resolve."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 400

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def bench_module(name: str = "tables"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_every_results_table_equals_its_data():
    problems, differing = bench_module().update(ROOT, write=False)
    assert not problems and not differing, "\n".join(problems + differing) + \
        "\n(python bench/tables.py rewrites the tables from docs/results/*.json)"


def test_a_sweep_folder_becomes_a_table_of_mean_std_and_each_seed():
    """bench/sweep_table.py: seeds in order, the sample std, kept of the whole model, the original first."""
    def run(seed, method, ppl, after):
        return {"method": method, "ratio": 0.2, "ppl_compressed": ppl, "ppl_original": 70.0, "dev_ppl": ppl / 2,
                "dev_ppl_original": 30.0 + seed, "kl_to_original": 1.0, "top1_agreement": 0.5,
                "params_after": after, "params_before": 1000, "seconds": 10.0, "allocation_seconds": 5.0,
                "calib_forward_seconds": 5.0 + seed, "evaluation": {"source": "wikitext2"},
                "config": {"seed": seed, "allocation": "uniform"}}
    runs = [run(2, "svd-llm", 140.0, 900), run(0, "svd-llm", 100.0, 900), run(1, "svd-llm", 120.0, 900),
            run(0, "aa-svd", 50.0, 925)]
    sweep_table = bench_module("sweep_table")
    rows = sweep_table.rows_of(runs)
    assert [r["method"] for r in rows] == ["original", "aa-svd", "svd-llm"]
    assert rows[0]["eval"] == {"value": 70.0} and rows[0]["dev"]["mean"] == pytest.approx(31.0)
    assert rows[2]["eval"] == {"mean": 120.0, "std": 20.0, "seeds": [100.0, 120.0, 140.0]}
    assert rows[2]["dev_ratio"]["mean"] == pytest.approx((50 / 30 + 60 / 31 + 70 / 32) / 3)
    assert rows[2]["kept"]["mean"] == pytest.approx(0.9) and rows[2]["x_fwd"]["mean"] == pytest.approx(3.0)
    columns = bench_module("provenance").column_specs(sweep_table.columns(runs))
    text = bench_module().render({"columns": columns, "rows": rows})
    assert "WikiText-2, mean ± std (seeds 0 / 1 / 2)" in text and "120.0 ± 20.0 (100.0 / 120.0 / 140.0)" in text


def test_readme_is_at_most_400_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files(page: Path):
    broken, numbered = [], list(prose_lines(page.read_text(encoding="utf-8")))
    prose = "\n".join(re.sub(r"`[^`]*`", "``", line) for _, line in numbered)     # not inside code spans
    for match in LINK.finditer(prose):                   # a link's text may run over two lines
        target, number = match.group(1), numbered[prose.count("\n", 0, match.start())][0]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):      # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"line {number}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"line {number}: {target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def map_entries() -> dict[str, str]:
    """The README's map ("Where things live"): first column (a file or a folder/) -> its text, continuation lines
    joined to the entry above them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("## Where things live", 1)[1]
    block = text.split("```", 2)[1]
    entries, last = {}, None
    for line in block.splitlines():
        if line.startswith(" ") and last:
            entries[last] += " " + line.strip()
        elif line.strip() and not line.startswith("#"):
            last = line.split()[0].rstrip(",")
            entries[last] = line
    return entries


def test_the_readme_map_names_every_module():
    """A module is named by its own entry or, by its file name, in an entry of the same folder."""
    entries = map_entries()
    folder_of = {name: name.rstrip("/") if name.endswith("/") else str(Path(name).parent) for name in entries}
    missing = []
    for path in sorted([*(ROOT / "svd_explorer").rglob("*.py"), *(ROOT / "bench").glob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" and path.parent.name != "svd_explorer":
            continue
        word = re.compile(rf"(?<![\w/.]){re.escape(path.stem)}(?:\.py)?(?![\w/])")
        if relative not in entries and not any(folder_of[name] == Path(relative).parent.as_posix()
                                               and word.search(text) for name, text in entries.items()):
            missing.append(relative)
    assert not missing, "README.md's map does not name: " + ", ".join(missing)
