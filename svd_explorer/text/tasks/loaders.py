"""Loaders for the offline task files (formats in ../shared/data/README.md).

Each returns {"test": datasets.Dataset} with the fields of lm-eval's stock task, so the YAMLs beside
this file can use the stock prompts. lm-eval calls them with the task metadata, which carries
`data_dir` (see svd_explorer.text.zero_shot).
"""
from __future__ import annotations

import json
from pathlib import Path


def _rows(data_dir: str, relative: str) -> list[dict]:
    path = Path(data_dir) / relative
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _dataset(rows: list[dict]):
    import datasets

    return {"test": datasets.Dataset.from_list(rows)}


def piqa(data_dir: str, **_):
    labels = (Path(data_dir) / "piqa" / "valid-labels.lst").read_text().split()
    rows = _rows(data_dir, "piqa/valid.jsonl")
    return _dataset([{**row, "label": int(label)} for row, label in zip(rows, labels)])


def _arc(data_dir: str, name: str):
    return _dataset([{"question": r["query"].removeprefix("Question: ").strip(), "choices": r["choices"],
                      "gold": r["gold"]} for r in _rows(data_dir, f"arc/{name}.jsonl")])


def arc_easy(data_dir: str, **_):
    return _arc(data_dir, "arc_easy")


def arc_challenge(data_dir: str, **_):
    return _arc(data_dir, "arc_challenge")


def boolq(data_dir: str, **_):
    rows = []
    for r in _rows(data_dir, "boolq/boolq.jsonl"):
        passage, question = r["query"].removeprefix("Passage: ").split("\nQuestion: ", 1)
        rows.append({"passage": passage, "question": question.rstrip("?"), "label": r["gold"]})
    return _dataset(rows)


def openbookqa(data_dir: str, **_):
    return _dataset([{"question_stem": r["query"], "choices": r["choices"], "gold": r["gold"]}
                     for r in _rows(data_dir, "openbookqa/openbook_qa.jsonl")])


def winogrande(data_dir: str, **_):
    return _dataset([{"options": r["context_options"], "continuation": r["continuation"], "gold": r["gold"]}
                     for r in _rows(data_dir, "winogrande/winogrande.jsonl")])


def lambada_openai(data_dir: str, **_):
    return _dataset([{"text": r["context"] + " " + r["continuation"]}
                     for r in _rows(data_dir, "lambada_openai/lambada_openai.jsonl")])
