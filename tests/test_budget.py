"""The budget says what a ratio is of the whole model: the projections it compresses are one share, the embedding
and LM head (tied or not), which stay dense, another; with a large vocabulary they are most of the file."""
import pytest
from conftest import HIDDEN, VOCAB, tiny_model

from svd_explorer.compress.budget import budget_summary, embedding_counts
from svd_explorer.model.blocks import count_parameters, find_layout
from svd_explorer.ui.texts import budget_markdown


def summary_of(model, ratio=0.2) -> dict:
    return budget_summary(find_layout(model), count_parameters(model), ratio, embeddings=embedding_counts(model))


def test_a_tied_embedding_is_counted_once_and_its_share_shown():
    model = tiny_model("gemma")    # Gemma ties its LM head to the embedding
    s = summary_of(model)
    assert s["lm_head_tied"] and s["embedding_params"] == s["lm_head_params"] == VOCAB * HIDDEN
    assert s["linear_params"] + s["embedding_params"] + s["other_params"] == s["params"]
    assert s["embeddings_share_of_model"] == pytest.approx(VOCAB * HIDDEN / s["params"])
    assert s["linear_share_of_model"] == pytest.approx(s["linear_params"] / s["params"])
    removed = (s["params"] - s["params_after"]) / s["params"]
    assert s["removed_share_of_model"] == pytest.approx(removed)
    assert removed == pytest.approx(0.2 * s["linear_share_of_model"], abs=0.01) and removed < 0.2
    table = budget_markdown(s, "svd")
    assert f"**{100 * removed:.1f}% of the whole model**" in table
    assert f"| embedding (tied to the LM head) | 4.1k | {100 * s['embeddings_share_of_model']:.1f}% | 4.1k |" in table
    assert "| LM head |" not in table and "| q_proj | 32×32 |" in table


def test_an_untied_lm_head_has_a_row_of_its_own():
    model = tiny_model("llama")
    s = summary_of(model, 0.5)
    assert not s["lm_head_tied"] and s["lm_head_params"] == VOCAB * HIDDEN
    assert s["linear_params"] + s["embedding_params"] + s["lm_head_params"] + s["other_params"] == s["params"]
    table = budget_markdown(s, "svd-llm")
    assert "| embedding | 4.1k |" in table and "| LM head | 4.1k |" in table
    assert "| **whole model** |" in table


def test_without_the_counts_the_shares_of_the_projections_remain():
    model = tiny_model("llama")
    s = budget_summary(find_layout(model), count_parameters(model), 0.3)
    assert "embedding_params" not in s and 0 < s["removed_share_of_model"] < s["linear_share_of_model"] < 1
    assert "| projections (compressed) |" in budget_markdown(s, "svd")
