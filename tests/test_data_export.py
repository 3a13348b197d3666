"""Text sources, windows, and the save / load round trip."""
import json

import pytest
import torch
from conftest import ARCHITECTURES, SAMPLE_TEXT, tiny_ids, tiny_model

from svd_explorer.data import DataError, consecutive_windows, load_text, random_windows, tokenize
from svd_explorer.export import load_compressed, save_compressed
from svd_explorer.methods import get_method
from svd_explorer.models import ModelLoadError, count_parameters, load_model
from svd_explorer.pipeline import compress_model


def test_text_files_of_every_format(tmp_path, text_file):
    assert load_text(str(text_file)).text == SAMPLE_TEXT  # CRLF tolerated
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_text(str(tmp_path / "a.jsonl")).text == "one\n\ntwo"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["alpha", "beta"]}), tmp_path / "a.parquet")
    assert load_text(str(tmp_path / "a.parquet")).text == "alpha\n\nbeta"


@pytest.mark.parametrize("content, message", [("", "is empty"), ("  \n\n ", "is empty")])
def test_empty_files_are_refused(tmp_path, content, message):
    (tmp_path / "e.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        load_text(str(tmp_path / "e.txt"))


def test_bad_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="no file"):
        load_text(str(tmp_path / "missing.txt"))
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match="no 'text' field"):
        load_text(str(tmp_path / "b.jsonl"))
    (tmp_path / "c.csv").write_text("text\nx\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_text(str(tmp_path / "c.csv"))


def test_windows_are_reproducible_and_checked():
    tokens = torch.arange(1000)
    a, b = random_windows(tokens, 5, 32, seed=3), random_windows(tokens, 5, 32, seed=3)
    assert torch.equal(a, b) and a.shape == (5, 32)
    assert all(torch.equal(w, torch.arange(w[0], w[0] + 32)) for w in a)
    c = consecutive_windows(tokens, 4, 100)
    assert c.shape == (4, 100) and torch.equal(c.flatten(), torch.arange(400))
    assert consecutive_windows(tokens, 50, 100).shape == (10, 100)  # never more than the text holds
    with pytest.raises(DataError, match="fewer than one window"):
        random_windows(torch.arange(10), 2, 32, seed=0)


def test_boolq_passages_are_wikipedia_paragraphs(shared_data):
    text = load_text("boolq")
    assert "BoolQ passages" in text.description
    assert "Question:" not in text.text and "Passage:" not in text.text and len(text.text) > 1_000_000


def test_wikitext_falls_back_to_the_local_copy_offline(shared_data, monkeypatch):
    import svd_explorer.models as models

    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    text = load_text("wikitext2", split="test")
    assert "local copy" in text.description and text.text.lstrip().startswith("= Robert Boulter =")
    assert "\r" not in text.text
    with pytest.raises(DataError, match="only the test split"):
        load_text("wikitext2", split="train")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saved_model_loads_back_identical(arch, tmp_path):
    from conftest import char_tokenizer

    model = tiny_model(arch)
    compressed, result = compress_model(model, get_method("ressvd", last_layers="2"), 0.3, tiny_ids(), batch_size=3,
                                        precision="float32")
    save_compressed(compressed, char_tokenizer(), tmp_path / "out", {"method": "ressvd", "ratio": 0.3})
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "svd-explorer/1" and manifest["method"] == "ressvd"
    assert any(spec["residual_rank"] > 0 for spec in manifest["modules"].values())
    loaded = load_compressed(tmp_path / "out")
    saved, back = compressed.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    ids = tiny_ids(2)  # the reloaded model may pick another attention kernel: equal to rounding
    assert torch.allclose(loaded(ids).logits, compressed(ids).logits, atol=1e-5)
    assert count_parameters(loaded) == count_parameters(compressed) == result.params_after
    assert not any(p.requires_grad for p in compressed.parameters())
    again = load_model(str(tmp_path / "out"))  # every --model DIR goes through here
    assert again.manifest["ratio"] == 0.3
    assert torch.allclose(again.model(ids).logits, compressed(ids).logits, atol=1e-5)


def test_tied_embeddings_survive_the_round_trip(tmp_path):
    from conftest import char_tokenizer

    model = tiny_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    compressed, _ = compress_model(model, get_method("svd"), 0.3, tiny_ids(), precision="float32")
    save_compressed(compressed, char_tokenizer(), tmp_path / "g")
    loaded = load_compressed(tmp_path / "g")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_bad_folders_are_refused_clearly(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_compressed(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ModelLoadError, match="not an SVD Explorer manifest"):
        load_compressed(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="neither config.json"):
        load_model(str(empty))


def test_tokenize_adds_no_special_tokens(tiny_folder):
    lm = load_model(str(tiny_folder))
    ids = tokenize(lm.tokenizer, "ab")
    assert ids.tolist() == lm.tokenizer.convert_tokens_to_ids(["a", "b"])


def test_a_model_too_large_for_the_memory_is_refused_with_the_figure(tiny_folder):
    with pytest.raises(ModelLoadError, match=r"parameters: compressing it needs about .* GiB of memory and this "
                                             r"machine has .* GiB available"):
        load_model(str(tiny_folder), memory_limit_bytes=1000)
