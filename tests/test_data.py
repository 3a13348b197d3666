"""Text sources, windows, and the save / load round trip."""

import pytest
import torch
from conftest import SAMPLE_TEXT, char_tokenizer

from svd_explorer.model.loading import load_model
from svd_explorer.text.sources import (
    DataError,
    check_source,
    consecutive_windows,
    development_windows,
    disjoint_starts,
    load_text,
    random_starts,
    random_windows,
    text_windows,
    tokenize,
)


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


@pytest.mark.parametrize("name, content, message", [
    ("b.jsonl", '{"body": "x"}\n', "line 1 is not an object with a 'text' field"),
    ("n.jsonl", "3\n", "line 1 is not an object"),
    ("j.jsonl", '{"text": \n', "line 1 is not JSON"),
    ("c.csv", "text\nx\n", "unsupported file type"),
])
def test_bad_sources_say_what_is_wrong(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_text(str(tmp_path / name))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no file"):
        load_text(str(tmp_path / "missing.txt"))


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


def test_development_windows_never_overlap_the_calibration_windows():
    starts = random_starts(5000, 20, 64, seed=0)
    dev = disjoint_starts(5000, 30, 64, seed=1000, spans=[(a, 64) for a in starts])
    assert len(dev) == 30 and all(0 <= s <= 5000 - 64 for s in dev)
    for s in dev:
        assert all(s + 64 <= a or a + 64 <= s for a in starts)
    with pytest.raises(DataError, match="not enough text"):
        disjoint_starts(300, 5, 64, seed=0, spans=[(0, 64), (100, 64), (200, 64)])


@pytest.mark.parametrize("length", [16, 64, 100])
def test_search_windows_shorter_or_longer_than_calibration_avoid_the_calibration_windows(tmp_path, length):
    """Searches use shorter windows than the calibration (engine.DEV_SEQ_LEN): they must still avoid the
    calibration windows as drawn, at the calibration's own length."""
    letters = torch.randint(0, 26, (6000,), generator=torch.Generator().manual_seed(0)).tolist()
    (tmp_path / "t.txt").write_text("".join(chr(97 + i) for i in letters))       # every 8 letters place a window
    tok, source = char_tokenizer(), str(tmp_path / "t.txt")
    calib, _ = text_windows(source, None, tok, 20, 64, seed=3, split="train", consecutive=False)
    dev, desc = development_windows(source, None, tok, 30, length, seed=3, calibration=(20, 64))
    all_tokens = tokenize(tok, load_text(source).text)
    where = {tuple(all_tokens[s:s + 8].tolist()): s for s in range(all_tokens.numel() - 8)}
    calib_starts = [where[tuple(w[:8].tolist())] for w in calib]
    for window in dev:
        s = where[tuple(window[:8].tolist())]
        assert all(s + length <= a or a + 64 <= s for a in calib_starts), (s, calib_starts)
    assert "outside the 20 calibration windows of 64" in desc


def test_reported_development_windows_avoid_the_search_windows_too(tmp_path):
    """A search scores on development windows; the development perplexity a run reports must be held out
    from that choice, so its windows overlap neither the calibration windows nor the search windows."""
    letters = torch.randint(0, 26, (6000,), generator=torch.Generator().manual_seed(1)).tolist()
    (tmp_path / "t.txt").write_text("".join(chr(97 + i) for i in letters))
    tok, source = char_tokenizer(), str(tmp_path / "t.txt")
    all_tokens = tokenize(tok, load_text(source).text)
    where = {tuple(all_tokens[s:s + 8].tolist()): s for s in range(all_tokens.numel() - 8)}
    starts = lambda windows: [where[tuple(w[:8].tolist())] for w in windows]  # noqa: E731
    calib, _ = text_windows(source, None, tok, 20, 64, seed=3, split="train", consecutive=False)
    searched, _ = development_windows(source, None, tok, 8, 32, seed=3, calibration=(20, 64))
    report, desc = development_windows(source, None, tok, 30, 64, seed=3, calibration=(20, 64), searched=(8, 32))
    spans = [(a, 64) for a in starts(calib)] + [(a, 32) for a in starts(searched)]
    for s in starts(report):
        assert all(s + 64 <= a or a + n <= s for a, n in spans), s
    assert "and the 8 search windows of 32" in desc
    unguarded, _ = development_windows(source, None, tok, 30, 64, seed=3, calibration=(20, 64))
    assert any(not (s + 64 <= a or a + 32 <= s) for s in starts(unguarded) for a in starts(searched))
    with pytest.raises(DataError, match="outside the 20 calibration windows of 64 and the 8 search windows of 32"):
        development_windows(source, None, tok, 5000, 64, seed=3, calibration=(20, 64), searched=(8, 32))


def test_boolq_passages_are_wikipedia_paragraphs(shared_data):
    text = load_text("boolq")
    assert "BoolQ passages" in text.description
    assert "Question:" not in text.text and "Passage:" not in text.text and len(text.text) > 1_000_000


def test_wikitext_falls_back_to_the_local_copy_offline(shared_data, monkeypatch):
    from svd_explorer.model import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    text = load_text("wikitext2", split="test")
    assert "local copy" in text.description and text.text.lstrip().startswith("= Robert Boulter =")
    assert "\r" not in text.text
    with pytest.raises(DataError, match="only the test split"):
        load_text("wikitext2", split="train")


def test_tokenize_adds_no_special_tokens(tiny_folder):
    lm = load_model(str(tiny_folder))
    ids = tokenize(lm.tokenizer, "ab")
    assert ids.tolist() == lm.tokenizer.convert_tokens_to_ids(["a", "b"])




def test_messages_and_descriptions_name_an_upload_by_its_own_name(tmp_path):
    """Gradio keeps uploads under /tmp/gradio/<hash>/: that folder is the server's business, not the page's."""
    from conftest import char_tokenizer

    from svd_explorer.text.sources import check_source, text_windows

    upload = tmp_path / "gradio" / "0123abcd"
    upload.mkdir(parents=True)
    (upload / "bad.parquet").write_bytes(b"garbage")
    (upload / "notes.txt").write_text(SAMPLE_TEXT * 4)
    missing = str(upload / "missing.txt")
    failures = [lambda: load_text(missing), lambda: check_source(missing, "train"),
                lambda: load_text(str(upload / "bad.parquet")), lambda: load_text(str(upload))]
    for failure in failures:
        with pytest.raises(DataError) as err:
            failure()
        assert str(upload) not in str(err.value) and "gradio" not in str(err.value), str(err.value)
    assert "missing.txt" in str(pytest.raises(DataError, load_text, missing).value)
    assert load_text(str(upload / "notes.txt")).description == "notes.txt"
    _, description = text_windows(str(upload / "notes.txt"), None, char_tokenizer(), 2, 16, seed=0, split="train",
                                  consecutive=False)
    assert description.startswith("notes.txt:") and "gradio" not in description


def test_sampled_text_is_reused_for_the_same_model_and_seed(monkeypatch, tmp_path):
    """A second run of the same model and seed reads its sampled windows back instead of sampling again;
    another seed or other weights sample anew; a damaged file is sampled again; the folder stays bounded."""
    from conftest import tiny_model

    from svd_explorer.text import sampled
    monkeypatch.setenv("SVD_EXPLORER_CACHE", str(tmp_path))
    model, tok = tiny_model("llama"), char_tokenizer()
    calls = []
    first = sampled.sampled_windows(model, tok, 3, 8, seed=5, progress=lambda done, total: calls.append(done))
    assert first.shape == (3, 8) and calls
    calls.clear()
    again = sampled.sampled_windows(model, tok, 3, 8, seed=5, progress=lambda done, total: calls.append(done))
    assert torch.equal(first, again) and not calls          # read back: no token generated
    assert not torch.equal(first, sampled.sampled_windows(model, tok, 3, 8, seed=6))
    other = tiny_model("llama", seed=1)
    assert sampled.sample_key(other, tok, 3, 8, 5) != sampled.sample_key(model, tok, 3, 8, 5)
    path = tmp_path / "text" / f"{sampled.sample_key(model, tok, 3, 8, 5)}.pt"
    path.write_bytes(b"not a tensor")
    assert torch.equal(first, sampled.sampled_windows(model, tok, 3, 8, seed=5))
    monkeypatch.setattr(sampled, "MAX_FILES", 2)
    sampled.sampled_windows(model, tok, 3, 8, seed=7)
    assert len(list((tmp_path / "text").glob("*.pt"))) == 2


def test_a_small_parquet_file_cannot_unpack_into_gigabytes(tmp_path, monkeypatch):
    """5 KB of dictionary-encoded parquet held 2,000,000 rows of 10,000 characters (20 GB as text): reading stops
    at a character budget, and a file whose pages alone unpack beyond four budgets is refused before any run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from svd_explorer.text import sources

    monkeypatch.setattr(sources, "PARQUET_CHARS", 1_000_000)
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"text": pa.array(["x" * 10_000] * 2_000, pa.string()).dictionary_encode()}), path,
                   compression="zstd")
    assert path.stat().st_size < 20_000
    check_source(str(path), "train")
    assert len(load_text(str(path)).text) <= 1_000_000 + 2 * 100          # the budget, and the joins
    huge = tmp_path / "huge.parquet"
    pq.write_table(pa.table({"text": ["y" * 5_000_000]}), huge, compression="zstd", use_dictionary=False)
    with pytest.raises(DataError, match="unpacks to"):
        check_source(str(huge), "train")
    with pytest.raises(DataError, match="choose a calibration text"):
        check_source(None, "train")
