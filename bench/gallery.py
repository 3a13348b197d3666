"""The app's gallery: every method at its own allocation and at the grid's best (`sensitivity`, measure
0.5, score kl), at 5/10/20/30/40%, on the embedded SmolLM2, and the four rows the grid ranks (svd-llm and
aa-svd, uniform and `sensitivity`) at 10/20/40% on the embedded Gemma 3 270M, with both models' greedy
answers to the example prompts. The page opens on it.

    python bench/gallery.py run [--model gemma3-270m] [--methods svd,...] [--allocations auto,...] [--ratios ...]
    python bench/gallery.py reference   # the page's default run from a clone without data, timed twice
    python bench/gallery.py pack        # svd_explorer/study/gallery.json.gz from the finished runs

Settings are the page's defaults, so a visitor's first run lands among the gallery's points: calibration
16 x 256 tokens of BoolQ passages (seed 0), evaluation on the first 8 x 256 tokens of WikiText-2 test,
8 development windows (BoolQ passages never calibrated on) for `dev_ppl`; greedy answers of 64 tokens
through the chat template. Every run is timed from scratch (no statistics cache), as a visitor's first run
is; `run` skips what is done (one JSON per run in bench/results/gallery/). Serving cost is not measured
(`--no-cost`: on this CPU it took longer than the compression of a fast method); the Cost tab says so
for gallery runs.

`reference` times, in a fresh process and an empty cache, the page's first run as a clone without the
data folder makes it (text sampled from the model for calibration and evaluation, serving cost measured,
the model loaded from disk), then the same run again (the sampled text read back): the page's estimate
of a run's whole time starts from these and the gallery's runs.

The page's first run (`default`) is chosen here on development text only, never on the prompts: of the
methods at their own allocation whose whole time stays under DEFAULT_SECONDS, the run removing the most
parameters whose development perplexity stays within DEFAULT_DEV_FACTOR of the original's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "gallery"

from provenance import commit  # noqa: E402

from svd_explorer.compress.methods import REGISTRY  # noqa: E402
from svd_explorer.model.hub import DEFAULT_MODEL  # noqa: E402
from svd_explorer.model.loading import load_model  # noqa: E402
from svd_explorer.run.config import with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402
from svd_explorer.study import gallery  # noqa: E402
from svd_explorer.text.generation import EXAMPLES, side_by_side  # noqa: E402

MODEL = DEFAULT_MODEL
RATIOS = (0.05, 0.1, 0.2, 0.3, 0.4)
SECOND = "gemma3-270m"                     # its runs: the rows of the Gemma table in docs/RESULTS.md
SECOND_METHODS, SECOND_RATIOS = ("svd-llm", "aa-svd"), (0.1, 0.2, 0.4)
ALLOCATIONS = {"auto": {}, "sensitivity": {"measure": 0.5, "score": "kl"}}
PAGE = dict(calib="boolq", calib_samples=16, seq_len=256, eval_source="wikitext2", eval_windows=8, dev_windows=8,
            search_windows=2, seed=0, stats_cache="off", cost=False)
NEW_TOKENS = 64
DEFAULT_SECONDS = 150        # the whole run with the model loaded: 180 s leaves room for loading it and the queue
DEFAULT_DEV_FACTOR = 2.0
SETTINGS = ("the page's defaults: calibration 16 × 256 tokens of BoolQ passages (seed 0), evaluation on the first "
            "8 × 256 tokens of WikiText-2 test, `sensitivity` scored on 2 development windows (the page: 4), greedy "
            "answers of 64 tokens")


def answers(model, tokenizer) -> list[str]:
    out = []
    for prompt in EXAMPLES:
        text = ""
        for texts in side_by_side([model], tokenizer, prompt, max_new_tokens=NEW_TOKENS):
            text = texts[0]
        out.append(text.strip())
    return out


def run_all(model: str, methods: list[str], allocations: list[str], ratios: list[float]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lm = load_model(model)
    original = original_file(model)
    if not original.exists():
        original.write_text(json.dumps({"answers": answers(lm.model, lm.tokenizer)}))
    for method in methods:
        for allocation in allocations:
            for ratio in ratios:
                one(lm, model, method, allocation, ratio)


def model_of(run: dict) -> str:
    return gallery.model_of(run["result"])


def original_file(model: str) -> Path:
    return OUT / f"original-{model}.json"


def one(lm, model: str, method: str, allocation: str, ratio: float) -> None:
    name = gallery.entry_name(method, allocation, ratio, model)
    path = OUT / (name.replace("/", "_") + ".json")
    if path.exists():
        return
    config = with_preset("demo", model=model, method=method, ratio=ratio, allocation=allocation,
                         allocation_options=ALLOCATIONS[allocation], **PAGE)
    clock = time.perf_counter()
    outcome = run(config, loaded=lm, keep_model=True, measure_forward=False)
    result = outcome.record.to_dict()
    print(f"{name}: {time.perf_counter() - clock:.0f} s, ppl {result.get('ppl_compressed')}", file=sys.stderr,
          flush=True)
    shown = result["label"] if model == MODEL else f"{model} · {result['label']}"
    path.write_text(json.dumps({"name": name, "label": f"gallery · {shown}", "result": result, "commit": commit(),
                                "answers": answers(outcome.model, lm.tokenizer)}))


def reference() -> None:
    """Two timed runs of the page's default setting as a clone without data runs it (see the docstring)."""
    default = default_entry([json.loads(p.read_text()) for p in sorted(OUT.glob("*_*.json"))])
    if default is None:
        raise SystemExit("no gallery run fits the page's default yet: run `python bench/gallery.py run` first")
    method, allocation, ratio = default.split("/")
    os.environ["SVD_EXPLORER_CACHE"] = cache = tempfile.mkdtemp(prefix="svd-explorer-reference-")
    page = PAGE | {"calib": "self", "eval_source": "self", "dev_windows": 0, "search_windows": 4, "cost": True}
    config = with_preset("demo", model=MODEL, method=method, ratio=float(ratio), allocation=allocation,
                         allocation_options=ALLOCATIONS[allocation], **page)
    try:
        runs = [run(config, measure_forward=False).record.to_dict() for _ in range(2)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    for result in runs:
        print(f"reference: {result['timings']}", file=sys.stderr, flush=True)
    (OUT / "reference.json").write_text(json.dumps({"first": runs[0], "again": runs[1]}))


def default_entry(runs: list[dict]) -> str | None:
    """Of the methods at their own allocation, the most compressing run whose whole time stays under
    DEFAULT_SECONDS and whose development perplexity stays within DEFAULT_DEV_FACTOR of the original's.
    A search (`sensitivity`) is left out: the page scores it on 4 development windows, not the gallery's 2,
    and a clone without data samples them from the model, which took saes-svd + sensitivity at 20% (139 s
    here with 2 windows from BoolQ) past 180 s."""
    fits = [r for r in runs if r["result"]["config"]["allocation"] == "auto" and model_of(r) == MODEL and
            r["result"]["timings"]["total"] <= DEFAULT_SECONDS and
            (r["result"].get("dev_ppl") or 1e9) <= DEFAULT_DEV_FACTOR * (r["result"].get("dev_ppl_original") or 0)]
    return max(fits, key=lambda r: (r["result"]["ratio"], -r["result"]["dev_ppl"]))["name"] if fits else None


def pack() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*_*.json"))]
    timed = json.loads((OUT / "reference.json").read_text()) if (OUT / "reference.json").exists() else {}
    order = {name: i for i, name in enumerate(REGISTRY)}
    runs.sort(key=lambda r: (model_of(r) != MODEL, order.get(r["result"]["method"], 99),
                             r["result"]["config"]["allocation"] != "auto", r["result"]["ratio"]))
    originals = {m: json.loads(original_file(m).read_text())["answers"] for m in dict.fromkeys(map(model_of, runs))}
    made = {"command": "python bench/gallery.py run && python bench/gallery.py run --model gemma3-270m && "
                       "python bench/gallery.py pack", "commit": runs_commits(runs),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "date": time.strftime("%Y-%m-%d"),
            "settings": SETTINGS} | ({"reference": _timing_record(timed["first"])} if timed else {})
    default = default_entry(runs)
    kept = [{k: r[k] for k in ("name", "label", "result", "answers")} for r in runs]
    size = gallery.pack(gallery.GALLERY_FILE, made, EXAMPLES, originals, kept, default)
    print(f"{len(kept)} runs, {size / 2**20:.2f} MB, default {default}")
    answers_table([r for r in runs if model_of(r) == MODEL], made, originals[MODEL][0], default)


def runs_commits(runs: list[dict]) -> str:
    """The commits that made the runs, each with the models it ran ('b8106ec (smollm2-135m)')."""
    made: dict[str, list[str]] = {}
    for r in runs:
        models = made.setdefault(r.get("commit", "unknown"), [])
        if model_of(r) not in models:
            models.append(model_of(r))
    return ", ".join(f"{c} ({', '.join(models)})" for c, models in made.items())


def answers_table(runs: list[dict], made: dict, original: str, default: str | None) -> None:
    """docs/results/answers.json: every method's answer to the first example prompt, at its own allocation
    (the default model's runs)."""
    def cut(text: str) -> str:
        text = " ".join(text.replace("|", "/").split()) or "(stops at once: end token first)"
        return text if len(text) <= 90 else text[:89] + "…"
    rows = [{"run": "original", "dev": runs[0]["result"].get("dev_ppl_original"), "answer": cut(original)}]
    rows += [{"run": r["name"] + (" (the page's first run)" if r["name"] == default else ""),
              "dev": r["result"].get("dev_ppl"), "answer": cut(r["answers"][0])}
             for r in runs if r["result"]["config"]["allocation"] == "auto"]
    table = {"title": "Greedy answers to the first example prompt",
             "command": "python bench/gallery.py run && python bench/gallery.py pack",
             "commit": runs_commits(runs), "machine": made["machine"],
             "columns": [{"key": "run", "header": "run (method/allocation/ratio)"},
                         {"key": "dev", "header": "development perplexity", "format": "f1"},
                         {"key": "answer", "header": f"answer to “{EXAMPLES[0]}”"}], "rows": rows}
    (ROOT / "docs" / "results" / "answers.json").write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")


def _timing_record(result: dict) -> dict:
    """What the page's estimate reads of the reference run (the whole record would repeat a gallery run)."""
    return {k: result[k] for k in ("method", "ratio", "params_before", "refine", "config", "calibration",
                                   "evaluation", "timings") if k in result} | {
        "calibration": {"description": result["calibration"]["description"]}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "reference", "pack"])
    parser.add_argument("--model", choices=[MODEL, SECOND], default=MODEL)
    parser.add_argument("--methods")
    parser.add_argument("--allocations", default=",".join(ALLOCATIONS))
    parser.add_argument("--ratios")
    args = parser.parse_args(argv)
    second = args.model == SECOND
    args.methods = args.methods or ",".join(SECOND_METHODS if second else REGISTRY)
    args.ratios = args.ratios or ",".join(map(str, SECOND_RATIOS if second else RATIOS))
    if args.action == "pack":
        return pack()
    if args.action == "reference":
        return reference()
    methods, allocations = args.methods.split(","), args.allocations.split(",")
    ratios = [float(r) for r in args.ratios.split(",")]
    run_all(args.model, methods, allocations, ratios)


if __name__ == "__main__":
    main()
