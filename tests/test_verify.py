"""verify.py on hand-written safetensors files: every malformed header is one ModelLoadError naming the file."""
import json
import struct

import pytest

from svd_explorer.errors import ModelLoadError
from svd_explorer.model.saved_folder import FORMAT, read_header, verify_compressed_folder, weights_format

GOOD = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


def write_safetensors(path, header, data: bytes = b"") -> None:
    """A safetensors file by hand: 8-byte little-endian header length, the JSON header, then the data."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_a_well_formed_header_reads(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"__metadata__": {"format": FORMAT}, "w": GOOD}, bytes(24))
    assert read_header(path) == ({"w": ("F32", (2, 3))}, {"format": FORMAT})
    assert weights_format(path) == FORMAT


@pytest.mark.parametrize("header, message", [
    ([GOOD], "header is a JSON list, not an object"),
    ("text", "header is a JSON str, not an object"),
    ({"w": [1, 2]}, "entry of w is a JSON list"),
    ({"w": {**GOOD, "data_offsets": "024"}}, "entry of w has data_offsets '024'"),
    ({"w": {**GOOD, "data_offsets": [0, 12, 24]}}, "entry of w has data_offsets"),
    ({"w": {**GOOD, "data_offsets": [24, 0]}}, "entry of w has data_offsets"),
    ({"w": {**GOOD, "data_offsets": [0, "24"]}}, "entry of w has data_offsets"),
    ({"w": {**GOOD, "shape": "2x3"}}, "entry of w has shape '2x3'"),
    ({"w": {**GOOD, "shape": [2, "3"]}}, "entry of w has shape"),
    ({"w": {**GOOD, "shape": [2, 1.5]}}, "entry of w has shape"),
    ({"w": {**GOOD, "shape": [True, 3]}}, "entry of w has shape"),
    ({"w": {**GOOD, "dtype": ["F32"]}}, "entry of w has dtype"),
    ({"w": {"dtype": "F32"}}, "entry of w has shape None"),
    ({"__metadata__": "svd-explorer/1", "w": GOOD}, "__metadata__ is a JSON str, not an object"),
])
def test_a_malformed_header_is_one_load_error_naming_the_file(tmp_path, header, message):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, header, bytes(24))
    with pytest.raises(ModelLoadError, match=message) as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_string_metadata_gives_no_format_instead_of_a_crash(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"__metadata__": "svd-explorer/1"})
    assert weights_format(path) is None
    with pytest.raises(ModelLoadError, match="has no manifest.json"):
        verify_compressed_folder(tmp_path)


def folder_with(tmp_path, config) -> object:
    """A folder whose manifest and weights pass, with the given config.json."""
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "modules": {}}))
    write_safetensors(tmp_path / "model.safetensors", {"__metadata__": {"format": FORMAT}})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_metadata_of_the_wrong_type_in_a_saved_folder_names_the_weights(tmp_path):
    folder = folder_with(tmp_path, {"model_type": "llama"})
    write_safetensors(folder / "model.safetensors", {"__metadata__": ["format", FORMAT]})
    with pytest.raises(ModelLoadError, match="model.safetensors: __metadata__ is a JSON list"):
        verify_compressed_folder(folder)


TINY_LLAMA = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}


@pytest.mark.parametrize("config, message", [
    ({**TINY_LLAMA, "hidden_act": "no-such-activation"}, "does not describe a model that can be built"),
    ({"model_type": "no-such-architecture"}, "config.json could not be read"),
    ([1, 2], "config.json could not be read"),
])
def test_a_config_that_cannot_build_a_model_is_a_load_error(tmp_path, config, message):
    with pytest.raises(ModelLoadError, match=message) as err:
        verify_compressed_folder(folder_with(tmp_path, config))
    assert str(tmp_path / "config.json") in str(err.value) and "\n" not in str(err.value)
