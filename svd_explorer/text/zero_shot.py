"""Zero-shot tasks through lm-eval on a model in memory (original or compressed), offline.

Task names are the stock lm-eval ones (piqa, arc_easy, arc_challenge, boolq, openbookqa, winogrande,
lambada_openai). When the data folder holds a task's file, the task definition shipped in
svd_explorer/tasks/ runs from it with the stock prompt and no network; any other stock name (for
example hellaswag) goes to lm-eval's own definition, which needs the hub.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..model.hub import hub_reachable
from .sources import data_dir

TASK_FOLDER = Path(__file__).parent / "tasks"
LOCAL_FILES = {
    "piqa": "piqa/valid.jsonl",
    "arc_easy": "arc/arc_easy.jsonl",
    "arc_challenge": "arc/arc_challenge.jsonl",
    "boolq": "boolq/boolq.jsonl",
    "openbookqa": "openbookqa/openbook_qa.jsonl",
    "winogrande": "winogrande/winogrande.jsonl",
    "lambada_openai": "lambada_openai/lambada_openai.jsonl",
}
SEED = 1234
BATCH_SIZE = 8


class TaskError(ValueError):
    """A task that cannot run here; the message says why."""


def split_tasks(tasks) -> list[str]:
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks or [])
    return [n.strip() for n in names if n.strip()]


def resolve(names: list[str], data: str | None = None) -> tuple[dict[str, str], Path | None]:
    """user name -> lm-eval task name (local definition when the file is there, stock otherwise)."""
    folder = Path(data) if data else data_dir()
    if data and not folder.is_dir():
        raise TaskError(f"the task data folder {data} is not a folder")
    mapping = {}
    for name in names:
        if folder is not None and name in LOCAL_FILES and (folder / LOCAL_FILES[name]).exists():
            mapping[name] = f"{name}_local"
        elif hub_reachable():
            mapping[name] = name
        else:
            where = f"{folder}/{LOCAL_FILES[name]}" if folder is not None and name in LOCAL_FILES else None
            reason = f"{where} is missing" if where else (
                f"no local file for {name!r}" if name in LOCAL_FILES else f"{name!r} has no offline definition")
            raise TaskError(f"cannot run task {name!r}: {reason} and the Hugging Face hub is not reachable "
                            f"(tasks with local files: {', '.join(LOCAL_FILES)})")
    return mapping, folder


def available_tasks(data: str | None = None) -> dict[str, str]:
    """Every task that can run here, with where its data comes from (local file or the hub)."""
    folder = Path(data) if data else data_dir()
    online = hub_reachable()
    out = {}
    for name in list(LOCAL_FILES) + ["hellaswag"]:
        if folder is not None and name in LOCAL_FILES and (folder / LOCAL_FILES[name]).exists():
            out[name] = "local file"
        elif online:
            out[name] = "Hugging Face hub"
    return out


@contextlib.contextmanager
def stop_on_forward(model, should_stop):
    """Call `should_stop()` before every forward of `model`, so a Stop ends lm-eval within one batch."""
    if should_stop is None:
        yield
        return
    handle = model.register_forward_pre_hook(lambda module, args: should_stop())
    try:
        yield
    finally:
        handle.remove()


def _go_offline() -> None:
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        os.environ[var] = "1"


def run_tasks(model, tokenizer, tasks, *, limit: int | None = None, data: str | None = None,
              batch_size: int = BATCH_SIZE, on_task=None, should_stop=None) -> dict[str, dict]:
    """{task: {acc, acc_stderr, acc_norm?, acc_norm_stderr?, samples}} for each task, one at a time."""
    names = split_tasks(tasks)
    if not names:
        return {}
    mapping, folder = resolve(names, data)
    if not hub_reachable():
        _go_offline()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    stock_needed = any(mapped == name for name, mapped in mapping.items())
    manager = TaskManager(include_path=str(TASK_FOLDER), include_defaults=stock_needed,
                          metadata={"data_dir": str(folder) if folder else ""})
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = {}
    for name in names:
        if should_stop is not None:
            should_stop()
        if on_task is not None:
            on_task(name)
        with stop_on_forward(model, should_stop):
            result = lm_eval.simple_evaluate(
                model=lm, tasks=[mapping[name]], task_manager=manager, limit=limit, batch_size=batch_size,
                random_seed=SEED, numpy_random_seed=SEED, torch_random_seed=SEED, fewshot_random_seed=SEED,
                bootstrap_iters=1000, log_samples=False, verbosity="ERROR")
        out[name] = _scores(result, mapping[name])
    return out


def _scores(result: dict, task: str) -> dict:
    raw = result["results"][task]
    scores = {}
    for metric in ("acc", "acc_norm", "perplexity"):
        if f"{metric},none" in raw:
            scores[metric] = raw[f"{metric},none"]
            stderr = raw.get(f"{metric}_stderr,none")
            scores[f"{metric}_stderr"] = stderr if isinstance(stderr, (int, float)) else None
    scores["stderr"] = scores.get("acc_stderr")
    scores["samples"] = result.get("n-samples", {}).get(task, {}).get("effective")
    return scores
