"""Where a benchmark's numbers came from: the commit the files record beside their command, and the result
file (docs/results/NAME.json) that holds them with their spread over seeds."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit(unknown: str = "?") -> str:
    """The short hash of HEAD, or `unknown` outside a git checkout."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                          check=False).stdout.strip() or unknown


def cpu_machine() -> str:
    """This machine in words for a result file: cores, CPU model and whether it has fast bfloat16 (where
    `--precision auto` would run bfloat16 passes)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{os.cpu_count()} CPU cores, no GPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "CPU")
    fast = " with fast bfloat16" if "amx_bf16" in info or "avx512_bf16" in info else ""
    return f"{os.cpu_count()} cores of an {model}{fast}, no GPU"


def spread(values: list[float], per_seed: bool = False):
    """A table cell of the seeds' values: mean ± sample std (and each seed's value), the value itself for one
    seed (no spread to show), None for none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values)} | ({"seeds": values} if per_seed else {})


def write_result(name: str, title: str, command, machine: str, columns: list[tuple], rows: list[dict]) -> Path:
    """docs/results/NAME.json: the rows with their command, commit and machine; columns as (key, header, format)."""
    data = {"title": title, "command": command, "commit": commit(), "machine": machine,
            "columns": column_specs(columns), "rows": rows}
    path = ROOT / "docs" / "results" / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def column_specs(columns: list[tuple]) -> list[dict]:
    """(key, header, format or None) -> the column objects bench/tables.py reads."""
    return [{"key": k, "header": h, **({"format": f} if f else {})} for k, h, f in columns]
