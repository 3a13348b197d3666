"""Checks on a folder saved by this project, made before a single tensor is allocated.

The manifest's schema, its module names, shapes and ranks are compared with the config (on the
meta device) and with the safetensors header (read as JSON, with every tensor's byte range checked
against the file's size, so a truncated file is caught here). Any difference is one ModelLoadError
that names the file and what differs.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..errors import ModelLoadError
from .blocks import meta_model
from .lowrank import LowRankLinear, dense_weight_and_bias, is_projection, set_submodule

FORMAT = "svd-explorer/1"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
MERGED_INFO = "svd_explorer.json"   # a merged (dense) folder's provenance (it has no manifest)
HEADER_LIMIT = 100 << 20   # a safetensors header larger than this is not one we wrote
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MODULE_KEYS = {"in_features": int, "out_features": int, "rank": int, "residual_rank": int, "bias": bool}
PORTABLE_TYPE = "svd_explorer"   # config.json's model_type: plain transformers refuses it without the modeling file
PORTABLE_FIELDS = ("base_model_type", "low_rank", "auto_map", "architectures", "model_type")


@dataclass
class CheckedFolder:
    manifest: dict
    config: object
    header: dict   # tensor name -> (dtype, shape)


def read_header(path: Path) -> tuple[dict, dict]:
    """(tensors: name -> (dtype, shape), metadata) of a safetensors file, checked against its size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0] if size >= 8 else None
            if length is None or length > min(size - 8, HEADER_LIMIT):
                raise ModelLoadError(f"{path} is not a safetensors file (header length {length} for {size} bytes)")
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path} could not be read as safetensors ({err})") from err
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, (dict, type(None))):
        raise ModelLoadError(f"{path}: __metadata__ is a JSON {type(metadata).__name__}, not an object")
    tensors = {}
    for name, info in header.items():
        tensors[name] = _checked_entry(path, name, info, size - 8 - length)
    return tensors, metadata or {}


def _counts(value, length: int | None = None) -> bool:
    """A list of non-negative ints (of `length` items when given): JSON's true is no size, "12" no offset."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def _shown(value) -> str:
    """A value from a damaged header, cut short: the message stays one readable line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entry_problem(info) -> str | None:
    """What is wrong with one tensor's header entry, checked before any field is used, or None."""
    if not isinstance(info, dict):
        return f"is a JSON {type(info).__name__}, not an object"
    if not isinstance(info.get("dtype"), str):
        return f"has dtype {_shown(info.get('dtype'))}, not a name such as 'F32'"
    if not _counts(info.get("shape")):
        return f"has shape {_shown(info.get('shape'))}, not a list of non-negative integers"
    if not _counts(info.get("data_offsets"), 2) or info["data_offsets"][0] > info["data_offsets"][1]:
        return f"has data_offsets {_shown(info.get('data_offsets'))}, not [begin, end] byte offsets"
    return None


def _checked_entry(path: Path, name: str, info, data_bytes: int) -> tuple[str, tuple]:
    problem = _entry_problem(info)
    if problem is not None:
        raise ModelLoadError(f"{path}: the header entry of {name} {problem}")
    dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    if end > data_bytes:
        raise ModelLoadError(f"{path} is truncated: {name} ends at byte {end} of the data but the file holds "
                             f"{data_bytes}")
    if dtype in DTYPE_BYTES and end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ModelLoadError(f"{path}: {name} declares shape {list(shape)} in {dtype} but holds {end - begin} bytes")
    return dtype, shape


def weights_format(path: Path) -> str | None:
    """The `format` metadata of a safetensors file, or None when it has none or cannot be read."""
    try:
        return read_header(Path(path))[1].get("format") if Path(path).exists() else None
    except ModelLoadError:
        return None


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        if weights_format(folder / WEIGHTS) == FORMAT:
            raise ModelLoadError(f"{folder}: {WEIGHTS} was written by SVD Explorer but {MANIFEST} is missing, so its "
                                 f"factorised layers cannot be rebuilt; restore the manifest or save the model again")
        raise ModelLoadError(f"{folder} has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path} is missing or not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelLoadError(f"{path} is not an SVD Explorer manifest (format {found!r})")
    _check_modules(path, manifest.get("modules"))
    return manifest


def _check_modules(path: Path, modules) -> None:
    if not isinstance(modules, dict):
        raise ModelLoadError(f"{path}: 'modules' must map module names to their shapes and ranks")
    for name, spec in modules.items():
        if not isinstance(spec, dict) or any(not isinstance(spec.get(k), t)
                                             or (t is int and isinstance(spec.get(k), bool))
                                             for k, t in MODULE_KEYS.items()):
            raise ModelLoadError(f"{path}: module {name} needs {', '.join(MODULE_KEYS)} with integer sizes")
        m, n, k, k2 = spec["out_features"], spec["in_features"], spec["rank"], spec["residual_rank"]
        if min(m, n) < 1 or k < 1 or k2 < 0 or k + k2 > min(m, n):
            raise ModelLoadError(f"{path}: module {name} ({m} x {n}) declares rank {k} + {k2}, impossible for "
                                 f"its shape (at most {min(m, n)})")


def verify_compressed_folder(folder) -> CheckedFolder:
    """Manifest, config and weights header agree; raises ModelLoadError naming the file otherwise."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise ModelLoadError(f"{folder} has a manifest but no {WEIGHTS}")
    header, _ = read_header(weights)
    config = base_config(folder)
    expected = expected_tensors(config, manifest["modules"], folder)
    _compare(weights, expected, header)
    return CheckedFolder(manifest, config, header)


def base_config(folder) -> object:
    """The config of the model that was compressed: read from a portable config.json (model_type
    svd_explorer, the base type beside it) or, for a folder saved before those existed, as it is."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("model_type") == PORTABLE_TYPE:
            values = {k: v for k, v in data.items() if k not in PORTABLE_FIELDS}
            return CONFIG_MAPPING[data["base_model_type"]].from_dict(values)
        return AutoConfig.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds for a config it cannot use
        raise ModelLoadError(f"{path} could not be read: {_first_line(err)}") from err


def expected_tensors(config, modules: dict, folder: Path) -> tuple[dict, set]:
    """(name -> shape of every tensor the weights file must hold, names allowed to be absent as tied)."""
    model = _meta_model(config, folder)
    for name, spec in modules.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"{folder / MANIFEST}: module {name} does not exist in a {config.model_type} "
                                 f"model with this config") from None
        if not is_projection(module):
            raise ModelLoadError(f"{folder / MANIFEST}: {name} is a {type(module).__name__}, not a projection")
        shape = tuple(dense_weight_and_bias(module)[0].shape)
        if shape != (spec["out_features"], spec["in_features"]):
            raise ModelLoadError(f"{folder / MANIFEST}: {name} is {shape[0]} x {shape[1]} in the config but "
                                 f"{spec['out_features']} x {spec['in_features']} in the manifest")
        set_submodule(model, name, LowRankLinear(spec["in_features"], spec["out_features"], spec["rank"], spec["bias"],
                                                 spec["residual_rank"], device="meta"))
    model.tie_weights()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kept = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return shapes, set(shapes) - kept


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _meta_model(config, folder: Path):
    """The config's model on the meta device; a config transformers cannot build is the folder's fault."""
    try:
        return meta_model(config)
    except Exception as err:  # noqa: BLE001 - from_config fails in many ways on a bad config
        raise ModelLoadError(f"{folder / 'config.json'} does not describe a model that can be built: "
                             f"{type(err).__name__}: {_first_line(err)}") from err


def _compare(path: Path, expected: tuple[dict, set], header: dict) -> None:
    shapes, tied = expected
    missing = [k for k in shapes if k not in header and k not in tied]
    unexpected = [k for k in header if k not in shapes]
    wrong = [f"{k} {list(header[k][1])} (expected {list(shapes[k])})" for k in shapes
             if k in header and tuple(header[k][1]) != shapes[k]]
    for label, names in (("is missing", missing), ("holds unexpected tensors", unexpected),
                         ("has tensors of the wrong shape", wrong)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise ModelLoadError(f"{path} {label}: {', '.join(names[:3])}{more}")
