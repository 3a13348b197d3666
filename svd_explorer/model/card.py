"""The model card every save writes (README.md in the folder): what the model is, how it was made, what it
scored, what it costs to serve and how to load it, so a folder pushed to the hub explains itself."""
from __future__ import annotations

import json

from ..errors import ModelLoadError
from .hub import EMBEDDED, source_kind


def model_card(info: dict, layout: str) -> str:
    """Markdown with the hub's YAML header. `info` is the manifest's run description (method, ratio,
    allocation, calibration, scores, cost, command); `layout` is "factors" or "merged"."""
    source = (info.get("base") or {}).get("source", "unknown")
    base = EMBEDDED[source].hub_id if source in EMBEDDED else source
    return "\n".join([*_header(base), "", f"# {base}, compressed with SVD Explorer", "", *_summary(info, layout), "",
                      *_scores(info), *_cost(info), "## How to load", "", *_loading(layout), "",
                      "## How it was made", "", "```", info.get("command") or _command(info), "```", "",
                      *_licence(source)])


def _licence(source: str) -> list[str]:
    """The base model's terms travel with what is derived from it (the Gemma terms require the notice)."""
    entry = EMBEDDED.get(source)
    return ["## Licence", "", f"The base model: {entry.licence}", ""] if entry and entry.licence else []


def _header(base: str) -> list[str]:
    model = f"base_model: {base}" if _hub_id(base) else f"# base model: {base} (a local folder)"
    return ["---", "library_name: transformers", model, "tags:", "- svd-explorer", "- low-rank", "- compressed", "---"]


def _hub_id(source: str) -> bool:
    try:
        return source_kind(source) == "hub"
    except ModelLoadError:
        return False


def _summary(info: dict, layout: str) -> list[str]:
    allocation = (info.get("allocation") or {}).get("name", "the method's own")
    calibration = (info.get("calibration") or {}).get("description", "not recorded")
    kept = "the low-rank factors (the projections' parameters really removed)" if layout == "factors" else \
        "the factors multiplied back into dense weights (a standard checkpoint: same quality, no savings)"
    return [f"- method: `{info.get('method')}`, ratio {info.get('ratio')} (the share of the projections' "
            f"parameters removed), allocation `{allocation}`",
            f"- refinement: {'on' if info.get('refine') else 'off'}",
            f"- calibration: {calibration}",
            f"- this folder holds {kept}"] + _quantized(info.get("quantize"))


def _quantized(scheme: str | None) -> list[str]:
    if scheme in (None, "none"):
        return []
    return [f"- measured after {scheme} weight-only quantisation of the decoder blocks (torchao); the folder keeps "
            f"the unquantised factors (quantised tensors have no safetensors form): after loading, "
            f"`svd_explorer.compress.quantize.quantize(model, \"{scheme}\")` quantises them again"]


def _scores(info: dict) -> list[str]:
    scores = info.get("scores") or {}
    if not scores:
        return []
    rows = [f"| {k} | {v:.4g} |" for k, v in scores.items() if isinstance(v, (int, float))]
    evaluation = (info.get("evaluation") or {}).get("description", "")
    return ["## Measured", "", f"On {evaluation}:" if evaluation else "", "", "| measure | value |", "|---|---|",
            *rows, ""]


def _cost(info: dict) -> list[str]:
    cost = info.get("cost") or {}
    if not cost.get("original"):
        return []
    lines = ["## Serving cost (measured on the run's device)", "", "| | original | compressed |", "|---|---|---|"]
    for key, label in (("prefill_tokens_per_s", "prefill tokens/s"), ("decode_tokens_per_s_batch1",
                                                                       "decode tokens/s, batch 1"),
                       ("decode_tokens_per_s_batch8", "decode tokens/s, batch 8")):
        lines.append(f"| {label} | {_number(cost['original'].get(key))} | {_number(cost['compressed'].get(key))} |")
    return lines + ["", f"Device: {cost.get('device', '?')}.", ""]


def _number(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


def _loading(layout: str) -> list[str]:
    if layout == "merged":
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "model = AutoModelForCausalLM.from_pretrained(FOLDER)",
                "tokenizer = AutoTokenizer.from_pretrained(FOLDER)", "```"]
    return ["With transformers alone (the modeling file in this folder rebuilds the factorised layers):", "",
            "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained(FOLDER, trust_remote_code=True)",
            "tokenizer = AutoTokenizer.from_pretrained(FOLDER, trust_remote_code=True)   # a standard tokenizer;",
            "# the flag only spares the question transformers asks on reading this folder's config", "```", "",
            "Without `trust_remote_code=True` transformers refuses the folder (its model_type is `svd_explorer`) "
            "rather than loading random projections. With SVD Explorer: `svd_explorer.load_compressed(FOLDER)`. "
            "A standard dense checkpoint: `python -m svd_explorer merge FOLDER OUT`."]


def _command(info: dict) -> str:
    return "RunConfig: " + json.dumps(info.get("config") or {}, sort_keys=True)
