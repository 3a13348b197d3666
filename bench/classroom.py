"""A classroom on loopback: N visitors open the public page and press Compress with its defaults within a
minute; one compression should serve them all.

    python bench/classroom.py [--visitors 30] [--within 60]     # writes docs/results/classroom.json

The app runs in this process in public mode (SVD_EXPLORER_PUBLIC limits, the embedded model, the
installed gallery, a fresh statistics cache in a temporary folder), bound to 127.0.0.1 only, and has
loaded its model before the visitors arrive (as a Space is up before a class opens it). Each
visitor is a gradio_client session: it asks for the figures of the gallery run the page opens on (what a
browser's page-load event asks), waits a random moment within `--within` seconds, presses Compress with
the page's defaults and waits for its result. Measured: each visitor's time to the gallery figures and to
its result, the jobs the worker ran, the single job's time, the process's peak memory and the disk the
run left (statistics cache and downloads). Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["SVD_EXPLORER_PUBLIC"] = "1"
os.environ.setdefault("SVD_EXPLORER_CACHE", tempfile.mkdtemp(prefix="classroom-cache-"))

import psutil  # noqa: E402
from gradio_client import Client  # noqa: E402

from svd_explorer.files import cache_dir, folder_bytes  # noqa: E402
from svd_explorer.ui.layout import COMPRESS, FIGURES, build_demo  # noqa: E402

OUT = ROOT / "docs" / "results" / "classroom.json"


def visitor(url: str, shown: str, within: float, seed: int, out: list) -> None:
    client = Client(url, verbose=False)
    try:
        clock = time.perf_counter()
        figures = dict(zip(FIGURES, client.predict(api_name="/show_run", run_box=shown, block_box=0, kind_box=None,
                                                   depth_metric="rel_error", compare_metric="ppl_compressed",
                                                   beside_box=[])))
        gallery_seconds = time.perf_counter() - clock
        time.sleep(random.Random(seed).uniform(0, within))
        pressed = time.perf_counter()
        status = dict(zip(COMPRESS, list(client.submit(api_name="/compress"))[-1]))["status"]
        out.append({"gallery_seconds": gallery_seconds, "gallery_shown": "Precomputed" in figures["metrics"],
                    "result_seconds": time.perf_counter() - pressed, "pressed": pressed, "status": status})
    except Exception as err:  # noqa: BLE001 - recorded in the result
        out.append({"error": repr(err)})
    finally:
        client.close()


def peak_memory(process, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--within", type=float, default=60.0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    demo = build_demo()
    demo.queue(max_size=256).launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    store, process = demo.store, psutil.Process()
    while store.models.peek(store.default_model) is None:     # the Space is up before the class arrives
        time.sleep(0.5)
    shown = next(iter(store.gallery_runs), None)
    if store.gallery and store.gallery.default:
        shown = "gallery:" + store.gallery.default
    stop, peak, outcomes = threading.Event(), [process.memory_info().rss], []
    threading.Thread(target=peak_memory, args=(process, stop, peak), daemon=True).start()
    start = time.perf_counter()
    threads = [threading.Thread(target=visitor, args=(demo.local_url, shown, args.within, i, outcomes))
               for i in range(args.visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    write(args, store, outcomes, peak[0], time.perf_counter() - start)
    demo.close()


def write(args, store, outcomes: list, peak: int, wall: float) -> None:
    done = [o for o in outcomes if o.get("status", "").startswith("Done")]
    runs = list(store.runs.values())
    job_seconds = max((r.result.get("timings") or {}).get("total", 0) for r in runs) if runs else None
    first_press = min((o["pressed"] for o in done), default=0)
    opened = [o["gallery_seconds"] for o in outcomes if "gallery_seconds" in o] or [float("nan")]
    row = {"visitors": args.visitors, "within": args.within, "done": len(done),
           "errors": [o.get("error") or o.get("status") for o in outcomes if o not in done],
           "compressions": len({id(r.model) for r in runs}),
           "gallery_seconds": {"mean": statistics.mean(opened), "max": max(opened)},
           "gallery_shown": sum(o.get("gallery_shown", False) for o in outcomes),
           "job_seconds": job_seconds,
           "last_result_after_first_press": max((o["pressed"] + o["result_seconds"] - first_press for o in done),
                                                default=None),
           "result_seconds_max": max((o["result_seconds"] for o in done), default=None),
           "peak_rss_mb": peak / 2**20, "cache_mb": folder_bytes(cache_dir("stats")) / 2**20,
           "downloads_mb": store.bytes_on_disk() / 2**20, "wall_seconds": wall}
    print(json.dumps(row, indent=1))
    Path(args.out).write_text(json.dumps(table(args, row), indent=1) + "\n")


def table(args, row: dict) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    shown = {"visitors": f"{row['visitors']} within {row['within']:g} s", "done": row["done"],
             "compressions": row["compressions"],
             "gallery": f"{row['gallery_seconds']['mean']:.2f} s mean, {row['gallery_seconds']['max']:.2f} s max",
             "job": row["job_seconds"], "last": row["last_result_after_first_press"],
             "memory": row["peak_rss_mb"], "disk": row["cache_mb"] + row["downloads_mb"]}
    return {"title": "A classroom on loopback", "command": f"python bench/classroom.py --visitors {args.visitors} "
            f"--within {args.within:g}", "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, nothing else running",
            "columns": [{"key": "visitors", "header": "visitors pressing Compress"},
                        {"key": "done", "header": "got the result"},
                        {"key": "compressions", "header": "compressions run"},
                        {"key": "gallery", "header": "gallery figures after opening"},
                        {"key": "job", "header": "the one job (s)", "format": "f0"},
                        {"key": "last", "header": "last result, s after the first press", "format": "f0"},
                        {"key": "memory", "header": "peak memory (MB)", "format": "f0"},
                        {"key": "disk", "header": "disk left (MB)", "format": "f0"}],
            "rows": [shown], "raw": row}


if __name__ == "__main__":
    main()
