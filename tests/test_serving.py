"""Serving cost: both models measured alike, the micro-benchmark's break-even, and what the page shows."""
from __future__ import annotations

import torch
from conftest import VOCAB, tiny_ids, tiny_model

from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.figures.plots import cost_figure
from svd_explorer.model.serving import CostSettings, _crossing, compare_cost, layer_timing, stored_bytes, tensor_bytes
from svd_explorer.ui.texts import cost_markdown

FAST = CostSettings(prefill_tokens=16, prompt_tokens=4, new_tokens=3, batches=(1, 2), repeats=2)


def test_both_models_are_measured_alike_and_the_compressed_one_holds_fewer_bytes():
    original = tiny_model("llama")
    compressed, record = compress_model(original, get_method("svd"), 0.4, tiny_ids())
    cost = compare_cost(original, compressed, FAST, VOCAB)
    for model in ("original", "compressed"):
        c = cost[model]
        assert c["prefill_tokens_per_s"] > 0 and c["decode_tokens_per_s_batch2"] > 0
        assert c["decode_seconds_batch1"]["min"] <= c["decode_seconds_batch1"]["median"]
        assert c["memory_bytes_batch2"] > c["tensor_bytes"]          # the KV cache is counted too
    assert cost["compressed"]["bytes"]["float32"] < cost["original"]["bytes"]["float32"]
    assert cost["compressed"]["bytes"]["float32"] == 2 * cost["compressed"]["bytes"]["bfloat16"]
    shapes = {tuple(t["shape"]) for t in cost["layers"]}
    assert shapes == {tuple(layer.shape) for layer in record.layers} and {t["rows"] for t in cost["layers"]} == {16, 8}


def test_stored_bytes_count_a_tied_embedding_once():
    model = tiny_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert stored_bytes(model)["float32"] == 4 * sum(p.numel() for p in model.parameters()) == tensor_bytes(model) - \
        sum(b.numel() * b.element_size() for b in model.buffers())


def test_time_break_even_is_where_the_factors_become_as_slow_as_the_dense_layer():
    assert _crossing([10, 20, 30], [1.0, 2.0, 3.0], 2.5) == 25.0
    assert _crossing([10, 20], [3.0, 4.0], 2.0) == 0.0          # slower at every rank
    assert _crossing([10, 20], [1.0, 1.5], 2.0) is None          # faster at every rank measured
    timing = layer_timing(48, 32, 4, torch.device("cpu"), points=4, repeats=2)
    assert timing.ranks == [8, 16, 24, 32] and len(timing.lowrank_seconds) == 4
    assert timing.parameter_break_even == 48 * 32 / 80


def test_the_cost_tab_draws_the_layers_and_marks_the_kept_ranks():
    original = tiny_model("llama")
    compressed, record = compress_model(original, get_method("svd"), 0.4, tiny_ids())
    result = record.to_dict() | {"cost": compare_cost(original, compressed, FAST, VOCAB)}
    fig = cost_figure(result)
    diamonds = [t for t in fig.data if t.marker.symbol == "diamond"]
    assert len(fig.data) - len(diamonds) == len(result["cost"]["layers"]) and diamonds
    table = cost_markdown(result)
    assert "prefill tokens/s" in table and "decode tokens/s, batch 2" in table and "weights in bfloat16" in table
    assert "did not measure" in cost_figure({"layers": []}).layout.annotations[0].text
