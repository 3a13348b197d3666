"""Zero-shot tasks through lm-eval, offline, on models in memory."""
import json

import pytest
from conftest import char_tokenizer, tiny_ids, tiny_model

from svd_explorer.cli.main import main
from svd_explorer.text.zero_shot import LOCAL_FILES, TASK_FOLDER, TaskError, resolve, run_tasks


def test_shipped_task_definitions_load_offline(shared_data):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_FOLDER), include_defaults=False,
                          metadata={"data_dir": str(shared_data)})
    assert {f"{t}_local" for t in LOCAL_FILES} <= set(manager.all_tasks)


def test_every_task_runs_on_a_tiny_model(shared_data):
    scores = run_tasks(tiny_model("llama"), char_tokenizer(), ",".join(LOCAL_FILES), limit=4)
    assert set(scores) == set(LOCAL_FILES)
    for task, s in scores.items():
        assert 0 <= s["acc"] <= 1 and s["samples"] == 4, task
    assert "acc_norm" in scores["piqa"] and "acc_norm" not in scores["winogrande"]
    assert "perplexity" in scores["lambada_openai"]


def test_missing_task_data_is_a_clear_error(tmp_path, monkeypatch):
    import svd_explorer.text.zero_shot as evaluation

    monkeypatch.setattr(evaluation, "hub_reachable", lambda: False)
    with pytest.raises(TaskError, match="piqa/valid.jsonl is missing.*not reachable"):
        resolve(["piqa"], str(tmp_path))
    with pytest.raises(TaskError, match="'hellaswag' has no offline definition"):
        resolve(["hellaswag"], str(tmp_path))
    with pytest.raises(TaskError, match="not a folder"):
        resolve(["piqa"], str(tmp_path / "nowhere"))


def test_cli_evaluate_with_tasks(tiny_folder, tmp_path, shared_data):
    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", str(tiny_folder), "--eval", "none", "--tasks", "piqa,arc_easy",
                 "--limit", "4", "--json", str(out)]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    assert set(tasks) == {"piqa", "arc_easy"} and tasks["piqa"]["stderr"] is not None


@pytest.mark.slow
def test_smollm_is_clearly_above_chance(smollm, shared_data):
    scores = run_tasks(smollm.model, smollm.tokenizer, "piqa,arc_easy", limit=100)
    assert scores["piqa"]["acc"] >= 0.58      # chance 0.50
    assert scores["arc_easy"]["acc"] >= 0.38  # chance 0.25


def test_the_original_perplexity_is_remembered_by_text_not_by_description():
    """Two seeds' development windows carry the same description; each must get its own original perplexity
    (the remembered one was reused across seeds within a sweep's process)."""
    from types import SimpleNamespace

    from conftest import tiny_ids

    from svd_explorer.run.engine import _perplexities
    from svd_explorer.text.metrics import evaluate

    model = tiny_model("llama")
    lm = SimpleNamespace(source="tiny", revision=None, model=model, scores={})
    first, second = tiny_ids(2, 16, seed=5), tiny_ids(2, 16, seed=6)
    originals = [_perplexities(lm, model, ids, "dev windows", lambda: None)[1] for ids in (first, second)]
    assert originals == [evaluate(model, ids)["ppl"] for ids in (first, second)]
    assert originals[0] != originals[1]


def test_a_large_vocabulary_is_evaluated_in_bounded_pieces_with_the_same_result(monkeypatch):
    """Gemma 3's 262k-token vocabulary at 2048 tokens is 2 GiB of logits a window: batches shrink to a bound
    and the distributions are compared a few positions at a time, without changing a number."""
    from svd_explorer.text import metrics

    model, other, ids = tiny_model("llama"), tiny_model("llama", seed=1), tiny_ids(count=5, length=16)
    whole = metrics.evaluate(model, ids, reference=other)
    assert metrics.batch_for(2048, 262_144, 4) == 1 and metrics.batch_for(512, 49_152, 4) == 4
    window = ids.shape[1] * metrics.vocabulary(model) * 4
    monkeypatch.setattr(metrics, "LOGITS_BYTES", 2 * window)
    monkeypatch.setattr(metrics, "POSITIONS", 3)
    assert metrics.batch_for(ids.shape[1], metrics.vocabulary(model), 4) == 2
    pieces = metrics.evaluate(model, ids, reference=other)
    assert pieces == pytest.approx(whole, rel=1e-6)
