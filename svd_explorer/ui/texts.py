"""What the page says: explanations for a student who knows SVD but not these papers, and the formatters
that turn records and job events into Markdown. No state, no Gradio: plain functions of plain data."""
from __future__ import annotations

import time

from ..compress.allocation import ALLOCATIONS
from ..compress.methods import REGISTRY
from ..run import estimate
from ..run.timings import describe

READY = "Ready."   # the status line of a page that has not run anything

EXPLAIN = {
    "budget": "Each projection W (m×n) becomes two thin matrices A (m×k) and B (k×n): k(m+n) numbers instead of "
              "mn. That only saves memory below the **break-even rank** mn/(m+n). The ratio is the share of the "
              "projections' parameters removed, so with a uniform allocation k = ⌊(1−ratio)·mn/(m+n)⌋; embeddings "
              "and the LM head stay dense.",
    "spectra": "Grey: the singular values of the raw weight W; blue: those of the matrix the method actually "
               "truncates (W for plain SVD, W·diag(s) for ASVD, W·S for the whitening methods, M(β) for SAES), "
               "each divided by its largest. Everything right of the red line is thrown away. LLM weights have "
               "flat spectra, so plain SVD discards a lot. Whitening multiplies W by the square root S of the "
               "input statistics: the tail then measures the output error on real inputs and usually falls "
               "faster, so the same rank keeps more of what matters. **Look for** the energy share beyond the "
               "kept rank, and how much steeper blue is than grey.",
    "depth": "Blocks are compressed one after the other. The compressed model's hidden states drift away from the "
             "original model's; this is their relative distance after every block, measured on calibration "
             "text. Methods that only fit each layer locally (SVD-LLM) let the error pile up; AA-SVD and SAES-SVD "
             "fit each layer to what the **original** model produced, from the inputs the compressed model "
             "really feeds it, so they pull the drift back; a depth allocation leaves the first blocks untouched "
             "(zero error) and compresses the last ones harder. **Look for** the level at the last block, which "
             "is what the LM head sees. Earlier runs are overlaid in thin lines. A sudden *drop* usually means the "
             "hidden states' norm jumped (LLMs grow a few huge 'massive activation' channels), not that the error "
             "shrank: the cosine distance is blind to norms.",
    "heatmap": "Relative error ‖(W−W')X‖/‖WX‖ of each compressed projection on its calibration inputs X (the "
               "compressed model's inputs for the methods that use them, else the original's). **Look for** the "
               "projection kinds that are hardest to compress and whether they get harder with depth.",
    "ranks": "Where the rank went: each projection kind's kept rank through depth, as a share of its break-even "
             "rank (1 = the factors store as much as the dense weight, so nothing is saved). A uniform allocation "
             "draws flat lines. Why a method may want more rank in some blocks: an error made early travels "
             "through every later block, some projections' inputs are nearly low-rank (cheap to compress) while "
             "others are not, and the last blocks feed the LM head directly. Earlier runs are drawn faintly.",
    "cost": "What the compression buys when the model serves: tokens per second reading a prompt (prefill) and "
            "generating with the KV cache (decode, one sequence and eight), memory while generating and bytes "
            "on disk, for both models on the run's device. Removing 20% of the parameters need not make "
            "generation 20% faster: a factorised layer runs two thin products instead of one, and on small "
            "matrices or few tokens that costs about as much until the rank is well below break-even. The "
            "picture times one layer of each shape alone: below the dashed line the factors are faster; the "
            "diamonds are the ranks this run kept.",
    "refine": "After every projection of a block is replaced, the refinement stage tunes the whole block (both "
              "factors of every projection, and the norms) with a few gradient steps, so that the compressed block "
              "fed the compressed model's hidden states reproduces the original block's output. AA-SVD does this "
              "by default; any method can switch it on. Left: the loss per step of one block; right: every "
              "block's calibration loss before and after. A block whose loss would rise is restored.",
    "compare": "Every run of this session: quality against the share of the whole model's parameters kept, and the "
               "original model at 1. Perplexity and the KL divergence from the original model's next-token "
               "distribution: lower is better; top-1 agreement (how often both models' most likely next token is "
               "the same): higher. A run whose allocation is not its method's own is drawn open. A sweep folder "
               "(python -m svd_explorer sweep) or a zip of one adds its configurations with error bars from their "
               "calibration seeds.",
    "generate": "The same prompt, sampling settings and seed through the original and the compressed model, "
                "token by token (with the model's chat template when it has one). Temperature 0 is greedy.",
    "zero_shot": "Accuracy on multiple-choice benchmarks through lm-eval. Chance is 50% for PIQA, BoolQ and "
                 "WinoGrande and 25% for ARC and OpenBookQA. Each task runs on the first *limit* examples: keep it "
                 "small on a CPU. A BoolQ score after calibrating on BoolQ passages has seen those passages.",
    "download": "The compressed model as a folder, zipped, with a model card (README.md) saying how it was made "
                "and how to load it, and the run's full JSON result. **Factors**: the low-rank factors in bfloat16 "
                "and a small modeling file, so `AutoModelForCausalLM.from_pretrained(folder, "
                "trust_remote_code=True)` loads it with transformers alone (without the flag transformers refuses "
                "it rather than load random weights). **Merged**: the factors multiplied back into dense weights, "
                "a standard checkpoint any tool loads: the same answers, none of the savings.",
    "sizes": "Parameters removed are not bytes saved when the original was quantised: the embedded model's file "
             "stores 4-bit weights, the compressed download 16-bit factors.",
}


def duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min"


def m(n: int | float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def method_markdown(name: str) -> str:
    cls = REGISTRY[name]
    note = " *Reimplemented from the paper; numbers may differ from its tables.*" if cls.reimplemented else ""
    allocation = "" if cls.default_allocation[0] == "uniform" else \
        f" Its own allocation: **{cls.default_allocation[0]}**."
    refine = " Block refinement is on by default." if cls.refines_by_default else ""
    return f"**{cls.title}**: {cls.summary}{allocation}{refine}  \n<small>{cls.paper}.{note}</small>"


def allocation_markdown(name: str, method: str) -> str:
    if name == "auto":
        own = REGISTRY[method].default_allocation[0]
        return f"**auto**: {method}'s own allocation, **{own}** ({ALLOCATIONS[own].summary})."
    cls = ALLOCATIONS[name]
    return f"**{cls.title}**: {cls.summary}.  \n<small>Source: {cls.source}. Cost: {cls.cost}.</small>"


def budget_markdown(summary: dict, title: str) -> str:
    """The ratio's effect on the projections, then where the model's parameters are (the embedding of a large
    vocabulary stays dense, so the whole model shrinks by much less than the ratio), then the ranks per kind."""
    kept = summary["params_after"] / summary["params"]
    scope = (f"in {summary['compressed_blocks']} of {summary['blocks']} blocks"
             if summary["compressed_blocks"] < summary["blocks"] else f"in all {summary['blocks']} blocks")
    lines = [f"**{title} at ratio {summary['ratio']:g}** removes "
             f"{m(summary['linear_params'] - summary['linear_params_after'])} of the {m(summary['linear_params'])} "
             f"projection parameters {scope}: **{100 * summary['removed_share_of_model']:.1f}% of the whole "
             f"model**, {m(summary['params'])} → **{m(summary['params_after'])}** ({100 * kept:.1f}% kept).", "",
             *_parts_table(summary), "", "| kind | shape | rank | break-even |", "|:--|--:|--:|--:|"]
    for kind, info in summary["kinds"].items():
        rows, cols = info["shape"]
        lines.append(f"| {kind} | {rows}×{cols} | {info['rank']} | {info['break_even_rank']:.0f} |")
    if summary.get("note"):
        lines.append(f"\n<small>{summary['note']}</small>")
    return "\n".join(lines)


def _parts_table(summary: dict) -> list[str]:
    """Projections, embedding, LM head (a row of its own only when not tied), the rest, the whole model."""
    total = summary["params"]
    rows = [("projections (compressed)", summary["linear_params"], summary["linear_params_after"])]
    if "embedding_params" in summary:
        tied = summary["lm_head_tied"]
        rows.append(("embedding" + (" (tied to the LM head)" if tied else ""), summary["embedding_params"],
                     summary["embedding_params"]))
        if not tied and summary["lm_head_params"]:
            rows.append(("LM head", summary["lm_head_params"], summary["lm_head_params"]))
        rows.append(("other (norms, biases)", summary["other_params"], summary["other_params"]))
    lines = ["| part | parameters | share of the model | after |", "|:--|--:|--:|--:|"]
    lines += [f"| {name} | {m(n)} | {100 * n / total:.1f}% | {m(after)} |" for name, n, after in rows]
    return lines + [f"| **whole model** | {m(total)} | 100% | **{m(summary['params_after'])}** |"]


# Measured on an empty cache: `SVD_EXPLORER_CACHE=/tmp/c python -m svd_explorer compress --model smollm2-135m
# --method svd-llm --ratio 0.2 --calib boolq --calib-samples 16 --seq-len 256 --eval-windows 0 --no-cost` left
# 404 MB of statistics (float64 Gram matrices as upper triangles: their size depends on the model, not on the
# text) and 448 MB of stored decompositions; methods that read the compressed stream (aa-svd, saes-svd) store
# neither by default.
def cache_per_run(keeps_decompositions: bool | None) -> str:
    """What a first run adds (measured, command above); None: not known whether this bound keeps SVDs."""
    if keeps_decompositions is None:
        return "404 MB of statistics the first time, and 448 MB of decompositions where the bound allows"
    if keeps_decompositions:
        return "about 0.85 GB the first time (404 MB of statistics, 448 MB of stored decompositions)"
    return "about 0.4 GB the first time (404 MB of statistics; under this bound its decompositions are not kept)"


def disk_markdown(used: int, limit: float, folder: str | None, keeps_decompositions: bool | None) -> str:
    """The cache's size and bound; the folder only on a user's own machine."""
    where = f" in `{folder}`" if folder else ""
    return (f"<small>Disk: the statistics cache{where} holds **{size(used)}** (bound {size(int(limit))}, oldest "
            f"evicted first; `SVD_EXPLORER_STATS_CACHE_GB`). A run of the embedded model at the page's defaults "
            f"adds {cache_per_run(keeps_decompositions)}; runs of the same model and calibration text share "
            f"it.</small>")


def gallery_status(label: str) -> str:
    return (f"Showing **{label}**, a precomputed run (no weights: its figures and stored answers). Press "
            f"**Compress** to run the setting above yourself, or pick a starting point below.")


def metrics_markdown(label: str, r: dict, precomputed: str | None = None) -> str:
    """The run's numbers; a gallery run says how it was made."""
    kept = r["params_after"] / r["params_before"]
    made = [f"*Precomputed (gallery), {precomputed}.*"] if precomputed else []
    out = [f"### {label}", *made, f"{r['model']} · parameters {m(r['params_before'])} → **{m(r['params_after'])}** "
           f"({100 * kept:.1f}% kept) · {r.get('device', 'cpu')}",
           f"Time {describe(r.get('timings')) or format(r['seconds'], '.0f') + ' s of compression'}."]
    if r.get("ppl_compressed") is not None:
        ev = r["evaluation"]
        out += ["", f"| {ev['description'].split(':')[0]}, {ev['windows']}×{ev['seq_len']} tokens | original | "
                    f"compressed |", "|---|---|---|",
                f"| perplexity | {r['ppl_original']:.2f} | **{r['ppl_compressed']:.2f}** |",
                f"| KL to the original | 0 | {r['kl_to_original']:.3f} |",
                f"| top-1 agreement | 100% | {100 * r['top1_agreement']:.1f}% |"]
    info = (r.get("allocation") or {}).get("info") or {}
    if info.get("compressed_blocks") and len(info["compressed_blocks"]) < len(r.get("blocks", [])):
        blocks = info["compressed_blocks"]
        out.append(f"\nAllocation {r['allocation']['name']}: blocks {blocks[0]}–{blocks[-1]} compressed "
                   f"(up to {info['block_ratio']:.2f} each), the others kept dense.")
    return "\n".join(out)


GALLERY_COST = ("Precomputed runs skip the serving cost: timing both models took longer than compressing on the "
                "gallery's CPU. Press Compress to run this setting here with its cost measured.")


def cost_markdown(r: dict) -> str:
    """The serving cost of both models as a table (measured, with the device and the settings)."""
    cost = r.get("cost") or {}
    if cost.get("skipped") or not cost.get("original"):
        return cost.get("skipped") or "This run did not measure its serving cost."
    o, c, s = cost["original"], cost["compressed"], cost["settings"]
    rows = [("prefill tokens/s", "prefill_tokens_per_s", "{:.0f}")] + [
        (f"decode tokens/s, batch {b}", f"decode_tokens_per_s_batch{b}", "{:.1f}") for b in s["batches"]] + [
        (f"memory while generating, batch {b}", f"memory_bytes_batch{b}", None) for b in s["batches"]]
    lines = [f"Measured on {cost['device']}: prefill of {s['prefill_tokens']} tokens, decoding {s['new_tokens']} "
             f"tokens after a {s['prompt_tokens']}-token prompt; best of {s['repeats']}.", "",
             "| | original | compressed |", "|---|---|---|"]
    lines += [f"| {label} | {_cost(o[key], fmt)} | **{_cost(c[key], fmt)}** |" for label, key, fmt in rows]
    lines += [f"| weights {'as held in memory' if dtype == 'held' else 'in ' + dtype} | {size(o['bytes'][dtype])} | "
              f"**{size(c['bytes'][dtype])}** |" for dtype in o["bytes"]]
    return "\n".join(lines)


def _cost(value, fmt: str | None) -> str:
    return size(value) if fmt is None else fmt.format(value)


def history_rows(runs) -> list[list]:
    return [[r.label, r.result.get("allocation", {}).get("name", "uniform"), r.result["ratio"],
             round(r.result["params_after"] / r.result["params_before"], 3), _round(r.result.get("ppl_compressed")),
             _round(r.result.get("kl_to_original"), 3), _round(r.result.get("top1_agreement"), 3),
             round((r.result.get("timings") or {}).get("total", r.result["seconds"]), 1)] for r in runs]


def _round(v, digits=2):
    return None if v is None else round(v, digits)


def accuracy(scores: dict | None) -> str:
    if not scores or scores.get("acc") is None:
        return "-"
    stderr = scores.get("acc_stderr")
    return f"{100 * scores['acc']:.1f}%" + (f" ± {100 * stderr:.1f}" if stderr else "")


def job_status(job, position: int, total_projections: int | None) -> str:
    """One line that changes at least every second while a job works: phase, progress, elapsed time, and
    how many other visitors asked for the same run and share it."""
    text, others = _job_line(job, position, total_projections), len(job.followers) - 1
    if others > 0 and not job.cancel.is_set():
        text += f" · shared with {others} other visitor(s) who asked for the same run"
    return text


def _job_line(job, position: int, total_projections: int | None) -> str:
    if job.status == "queued":
        waited = time.time() - job.created
        if job.cancel.is_set():
            return "Stopping… (your job had not started)."
        return (f"Waiting for the worker: {position} job(s) ahead of yours · waiting {waited:.0f} s"
                f"{_expected(job)}.")
    events = job.events_since(0)
    elapsed = f"{job.elapsed:.0f} s elapsed"
    if job.cancel.is_set():
        return f"Stopping… · {job.stop_reason or 'you pressed Stop'} · {elapsed}"
    status = next((d for _, k, d in reversed(events) if k == "status"), "starting")
    step = next(((t, d) for t, k, d in reversed(events) if k == "progress"), None)
    if step and step[0] < _last_time(events, "status"):
        step = None   # a newer phase began: its own progress will follow
    done = [d for _, k, d in events if k == "projection"]
    text = f"Running: {status} · {elapsed}"
    if step and (not done or step[0] > _last_time(events, "projection")):
        text = f"Running: {status} · {_step(step[1])} · {elapsed}"
    pipeline_left = None
    if done and total_projections:
        start = next((t for t, k, _ in events if k == "start"), job.started or time.time())
        pipeline_left = (time.time() - start) / len(done) * (total_projections - len(done))
        step_text = f" · {_step(step[1])}" if step else ""    # blocks counted from 1 here, as in every step
        text = f"Running: projection {len(done)} of {total_projections}{step_text} · {elapsed}"
    return text + _time_left(job, events, pipeline_left)


def _expected(job) -> str:
    """' · this run takes about 95 s here' before it starts (nothing without an estimate)."""
    return f" · this run takes about {estimate.total(job.estimate):.0f} s here" if job.estimate else ""


def expected_when_asked(job) -> str:
    """' (Expected about 95 s when it was asked for.)': the first estimate beside the measured time."""
    return f" (Expected about {estimate.total(job.estimate):.0f} s when asked for.)" if job.estimate else ""


def _time_left(job, events: list, pipeline_left: float | None) -> str:
    """' · about 40 s left of about 95 s': the job's estimate refined by the phases that ended (or, without
    an estimate, the pipeline's own extrapolation)."""
    if not job.estimate:
        return f" · about {pipeline_left:.0f} s left" if pipeline_left is not None else ""
    finished, since = {}, job.started or time.time()
    for t, kind, data in events:
        if kind == "phase":
            finished[data["name"]] = finished.get(data["name"], 0.0) + data["seconds"]
            since = t
    to_go = estimate.left(job.estimate, finished, time.time() - since, pipeline_left)
    return f" · about {to_go:.0f} s left of about {job.elapsed + to_go:.0f} s"


def _step(data: dict) -> str:
    if "blocks" in data:
        return f"block {data['block'] + 1} of {data['blocks']}: {data['step']}"
    return data["step"]


def _last_time(events, kind: str) -> float:
    return next((t for t, k, _ in reversed(events) if k == kind), 0.0)
