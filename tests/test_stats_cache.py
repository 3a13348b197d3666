"""Original-stream statistics computed once: hit, miss, key change, corruption, and identical weights."""
import json
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, tiny_ids, tiny_model

from svd_explorer.cache.statistics import FILE, MANIFEST, cache_key, key_folder, load_or_compute
from svd_explorer.compress.decompositions import DecompositionStore, digest, kept_rank, reusing
from svd_explorer.compress.kept_stream import LIMIT_VARIABLE, KeptStream, limit_bytes
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import DEPTH_WINDOWS, Passes, compress_model
from svd_explorer.compress.refine import RefineSettings
from svd_explorer.errors import ConfigError
from svd_explorer.run.engine import keeps_decompositions
from svd_explorer.ui import texts

IDS = tiny_ids(6, 16)


def key(model, seed=0, ids=IDS, source="tiny"):
    return cache_key(source, None, f"random text, seed {seed}", digest(ids), 6, 16, seed, 2,
                     Passes.of(model, "float32"))


def statistics(root, model, seed=0, ids=IDS):
    return load_or_compute(root, key(model, seed, ids), model, ids, 2, "float32")


def test_hit_miss_and_key_change(tmp_path):
    model = tiny_model("llama")
    assert statistics(tmp_path, model)[1] == "computed"
    assert statistics(tmp_path, model)[1] == "hit"
    assert statistics(tmp_path, model, seed=1)[1] == "computed"      # another calibration: another entry
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_other_tokens_or_a_changed_local_model_under_the_same_name_are_measured_again(tmp_path):
    """The key holds the calibration tokens' digest and a local model's file sizes and times, not only names."""
    model = tiny_model("llama")
    assert statistics(tmp_path / "cache", model)[1] == "computed"
    edited = IDS.clone()
    edited[0, 0] = (edited[0, 0] + 1) % VOCAB         # the same description, one token changed
    assert statistics(tmp_path / "cache", model, ids=edited)[1] == "computed"
    folder = tmp_path / "local-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    before = key(model, source=str(folder))
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert key(model, source=str(folder)) != before
    assert key(model)["files"] is None and before["files"][0][:2] == ["model.safetensors", 7]


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_damaged_entry_is_recomputed_never_used(tmp_path, damage):
    model = tiny_model("llama")
    cached, _ = statistics(tmp_path, model)
    folder = key_folder(tmp_path, key(model))
    data = (folder / FILE).read_bytes()
    if damage == "truncate":
        (folder / FILE).write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        (folder / FILE).write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    else:
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["key"]["seq_len"] = 999
        (folder / MANIFEST).write_text(json.dumps(manifest))
    again, state = statistics(tmp_path, model)
    assert state.startswith("recomputed")
    assert torch.equal(again.get(1, 2).gram_f, cached.get(1, 2).gram_f)


@pytest.mark.parametrize("method", ["svd", "asvd", "svd-llm", "ressvd", "saes-svd"])
def test_cached_statistics_give_exactly_the_same_weights(tmp_path, method):
    model = tiny_model("llama")
    cached, _ = statistics(tmp_path, model)
    plain, a = compress_model(model, get_method(method), 0.3, IDS, batch_size=2, precision="float32")
    fast, b = compress_model(model, get_method(method), 0.3, IDS, batch_size=2, precision="float32", statistics=cached)
    x, y = plain.state_dict(), fast.state_dict()
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert b.calibration["statistics"] == "cached" and [r.spectrum_raw for r in a.layers] == \
        [r.spectrum_raw for r in b.layers]
    if method != "saes-svd":   # an original-stream method pushes its compressed stream over a few windows only
        assert b.calibration["depth_windows"] == a.calibration["depth_windows"] == DEPTH_WINDOWS < len(IDS)
        assert [blk.rel_error for blk in a.blocks] == pytest.approx([blk.rel_error for blk in b.blocks], rel=1e-5)


@pytest.mark.parametrize("method", ["aa-svd", "svd-llm", "saes-svd"])
def test_the_statistics_pass_outputs_kept_give_exactly_the_same_model(tmp_path, method):
    """The pipeline takes the original blocks' outputs the statistics pass left instead of running every original
    block again; the refined (or sequential) model is the same, bit for bit, and every kept block is handed out."""
    model, refine = tiny_model("llama"), RefineSettings(steps=4, lr=1e-3)
    kept = KeptStream(len(model.model.layers), limit_bytes())
    cached, state = load_or_compute(tmp_path, key(model), model, IDS, 2, "float32", kept=kept)
    assert state == "computed" and len(kept.outputs) == len(model.model.layers)
    runs = [compress_model(model, get_method(method), 0.3, IDS, batch_size=2, precision="float32",
                           statistics=cached, refine=refine, kept=k)[0] for k in (None, kept)]
    x, y = (r.state_dict() for r in runs)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert all(block is None for block in kept.outputs)
    assert kept.describe() == f"kept from the statistics pass ({len(kept.outputs)} of {len(kept.outputs)} blocks)"


def test_outputs_past_the_limit_are_not_kept_at_all(tmp_path):
    model = tiny_model("llama")
    kept = KeptStream(len(model.model.layers), limit=1000)     # a few KiB: 0 MiB
    load_or_compute(tmp_path, key(model), model, IDS, 2, "float32", kept=kept)
    assert kept.outputs is None and kept.take(0, 3) is None
    assert kept.describe().startswith("computed by the pipeline (they would take") and "over the 0 allowed" in \
        kept.describe()


def test_the_kept_outputs_bound_comes_from_the_environment_or_says_what_is_wrong(monkeypatch):
    assert limit_bytes() == 2048 << 20
    monkeypatch.setenv(LIMIT_VARIABLE, "0")
    assert limit_bytes() == 0
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(ConfigError, match="SVD_EXPLORER_KEEP_OUTPUTS_MB must be a whole number of MiB, got 'lots'"):
        limit_bytes()


@pytest.mark.parametrize("method", ["svd", "asvd", "svd-llm", "ressvd"])
def test_stored_decompositions_give_exactly_the_same_weights_at_another_ratio(tmp_path, method):
    model = tiny_model("llama")
    cached, _ = statistics(tmp_path, model)
    store = DecompositionStore(tmp_path / "svd")
    with reusing(store):
        compress_model(model, get_method(method), 0.3, IDS, batch_size=2, precision="float32", statistics=cached)
    written = store.describe()
    assert written["reused"] == 0 and written["computed"] > 0
    plain, _ = compress_model(model, get_method(method), 0.2, IDS, batch_size=2, precision="float32")
    with reusing(store):
        again, _ = compress_model(model, get_method(method), 0.2, IDS, batch_size=2, precision="float32",
                                  statistics=cached)
    x, y = plain.state_dict(), again.state_dict()
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert store.describe()["reused"] == written["computed"]      # every stored SVD served the other ratio


def test_a_decomposition_is_reused_only_for_the_same_matrix_and_a_rank_it_holds(tmp_path):
    store, m = DecompositionStore(tmp_path), torch.randn(12, 20, dtype=torch.float64)
    calls = []

    def compute(x):
        calls.append(x)
        return torch.linalg.svd(x, full_matrices=False)

    u, s, vh = store.svd(m, 3, compute)
    u2, s2, vh2 = store.svd(m.clone(), 3, compute)                  # same contents: read back, bit for bit
    assert len(calls) == 1 and torch.equal(u2, u[:, :3]) and torch.equal(s2, s) and torch.equal(vh2, vh[:3])
    store.svd(m + 1e-12, 3, compute)                                # one changed bit: another matrix
    store.svd(m, kept_rank(12, 20) + 1, compute)                    # beyond break-even: not stored that far
    assert len(calls) == 3 and kept_rank(12, 20) == 8


def test_a_damaged_decomposition_is_computed_again(tmp_path):
    store, m = DecompositionStore(tmp_path), torch.randn(10, 10, dtype=torch.float64)
    compute = lambda x: torch.linalg.svd(x, full_matrices=False)   # noqa: E731
    store.svd(m, 2, compute)
    path = next(tmp_path.glob("*.safetensors"))
    data = path.read_bytes()
    path.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    store.svd(m, 2, compute)
    assert store.describe() == {"reused": 0, "computed": 2}
    store.svd(m, 2, compute)
    assert store.describe()["reused"] == 1


def test_a_cached_table_measures_only_the_columns_it_lacks(tmp_path):
    from svd_explorer.cache.statistics import cached_columns

    asked = []

    def compute(columns):
        asked.append(list(columns))
        return {name: {c: c * (i + 1) for c in columns} for i, name in enumerate(("q", "k"))}

    first = cached_columns(tmp_path, "sensitivity", {"model": "m"}, [0.4, 0.6], compute)
    assert first == {"q": {0.4: 0.4, 0.6: 0.6}, "k": {0.4: 0.8, 0.6: 1.2}}
    again = cached_columns(tmp_path, "sensitivity", {"model": "m"}, [0.6, 1.0], compute)
    assert asked == [[0.4, 0.6], [1.0]] and again == {"q": {0.6: 0.6, 1.0: 1.0}, "k": {0.6: 1.2, 1.0: 2.0}}
    cached_columns(tmp_path, "sensitivity", {"model": "other"}, [0.6], compute)     # another key: measured again
    assert asked[-1] == [0.6]


def test_cached_tensors_are_measured_once_per_key_and_never_read_back_damaged(tmp_path):
    from svd_explorer.cache.statistics import cached_tensors

    calls = []

    def compute():
        calls.append(1)
        return {"q": torch.rand(5, dtype=torch.float64), "k": torch.rand(3, dtype=torch.float64)}

    first, state = cached_tensors(tmp_path, "fisher", {"model": "m"}, compute)
    again, state_again = cached_tensors(tmp_path, "fisher", {"model": "m"}, compute)
    assert (state, state_again, len(calls)) == ("computed", "hit", 1)
    assert again.keys() == first.keys() and all(torch.equal(again[n], first[n]) for n in first)
    assert cached_tensors(tmp_path, "fisher", {"model": "other"}, compute)[1] == "computed"
    path = tmp_path / f"fisher-{key_folder(tmp_path, {'model': 'm'}).name}.safetensors"
    data = path.read_bytes()
    for damaged in (data[:-8] + bytes(b ^ 0xFF for b in data[-8:]), data[:len(data) // 2]):
        path.write_bytes(damaged)
        assert cached_tensors(tmp_path, "fisher", {"model": "m"}, compute)[1] == "computed"
    assert len(calls) == 4


def test_fwsvd_measures_its_gradients_once_per_calibration_set(tiny_folder, text_file, tmp_path):
    """A second fwsvd run on the same calibration set reads the Fisher importances back and makes the same
    weights; another seed measures them again."""
    from svd_explorer.run import engine
    from svd_explorer.run.config import with_preset

    def run(seed=0):
        config = with_preset("demo", model=str(tiny_folder), method="fwsvd", ratio=0.3, calib=str(text_file),
                             eval_source=str(text_file), calib_samples=4, seq_len=16, eval_windows=2, batch_size=2,
                             seed=seed, stats_cache=str(tmp_path))
        return engine.run(config, keep_model=True, measure_forward=False)

    first, again, other = run(), run(), run(seed=1)
    assert first.record.compression.calibration["prepared"] == {"fisher": "cache computed"}
    assert again.record.compression.calibration["prepared"] == {"fisher": "cache hit"}
    assert other.record.compression.calibration["prepared"] == {"fisher": "cache computed"}
    x, y = first.model.state_dict(), again.model.state_dict()
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_measurement_that_cannot_be_stored_is_still_returned(tmp_path, monkeypatch):
    import svd_explorer.cache.statistics as stats_cache
    import svd_explorer.files as paths

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths, "save_file", full_disk)
    tensors, state = stats_cache.cached_tensors(tmp_path, "fisher", {"model": "m"}, lambda: {"q": torch.ones(2)})
    assert torch.equal(tensors["q"], torch.ones(2)) and state == "computed, not stored (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_gram_matrices_are_stored_as_their_upper_triangles_and_read_back_bit_for_bit(tmp_path):
    """Statistics are stored no larger than the results need: a symmetric Gram matrix's upper triangle."""
    from safetensors import safe_open

    from svd_explorer.cache.statistics import collect
    model = tiny_model("llama")
    cached, _ = statistics(tmp_path, model)
    tensors, _, _ = collect(model, IDS, 2, "float32")
    with safe_open(str(cached.path), framework="pt", device="cpu") as f:
        names = list(f.keys())
        stored = {n: f.get_tensor(n) for n in names}
    assert names and not any(n.endswith(".gram") for n in names)
    full = tensors["0.0.gram"]
    n = full.shape[0]
    assert stored["0.0.gram_upper"].numel() == n * (n + 1) // 2
    assert torch.equal(full, full.mT)                                  # symmetric to the last bit
    assert torch.equal(cached.get(0, 0).gram_f.cpu(), full)


def test_decompositions_are_kept_only_within_a_quarter_of_the_bound_and_the_page_says_which():
    """SmolLM2-135M's SVDs, estimated at 8 bytes a dense parameter (849 MB), fit a quarter of the default 10 GiB
    bound but not of the Space's 3 GiB: there a first run adds its statistics alone, and the page says so."""
    dense = 106_168_320
    assert keeps_decompositions(dense, 10 * 2**30) and not keeps_decompositions(dense, 3 * 2**30)
    assert "448 MB of stored decompositions" in texts.disk_markdown(0, 10 * 2**30, None, True)
    assert "not kept" in texts.disk_markdown(0, 3 * 2**30, None, False)
    assert "where the bound allows" in texts.disk_markdown(0, 3 * 2**30, None, None)


def test_the_pages_disk_note_reads_the_bound_when_asked(monkeypatch):
    from svd_explorer.ui import callbacks

    monkeypatch.setattr(callbacks, "_dense_params", lambda model: 106_168_320)
    monkeypatch.setenv("SVD_EXPLORER_STATS_CACHE_GB", "3")
    assert callbacks._keeps_decompositions("smollm2-135m") is False
    monkeypatch.setenv("SVD_EXPLORER_STATS_CACHE_GB", "10")
    assert callbacks._keeps_decompositions("smollm2-135m") is True
