"""A whole run, as the CLI, the app and the benchmarks do it: load, calibrate, compress, measure, save."""
from __future__ import annotations

import resource
import time

import torch

from .data import data_dir, local_file, text_windows
from .export import save_compressed, versions
from .lowrank import break_even_rank, check_ratio
from .methods import Method
from .metrics import evaluate
from .models import LoadedModel, count_parameters, find_layout, hub_reachable, load_model
from .pipeline import cancel_check, compress_model

EVAL_SEED_OFFSET = 1  # 'self' evaluation text must differ from 'self' calibration text


def resolve_calibration(source: str) -> str:
    """auto: the offline Wikipedia passages when the data folder exists, else WikiText-2 train from the
    hub, else text sampled from the model itself."""
    if source != "auto":
        return source
    if local_file("boolq/boolq.jsonl") is not None:
        return "boolq"
    return "wikitext2" if hub_reachable() else "self"


def resolve_evaluation(source: str) -> str:
    if source != "auto":
        return source
    if hub_reachable() or local_file("wikitext-2-raw/wiki.test.raw") is not None:
        return "wikitext2"
    return "self"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def forward_seconds(model, windows: torch.Tensor, batch_size: int) -> float:
    """One plain forward of `model` over `windows` (after a one-batch warm-up), in seconds."""
    device = next(model.parameters()).device
    model(input_ids=windows[:1].to(device), use_cache=False)
    start = time.perf_counter()
    for i in range(0, len(windows), batch_size):
        model(input_ids=windows[i:i + batch_size].to(device), use_cache=False)
    return time.perf_counter() - start


def _loaded(model) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def calibration_windows(lm: LoadedModel, source: str, samples: int, seq_len: int, seed: int):
    """Random windows of the resolved calibration source: (token ids [samples, seq_len], description)."""
    return text_windows(resolve_calibration(source), lm.model, lm.tokenizer, samples, seq_len, seed,
                        split="train", consecutive=False)


def evaluation_windows(lm: LoadedModel, source: str, windows: int, seq_len: int, seed: int):
    source = resolve_evaluation(source)
    if source == "none" or windows == 0:
        return None, "none"
    return text_windows(source, lm.model, lm.tokenizer, windows, seq_len, seed + EVAL_SEED_OFFSET,
                        split="test", consecutive=True)


def run_compression(model, method: Method, ratio: float, *, calib: str = "auto", calib_samples: int = 32,
                    seq_len: int = 512, seed: int = 0, eval_source: str = "auto", eval_windows: int = 20,
                    batch_size: int = 8, precision: str = "auto", output=None, tasks: str = "",
                    limit=None, task_data=None, log=None, callback=None, cancel=None,
                    keep_model: bool = False, measure_forward: bool = True) -> dict:
    """Compress and measure; returns the JSON-able result (with the model under "_model" if keep_model).

    measure_forward times one plain forward of the original model over the calibration set
    (calib_forward_seconds), so compression time can be read as a multiple of it."""
    log = log or (lambda kind, data: None)
    check_ratio(ratio)
    lm = _loaded(model)
    log("status", f"model: {lm.description}")
    t0 = time.perf_counter()
    calib_ids, calib_desc = calibration_windows(lm, calib, calib_samples, seq_len, seed)
    prep = time.perf_counter() - t0
    log("status", f"calibration: {calib_desc}")
    eval_ids, eval_desc = evaluation_windows(lm, eval_source, eval_windows, seq_len, seed)
    log("status", f"evaluation: {eval_desc}")
    forward = None
    if measure_forward:
        log("status", "timing one plain forward over the calibration set")
        forward = forward_seconds(lm.model, calib_ids, batch_size)

    def relay(kind, data):
        log(kind, data)
        if callback:
            callback(kind, data)

    log("status", f"compressing with {method.name} at ratio {ratio:g}")
    compressed, run = compress_model(lm.model, method, ratio, calib_ids, batch_size=batch_size,
                                     precision=precision, callback=relay, cancel=cancel)
    result = {"model": lm.source, "model_revision": lm.revision, "method": method.name, "ratio": ratio,
              "options": dict(method.config), "params_before": run.params_before, "params_after": run.params_after,
              "linear_params_before": run.linear_params_before, "linear_params_after": run.linear_params_after,
              "seconds": run.seconds, "calib_forward_seconds": forward,
              "calib_prep_seconds": prep,
              "calibration": {"source": calib, "description": calib_desc, "samples": calib_samples,
                              "seq_len": seq_len, "seed": seed, **run.calibration},
              "evaluation": {"source": resolve_evaluation(eval_source), "description": eval_desc,
                             "windows": 0 if eval_ids is None else len(eval_ids), "seq_len": seq_len}}
    if eval_ids is not None:
        log("status", "evaluating the original and the compressed model")
        scores = evaluate(compressed, eval_ids, reference=lm.model, should_stop=cancel_check(cancel))
        result.update(ppl_original=scores["ppl_reference"], ppl_compressed=scores["ppl"],
                      kl_to_original=scores["kl_to_original"], top1_agreement=scores["top1_agreement"])
    if tasks:
        from .evaluation import run_tasks

        log("status", f"zero-shot tasks: {tasks}")
        result["tasks"] = {"original": run_tasks(lm.model, lm.tokenizer, tasks, limit=limit, data=task_data),
                           "compressed": run_tasks(compressed, lm.tokenizer, tasks, limit=limit, data=task_data)}
    run_dict = run.to_dict()
    result.update(layers=run_dict["layers"], depth_error=run_dict["depth_error"], blocks=run_dict["blocks"],
                  extras=run_dict["extras"], layout=run_dict["layout"], versions=versions())
    if output:
        info = {"base": {"source": lm.source, "revision": lm.revision}, "method": method.name, "ratio": ratio,
                "options": dict(method.config), "calibration": result["calibration"],
                "ranks": run.ranks()}
        save_compressed(compressed, lm.tokenizer, output, info)
        result["output"] = str(output)
        log("status", f"saved to {output}")
    result["peak_rss_mb"] = peak_rss_mb()
    if keep_model:
        result["_model"] = compressed
    return result


def evaluate_model(model, *, eval_source: str = "auto", windows: int = 20, seq_len: int = 512, seed: int = 0,
                   tasks: str = "", limit=None, task_data=None, log=None) -> dict:
    log = log or (lambda kind, data: None)
    lm = _loaded(model)
    log("status", f"model: {lm.description}")
    result = {"model": lm.source, "params": count_parameters(lm.model)}
    ids, desc = evaluation_windows(lm, eval_source, windows, seq_len, seed)
    if ids is not None:
        log("status", f"evaluation: {desc}")
        result.update(ppl=evaluate(lm.model, ids)["ppl"], evaluation={"description": desc, "windows": len(ids),
                                                                      "seq_len": seq_len})
    if tasks:
        from .evaluation import run_tasks

        result["tasks"] = run_tasks(lm.model, lm.tokenizer, tasks, limit=limit, data=task_data)
    if lm.manifest:
        result["manifest"] = {k: lm.manifest.get(k) for k in ("base", "method", "ratio", "options")}
    return result


def model_info(model, ratio: float, method: Method | None = None) -> dict:
    """Parameter counts, per-kind ranks and break-even ranks for a ratio, before anything runs."""
    lm = _loaded(model)
    return budget_summary(find_layout(lm.model), count_parameters(lm.model), ratio, method) | {"model": lm.source}


def budget_summary(layout, total_params: int, ratio: float, method: Method | None = None) -> dict:
    """What a method's plan keeps at `ratio`: totals, and per projection kind the shape, the rank of the
    first compressed block and the break-even rank. Needs only shapes (works on a meta-device model)."""
    from .methods import get_method

    plan = (method or get_method("svd")).plan(layout, ratio)
    dense = sum(p.dense_params for p in layout.projections)
    kept = dense - sum(p.dense_params - plan[p.name].rank * (p.out_features + p.in_features)
                       for p in layout.projections if p.name in plan)
    kinds = {}
    for p in layout.projections:
        if p.kind not in kinds and p.name in plan:
            kinds[p.kind] = {"shape": [p.out_features, p.in_features],
                             "break_even_rank": round(break_even_rank(p.out_features, p.in_features), 1),
                             "rank": plan[p.name].rank}
    return {"blocks": layout.num_blocks, "compressed_blocks": len({p.block for p in layout.projections
                                                                   if p.name in plan}),
            "projections": len(layout.projections), "params": total_params, "linear_params": dense,
            "ratio": ratio, "params_after": total_params - dense + kept, "linear_params_after": kept,
            "kinds": kinds, "data_dir": str(data_dir()) if data_dir() else None}
