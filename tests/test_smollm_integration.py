"""Real quality on the embedded SmolLM2-135M: methods must beat plain SVD, the seed methods svd-llm.

Small settings keep this within a few minutes: calibration 16 x 256 tokens of Wikipedia paragraphs,
evaluation 8 x 256 tokens of WikiText-2 test; the original-stream statistics are computed once and
shared by every method that reads only the original stream (as a sweep does). The benchmark
(bench/methods.py) uses the README's protocol.
"""
import pytest

from svd_explorer.cache.statistics import MemoryStatistics, collect
from svd_explorer.compress.allocation import AllocationContext, get_allocation
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.compress.refine import RefineSettings
from svd_explorer.model.blocks import find_layout
from svd_explorer.text.metrics import evaluate
from svd_explorer.text.sources import text_windows

pytestmark = pytest.mark.slow
RATIO = 0.2


@pytest.fixture(scope="module")
def setting(smollm, shared_data):
    calib, _ = text_windows("boolq", smollm.model, smollm.tokenizer, 16, 256, 0, split="train", consecutive=False)
    evalw, _ = text_windows(str(shared_data / "wikitext-2-raw" / "wiki.test.raw"), smollm.model, smollm.tokenizer,
                            8, 256, 0, split="test", consecutive=True)
    tensors, spectra, tokens = collect(smollm.model, calib, 8, "auto")
    return smollm, calib, evalw, MemoryStatistics(tensors, tokens, spectra, "cpu")


_cache = {}


def ppl(setting, name, allocation="uniform", refine=None, **options):
    key = (name, allocation, refine, tuple(sorted(options.items())))
    if key not in _cache:
        lm, calib, evalw, stats = setting
        method = get_method(name, **options)
        layout = find_layout(lm.model)
        allocation_name, allocation_options = (method.default_allocation if allocation == "auto"
                                              else (allocation, {}))
        ranks = get_allocation(allocation_name, **allocation_options).allocate(
            AllocationContext(layout, RATIO, method)).ranks
        compressed, _ = compress_model(lm.model, method, RATIO, calib, ranks=ranks, statistics=stats,
                                       refine=RefineSettings(steps=refine) if refine else None)
        _cache[key] = evaluate(compressed, evalw)["ppl"]
        del compressed
    return _cache[key]


def test_original_model_is_sane(setting):
    lm, _, evalw, _ = setting
    assert 15 < evaluate(lm.model, evalw)["ppl"] < 60


def test_svd_llm_beats_asvd_beats_svd(setting):
    assert ppl(setting, "svd-llm") < ppl(setting, "asvd") < ppl(setting, "svd")
    assert ppl(setting, "svd") > 1e4  # plain SVD collapses, as the papers report


@pytest.mark.parametrize("name, allocation, refine", [("ressvd", "auto", None), ("saes-svd", "uniform", None),
                                                      ("aa-svd", "uniform", 40)])
def test_seed_methods_beat_svd_llm(setting, name, allocation, refine):
    assert ppl(setting, name, allocation, refine) < ppl(setting, "svd-llm")


def test_refinement_as_a_stage_turns_svd_llm_into_aa_svd(setting):
    """AA-SVD (whitening init) is SVD-LLM plus the refinement stage: switching the stage on for svd-llm gives
    the same model, and a large gain over uniform svd-llm."""
    assert ppl(setting, "svd-llm", refine=40) == ppl(setting, "aa-svd", refine=40)
    assert ppl(setting, "svd-llm", refine=40) < 0.8 * ppl(setting, "svd-llm")


def test_the_embedded_model_converts_for_offloading_with_the_same_logits(smollm, tmp_path, monkeypatch):
    """--offload cpu|disk on the embedded GGUF reads a converted safetensors folder: same model, bit for bit."""
    import torch
    from transformers import AutoModelForCausalLM

    from svd_explorer.model.loading import converted_embedded

    monkeypatch.setenv("SVD_EXPLORER_CACHE", str(tmp_path))
    converted = AutoModelForCausalLM.from_pretrained(converted_embedded("smollm2-135m"))
    ids = torch.arange(1, 33)[None]
    assert torch.equal(converted(ids).logits, smollm.model(ids).logits)
