"""Weight-only quantisation through torchao: after compression (factors split into two linears) or alone."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_ids, tiny_model

from svd_explorer.cli.main import main
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.compress.quantize import FactorPair, quantize
from svd_explorer.errors import ConfigError
from svd_explorer.model.lowrank import LowRankLinear
from svd_explorer.model.serving import stored_bytes

pytest.importorskip("torchao")


def test_a_factor_pair_computes_what_the_low_rank_layer_computes_residual_included():
    model, _ = compress_model(tiny_model("llama"), get_method("ressvd"), 0.3, tiny_ids())
    layer = next(m for m in model.modules() if isinstance(m, LowRankLinear) and m.residual_rank)
    x = torch.randn(5, layer.in_features)
    assert torch.allclose(FactorPair(layer)(x), layer(x), atol=1e-5)


@pytest.mark.parametrize("scheme, share, tolerance", [("int8", 0.3, 0.05), ("int4", 0.35, 0.5)])
def test_quantised_blocks_hold_fewer_bytes_and_stay_close(scheme, share, tolerance):
    model, ids = tiny_model("llama"), tiny_ids(2)
    compressed, _ = compress_model(model, get_method("svd-llm"), 0.3, tiny_ids())
    before = compressed(input_ids=ids).logits
    block_bytes = stored_bytes(compressed)["float32"]
    quantize(compressed, scheme)
    after = compressed(input_ids=ids).logits
    assert (after - before).abs().max() < tolerance
    assert stored_bytes(compressed)["held"] < block_bytes      # the embedding stays float32: a tiny model's share
    assert not any(isinstance(m, LowRankLinear) for m in compressed.modules())
    assert compressed.model.embed_tokens.weight.dtype == torch.float32 and share


def test_quantising_the_original_is_the_baseline_and_a_bad_scheme_is_one_error(tiny_folder, text_file, tmp_path):
    out = tmp_path / "q.json"
    assert main(["evaluate", "--model", str(tiny_folder), "--eval", str(text_file), "--eval-windows", "2",
                 "--seq-len", "16", "--quantize", "int8", "--json", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["quantize"] == "int8" and result["cost"]["bytes"]["held"] < result["cost"]["bytes"]["float32"]
    with pytest.raises(ConfigError, match="quantize must be one of"):
        quantize(tiny_model("llama"), "int3")
