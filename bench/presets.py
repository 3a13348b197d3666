"""Time and memory of each preset on this machine, for the embedded SmolLM2.

    python bench/presets.py [--methods svd-llm] [--presets demo,paper]

Each run is its own process (peak RSS is a process's high-water mark): `python -m svd_explorer compress
--preset P --method M --ratio 0.2 --no-stats-cache`, timed from start to exit. Prints a Markdown table:
compression seconds, one calibration forward, the whole run's wall time, and the peak resident memory.
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


def main(argv=None):
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
