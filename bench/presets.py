"""Time and memory of each preset on this machine, for the embedded SmolLM2.

    python bench/presets.py [--methods svd-llm] [--presets demo,paper]
    python bench/presets.py add RUN.json [--label TEXT]

Each run is its own process (peak RSS is a process's high-water mark): `python -m svd_explorer compress
--preset P --method M --ratio 0.2 --no-stats-cache`, timed from start to exit. Prints a Markdown table:
compression seconds, one calibration forward, the whole run's wall time, and the peak resident memory.

`add` turns the JSON of a run made by hand (`compress ... --json RUN.json`, e.g. a paper-preset run too
long for this script) into a row of docs/results/presets.json, replacing the row of the same model,
preset and label: compression is statistics + allocation + compression + refinement, the whole run the
engine's own total (no interpreter start-up). Then `python bench/tables.py` rewrites the table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(preset: str, method: str) -> dict:
    out = Path(tempfile.mkdtemp()) / "run.json"
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "svd_explorer", "compress", "--preset", preset, "--method", method,
                           "--ratio", "0.2", "--no-stats-cache", "--json", str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(out.read_text())
    return {"preset": preset, "method": method, "wall": time.time() - start, **{k: result[k] for k in (
        "seconds", "calib_forward_seconds", "peak_rss_mb", "ppl_compressed", "calibration", "evaluation")}}


RESULT = Path(__file__).resolve().parent.parent / "docs/results/presets.json"
COMPRESSION = ("statistics", "allocation", "compression", "refinement")


def row_of(result: dict, label: str | None = None) -> dict:
    """A presets.json row from a run's JSON."""
    config, calib, ev, timings = result["config"], result["calibration"], result["evaluation"], result["timings"]
    compression = sum(timings.get(phase, 0.0) for phase in COMPRESSION)
    forward = result.get("calib_forward_seconds")
    allocation = "" if config.get("allocation", "auto") == "auto" else f" + {config['allocation']}"
    return {"model": result["model"], "preset": config.get("preset") or "—",
            "method": label or result["method"] + allocation,
            "calibration": f"{calib['samples']} × {calib['seq_len']} ({calib['source']}, seed {calib['seed']})",
            "evaluation": f"{ev['windows']} × {ev['seq_len']} ({ev['source']})", "compression_s": round(compression),
            "forward_s": round(forward) if forward else None,
            "x_fwd": round(compression / forward, 1) if forward else None, "whole_run_s": round(timings["total"]),
            "peak_rss_mb": round(result["peak_rss_mb"]), "wikitext2": round(result["ppl_compressed"], 2),
            "original": round(result["ppl_original"], 2)}


def add(path: str, label: str | None) -> None:
    data = json.loads(RESULT.read_text())
    row = row_of(json.loads(Path(path).read_text()), label)
    same = [i for i, r in enumerate(data["rows"]) if all(r.get(k) == row[k] for k in ("model", "preset", "method"))]
    if same:
        data["rows"][same[0]] = row
    else:
        data["rows"].append(row)
    RESULT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(row, ensure_ascii=False))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["add"]:
        parser = argparse.ArgumentParser(prog="presets.py add")
        parser.add_argument("run")
        parser.add_argument("--label")
        args = parser.parse_args(argv[1:])
        return add(args.run, args.label)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="svd-llm")
    parser.add_argument("--presets", default="demo,paper")
    args = parser.parse_args(argv)
    lines = ["| preset | method | calibration | evaluation | compression s | calib forward s | whole run s | "
             "peak RSS MB | WikiText-2 ppl |", "|---|---|---|---|---|---|---|---|---|"]
    for preset in args.presets.split(","):
        for method in args.methods.split(","):
            r = measure(preset, method)
            calib = f"{r['calibration']['samples']} x {r['calibration']['seq_len']} ({r['calibration']['source']})"
            ev = f"{r['evaluation']['windows']} x {r['evaluation']['seq_len']}"
            lines.append(f"| {preset} | {method} | {calib} | {ev} | {r['seconds']:.0f} | "
                         f"{r['calib_forward_seconds']:.0f} | {r['wall']:.0f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['ppl_compressed']:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
