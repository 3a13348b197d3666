"""Real quality on the embedded SmolLM2-135M: methods must beat plain SVD, the seed methods svd-llm.

Small settings keep this fast (calibration 16 x 256 tokens of Wikipedia paragraphs, evaluation
8 x 256 tokens of WikiText-2 test); the benchmark (make bench) uses the papers' protocol.
"""
import pytest

from svd_explorer.data import text_windows
from svd_explorer.methods import get_method
from svd_explorer.metrics import evaluate
from svd_explorer.pipeline import compress_model

pytestmark = pytest.mark.slow
RATIO = 0.2


@pytest.fixture(scope="module")
def setting(smollm, shared_data):
    calib, _ = text_windows("boolq", smollm.model, smollm.tokenizer, 16, 256, 0, split="train", consecutive=False)
    evalw, _ = text_windows(str(shared_data / "wikitext-2-raw" / "wiki.test.raw"), smollm.model, smollm.tokenizer,
                            8, 256, 0, split="test", consecutive=True)
    return smollm, calib, evalw


_cache = {}


def ppl(setting, name, **options):
    key = (name, tuple(sorted(options.items())))
    if key not in _cache:
        lm, calib, evalw = setting
        compressed, _ = compress_model(lm.model, get_method(name, **options), RATIO, calib, precision="auto")
        _cache[key] = evaluate(compressed, evalw)["ppl"]
        del compressed
    return _cache[key]


def test_original_model_is_sane(setting):
    lm, _, evalw = setting
    assert 15 < evaluate(lm.model, evalw)["ppl"] < 60


def test_svd_llm_beats_asvd_beats_svd(setting):
    assert ppl(setting, "svd-llm") < ppl(setting, "asvd") < ppl(setting, "svd")
    assert ppl(setting, "svd") > 1e4  # plain SVD collapses, as the papers report


@pytest.mark.parametrize("name, options", [("ressvd", {}), ("saes-svd", {}), ("aa-svd", {"refine_steps": 60})])
def test_seed_methods_beat_svd_llm(setting, name, options):
    assert ppl(setting, name, **options) < ppl(setting, "svd-llm")
