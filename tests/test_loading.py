"""Saving and loading compressed folders: exact round trips, and verification before anything is allocated."""
import json

import pytest
import torch
from conftest import ARCHITECTURES, char_tokenizer, tiny_ids, tiny_model

from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.errors import ModelLoadError
from svd_explorer.model.blocks import count_parameters
from svd_explorer.model.loading import load_compressed, load_model
from svd_explorer.model.saving import save_compressed


def saved(tmp_path, arch="llama", method="ressvd", name="out", dtype=None):
    model = tiny_model(arch)
    compressed, result = compress_model(model, get_method(method), 0.3, tiny_ids(), batch_size=3, precision="float32")
    save_compressed(compressed, char_tokenizer(), tmp_path / name, {"method": method, "ratio": 0.3}, dtype)
    return compressed, result, tmp_path / name


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saved_model_loads_back_identical(arch, tmp_path):
    compressed, result, folder = saved(tmp_path, arch)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "svd-explorer/1" and manifest["method"] == "ressvd"
    assert any(spec["residual_rank"] > 0 for spec in manifest["modules"].values())
    loaded = load_compressed(folder)
    a, b = compressed.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = tiny_ids(2)  # the reloaded model may pick another attention kernel: equal to rounding
    assert torch.allclose(loaded(ids).logits, compressed(ids).logits, atol=1e-5)
    assert count_parameters(loaded) == count_parameters(compressed) == result.params_after
    again = load_model(str(folder))  # every --model DIR goes through here
    assert (again.manifest["ratio"] == 0.3
            and torch.allclose(again.model(ids).logits, compressed(ids).logits, atol=1e-5))


def test_bfloat16_factors_load_into_a_float32_model(tmp_path):
    compressed, _, folder = saved(tmp_path, dtype="bfloat16")
    loaded = load_compressed(folder)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    ids = tiny_ids(2)
    assert torch.allclose(loaded(ids).logits, compressed(ids).logits, atol=0.05)


def test_tied_embeddings_survive_the_round_trip(tmp_path):
    model = tiny_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    compressed, _ = compress_model(model, get_method("svd"), 0.3, tiny_ids(), precision="float32")
    save_compressed(compressed, char_tokenizer(), tmp_path / "g")
    loaded = load_compressed(tmp_path / "g")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def first_module(manifest):
    return next(iter(manifest["modules"].values()))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "manifest.json").unlink(), "written by SVD Explorer but manifest.json is missing"),
    (lambda f: (f / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "manifest.json").write_text('{"format": "other"}'), "not an SVD Explorer manifest"),
    (lambda f: edit_manifest(f, lambda m: first_module(m).update(rank=10**6)), "declares rank 1000000"),
    (lambda f: edit_manifest(f, lambda m: first_module(m).update(rank="12")), "needs in_features"),
    (lambda f: edit_manifest(f, lambda m: m["modules"].update({"model.layers.0.nothing": first_module(m)})),
     "module model.layers.0.nothing does not exist"),
    (lambda f: edit_manifest(f, lambda m: first_module(m).update(in_features=700)), "in the config but"),
    (lambda f: edit_manifest(f, lambda m: first_module(m).update(rank=first_module(m)["rank"] - 1)),
     "has tensors of the wrong shape"),
    (lambda f: edit_manifest(f, lambda m: m["modules"].popitem()), "model.safetensors is missing: .*down_proj.weight"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-1000]), "is truncated"),
    (lambda f: (f / "model.safetensors").write_bytes(b"garbage"), "not a safetensors file"),
    (lambda f: (f / "model.safetensors").unlink(), "has a manifest but no model.safetensors"),
])
def test_a_damaged_folder_is_refused_before_anything_is_allocated(tmp_path, damage, message):
    _, _, folder = saved(tmp_path)
    damage(folder)
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(folder))


def test_the_error_names_the_file(tmp_path):
    _, _, folder = saved(tmp_path)
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-1000])
    with pytest.raises(ModelLoadError) as err:
        load_compressed(folder)
    assert str(folder / "model.safetensors") in str(err.value) and "\n" not in str(err.value)


def test_other_bad_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="neither config.json"):
        load_model(str(empty))
    with pytest.raises(ModelLoadError, match="no folder"):
        load_model(str(tmp_path / "nowhere"))
