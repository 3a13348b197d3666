"""Every causal-LM family transformers registers: a tiny random model of each is laid out, compressed with svd,
saved and reloaded, and the reloaded model must compute what the compressed one computes. A family that cannot
be is listed with its reason (`pytest -s tests/test_families.py` prints the list); one that fails for a reason
not written down here fails the test."""
from __future__ import annotations

import time
import warnings

import pytest
import torch
from conftest import char_tokenizer
from transformers import CONFIG_MAPPING, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from svd_explorer.cli.main import main
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.errors import UnsupportedModelError
from svd_explorer.model import blocks, discovery
from svd_explorer.model.blocks import find_layout, meta_model
from svd_explorer.model.loading import load_compressed
from svd_explorer.model.saving import save_compressed
from svd_explorer.model.tiny import shrunk

FAMILIES = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
# a quick sample of unlike families: mixtures of experts, latent attention, hybrids with state-space or linear
# attention layers, sliding windows, fused projections, BERT-style decoders, the Gemma 3 text model
SAMPLE = ["gemma3_text", "mixtral", "deepseek_v3", "qwen3_next", "jamba", "falcon", "gpt_bigcode", "bert",
          "olmo2", "phimoe", "lfm2", "bloom"]

# Settings the default config of transformers 5.23 leaves out (None) or gets wrong, so that it builds no model
# at all: given when the default config is made.
INDEXER = {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 256, "indexer_budget": 64,
           "indexer_compress_ratio": 4}
DEFAULT_FIXES = {
    "deepseek_v2": {"num_experts_per_tok": 2},
    "dots1": {"n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2},
    "lfm2_moe": {"layer_types": ["conv", "conv", "full_attention", "conv"] * 8},
    "reformer": {"is_decoder": True},                                # a causal LM only as a decoder
    "cohere_compass_text": {"rope_parameters": {kind: {"rope_type": "default", "rope_theta": 10000.0}
                                                for kind in ("full_attention", "sliding_attention")}},
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    "qwen4_exp": {"text_config": INDEXER},                           # indexer sizes left None
    "qwen4_exp_text": INDEXER,
}
# Sizes tiny.py cannot derive from the others for these families: set on the shrunk config.
TINY_FIXES = {
    "dots3_note": {"text_config": {"head_dim": 32},                  # sliding layers: head_dim = nope + rope
                   "vision_config": {"adapter_out_dim": 64}, "audio_config": {"adapter_out_dim": 64}},
    "dots3_note_text": {"head_dim": 32},
    "reformer": {"axial_pos_embds_dim": [32, 32], "axial_pos_shape": [4, 4]},   # they sum to the hidden size
}
# Blocks kept: zamba's shared transformer needs two hybrid blocks to tie
LAYERS = {"zamba": 9}

# Families that cannot be compressed, saved and reloaded, and why: each reason is one line a user could be
# told. Anything else that fails fails the test.
KNOWN_UNSUPPORTED = {
    # drafters for speculative decoding: every block reads the keys and values of a separate target model
    "gemma4_assistant": "a drafter: its blocks read another model's keys and values (transformers' default "
                        "config does not even validate)",
    "gemma4_unified_assistant": "a drafter: its blocks read another model's keys and values, so it does not run "
                                "alone",
    # audio models: the registered config is the composite one, the causal-LM class wants the decoder's
    "musicgen": "an audio model: transformers builds no causal LM from its config",
    "musicgen_melody": "an audio model: transformers builds no causal LM from its config",
    # X-MOD runs only once a language adapter is chosen, which a token-ids-only run cannot do
    "xmod": "runs only after set_default_language(), so not on token ids alone",
    # the model's own config is the text config (emu3_text_model, mllama_text_model), which AutoModelForCausalLM
    # does not build: the compressed model is saved but the folder cannot be rebuilt (loading.py's limit)
    "emu3": "compresses, but the saved folder's text config is not one AutoModelForCausalLM builds",
    "mllama": "compresses, but the saved folder's text config is not one AutoModelForCausalLM builds",
    # the composite model's vision tower is a timm model, and timm is not a dependency of this project
    "gemma3n": "its vision tower needs the timm package (gemma3n_text, the text model, is supported)",
}


def tiny_family_config(family: str):
    """The family's default config with its fixes, shrunk to two or three blocks."""
    config = CONFIG_MAPPING[family](**DEFAULT_FIXES.get(family, {}))
    values = merged(shrunk(config.to_dict(), LAYERS.get(family, 2)), TINY_FIXES.get(family, {}))
    return type(config).from_dict(values)


def merged(values: dict, fixes: dict) -> dict:
    out = dict(values)
    for key, value in fixes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def attempt(family: str, folder) -> tuple[str, str]:
    """("ok", ""), ("unsupported", the one-line refusal) or ("failed", the step and the error)."""
    step = "build"
    try:
        config = tiny_family_config(family)
        meta = meta_model(config)   # what plan() and the app lay out before a weight is read
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
        step = "layout"
        layout = find_layout(model)
        assert [p.name for p in find_layout(meta).projections] == [p.name for p in layout.projections]
        step = "compress"
        ids = torch.randint(3, 100, (4, 16), generator=torch.Generator().manual_seed(0))
        compressed, record = compress_model(model, get_method("svd"), 0.3, ids, batch_size=4, precision="float32")
        assert record.layers and record.params_after < record.params_before
        step = "save and reload"
        save_compressed(compressed, char_tokenizer(), folder)
        reloaded = load_compressed(folder)
        step = "compare"
        expected = compressed(input_ids=ids[:2], use_cache=False).logits
        assert torch.allclose(reloaded(input_ids=ids[:2], use_cache=False).logits, expected, atol=1e-4, rtol=1e-4)
    except UnsupportedModelError as err:
        assert "\n" not in str(err), "a refusal is one line"
        return "unsupported", str(err)
    except Exception as err:  # noqa: BLE001 - every other failure is reported with its step
        message = (str(err).strip().splitlines() or [""])[0][:160]
        return "failed", f"{step}: {type(err).__name__}: {message}"
    return "ok", ""


@pytest.fixture(autouse=True)
def quiet_and_single_threaded():
    """Tiny models run fastest on one thread, and the warnings of 189 families are noise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", SAMPLE)
def test_a_sample_of_families_compress_save_and_reload(family, tmp_path):
    assert attempt(family, tmp_path / family) == ("ok", "")


def test_every_registered_family_is_supported_or_known_not_to_be(tmp_path):
    start = time.monotonic()
    results = {family: attempt(family, tmp_path / family) for family in FAMILIES}
    ok = [f for f, (status, _) in results.items() if status == "ok"]
    print(f"\n{len(ok)} of {len(FAMILIES)} causal-LM families compress, save and reload "
          f"({time.monotonic() - start:.0f} s); the others:")
    for family, (status, reason) in results.items():
        if status != "ok":
            print(f"  {family:28} {status}: {reason}  [{KNOWN_UNSUPPORTED.get(family, 'NOT KNOWN')}]")
    surprises = {f: r for f, r in results.items() if r[0] != "ok" and f not in KNOWN_UNSUPPORTED}
    assert surprises == {}
    stale = [f for f in KNOWN_UNSUPPORTED if results.get(f, ("ok",))[0] == "ok"]
    assert stale == [], "these families work now: take them off KNOWN_UNSUPPORTED"
    assert len(ok) >= 175   # 181 of 189 with transformers 5.23 (every family but KNOWN_UNSUPPORTED)


def saved_family(family: str, folder):
    """A tiny random model of `family` saved as a Hugging Face folder with a tokenizer: a local `--model`."""
    config = tiny_family_config(family)
    config.bos_token_id, config.eos_token_id = 1, 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


CLI = ["--method", "svd", "--ratio", "0.2", "--seq-len", "16", "--calib-samples", "4", "--eval-windows", "3",
       "--batch-size", "2"]


def test_a_gemma3_text_folder_compresses_from_the_command_line(text_file, tmp_path, capsys):
    """Gemma 3 is not in the table: its layout is planned from the config alone (this read a meta tensor's
    value once) and found again on the loaded weights."""
    folder = saved_family("gemma3_text", tmp_path / "gemma3")
    rc = main(["compress", "--model", folder, "--calib", str(text_file), "--eval", str(text_file), *CLI,
               "--output", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    assert load_compressed(tmp_path / "out").config.model_type == "gemma3_text"


def test_an_unsupported_family_is_one_line_from_the_command_line(text_file, tmp_path, capsys):
    folder = tmp_path / "musicgen"   # its config is all plan() reads: refused before a weight is
    CONFIG_MAPPING["musicgen"]().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    xmod = saved_family("xmod", tmp_path / "xmod")   # refused once loaded: it needs a language chosen
    for model, message in ((str(folder), "musicgen: transformers cannot build a causal LM"),
                           (xmod, "set_default_language")):
        assert main(["compress", "--model", model, "--calib", str(text_file), *CLI]) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in err


def test_without_a_tiny_copy_the_meta_model_gets_a_static_layout_and_the_loaded_one_is_traced(monkeypatch):
    config = tiny_family_config("olmo2")
    model = AutoModelForCausalLM.from_config(config).eval()
    traced = find_layout(model)
    monkeypatch.setattr(blocks, "_DISCOVERED", {})
    monkeypatch.setattr(discovery, "tiny_config", lambda config: 1 / 0)   # a config the shrinking cannot fit
    static = find_layout(meta_model(config))
    assert static.source == "static" and all(len(g) == 1 for g in static.groups)
    assert sorted(p.name for p in static.projections) == sorted(p.name for p in traced.projections)
    again = find_layout(model)   # the weights are there: the model itself runs
    assert again.source == "traced" and again.groups == traced.groups


class Convolutions(torch.nn.Module):
    """Blocks without a single nn.Linear."""

    config = type("Config", (), {"model_type": "convnet", "num_hidden_layers": 2})()

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(128, 8)
        self.blocks = torch.nn.ModuleList(torch.nn.Conv1d(8, 8, 1) for _ in range(2))

    def forward(self, input_ids, use_cache=False):
        hidden = self.embed(input_ids).transpose(1, 2)
        for block in self.blocks:
            hidden = block(hidden)
        return hidden


def test_blocks_without_projections_are_refused_in_one_line():
    with pytest.raises(UnsupportedModelError, match=r"^convnet: its blocks hold no projection to compress"):
        find_layout(Convolutions())
