"""Time and memory of each preset on this machine, for the embedded SmolLM2.

    python bench/presets.py [--methods svd-llm] [--presets demo,paper]
    python bench/presets.py add RUN.json [--label TEXT]

Each run is its own process (peak RSS is a process's high-water mark): `python -m svd_explorer compress
--preset P --method M --ratio 0.2 --no-stats-cache --json bench/results/presets/P_M.json`; its row
(compression seconds, one calibration forward, the whole run, the peak resident memory, perplexity) goes
in docs/results/presets.json as `add` puts it there.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs/results/presets.json"
COMPRESSION = ("statistics", "allocation", "compression", "refinement")


def measure(preset: str, method: str) -> Path:
    """One run in its own process; its JSON under bench/results/presets/."""
    out = ROOT / "bench" / "results" / "presets" / f"{preset}_{method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "svd_explorer", "compress", "--preset", preset, "--method", method,
                           "--ratio", "0.2", "--no-stats-cache", "--json", str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return out


def row_of(result: dict, label: str | None = None) -> dict:
    """A presets.json row from a run's JSON (texts named as their descriptions begin: "BoolQ passages")."""
    config, calib, ev, timings = result["config"], result["calibration"], result["evaluation"], result["timings"]
    compression = sum(timings.get(phase, 0.0) for phase in COMPRESSION)
    forward = result.get("calib_forward_seconds")
    allocation = "" if config.get("allocation", "auto") == "auto" else f" + {config['allocation']}"
    return {"model": result["model"], "preset": config.get("preset"), "method": label or result["method"] + allocation,
            "calibration": f"{calib['samples']} × {calib['seq_len']} ({_text(calib)}, seed {calib['seed']})",
            "evaluation": f"{ev['windows']} × {ev['seq_len']} ({_text(ev)})", "compression_s": round(compression),
            "forward_s": round(forward) if forward else None,
            "x_fwd": round(compression / forward, 1) if forward else None, "whole_run_s": round(timings["total"]),
            "peak_rss_mb": round(result["peak_rss_mb"]), "wikitext2": _rounded(result.get("ppl_compressed")),
            "original": _rounded(result.get("ppl_original"))}


def _text(part: dict) -> str:
    return (part.get("description") or part["source"]).split(" (")[0].split(":")[0]


def _rounded(value) -> float | None:
    return None if value is None else round(value, 2)


def add(path: str, label: str | None) -> None:
    """Put a run's row in presets.json, in place of the row of the same model, preset and label. Its command
    and commit go in the file's "command" and "commit" by hand: a run's JSON holds neither."""
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
    for preset in args.presets.split(","):
        for method in args.methods.split(","):
            add(str(measure(preset, method)), None)


if __name__ == "__main__":
    main()
