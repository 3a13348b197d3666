"""A saved folder any transformers user can load: the factors through the modeling file copied beside them
(`trust_remote_code=True`), a merged dense checkpoint with nothing extra, and plain transformers refusing
the factor folder loudly instead of filling random projections. Each load here runs in a fresh Python with
this package hidden, as a user without SVD Explorer would."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ARCHITECTURES, char_tokenizer, tiny_ids, tiny_model

from svd_explorer.compress.methods import get_method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.model.saving import save_compressed, save_merged

# A fresh interpreter that cannot import svd_explorer: only torch, safetensors and transformers.
ALONE = """
import sys
sys.modules["svd_explorer"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, mode, ids = sys.argv[1], sys.argv[2], torch.tensor({ids})
kwargs = {{"trust_remote_code": True}} if mode == "remote" else {{}}
try:
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
except Exception as err:
    print("REFUSED", type(err).__name__, str(err).splitlines()[0])
    raise SystemExit(0)
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, folder + "/logits.pt")
tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
new = model.generate(input_ids=ids[:1], max_new_tokens=4, do_sample=False)[0, ids.shape[1]:]
assert len(new) == 4 and isinstance(tokenizer.decode(new), str)
print("LOADED", type(model).__name__, sum(p.numel() for p in model.parameters()))
"""


def load_alone(folder, mode: str, ids: torch.Tensor) -> str:
    done = subprocess.run([sys.executable, "-c", ALONE.format(ids=ids.tolist()), str(folder), mode],
                          capture_output=True, text=True, timeout=300, cwd=folder, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def compressed(arch: str, method: str = "ressvd"):
    model, _ = compress_model(tiny_model(arch), get_method(method), 0.3, tiny_ids(), batch_size=3,
                              precision="float32")
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_factors_load_with_transformers_alone_and_plain_loading_is_refused(arch, tmp_path):
    model, ids = compressed(arch), tiny_ids(2)
    folder = save_compressed(model, char_tokenizer(), tmp_path / "f", {"method": "ressvd", "ratio": 0.3})
    assert (folder / "modeling_svd_explorer.py").exists() and (folder / "README.md").exists()
    assert "REFUSED" in load_alone(folder, "plain", ids)          # transformers asks for trust_remote_code
    said = load_alone(folder, "remote", ids)
    assert said.startswith("LOADED") and int(said.split()[-1]) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(torch.load(folder / "logits.pt"), model(input_ids=ids).logits, atol=1e-4)


def test_merged_checkpoint_loads_anywhere_with_the_factors_quality(tmp_path):
    model, ids = compressed("llama", "svd-llm"), tiny_ids(2)
    folder = save_merged(model, char_tokenizer(), tmp_path / "m", {"method": "svd-llm", "ratio": 0.3})
    assert not (folder / "manifest.json").exists() and json.loads((folder / "svd_explorer.json").read_text())
    said = load_alone(folder, "plain", ids)
    assert said.startswith("LOADED LlamaForCausalLM")
    assert int(said.split()[-1]) == sum(p.numel() for p in tiny_model("llama").parameters())   # dense again
    with torch.no_grad():
        assert torch.allclose(torch.load(folder / "logits.pt"), model(input_ids=ids).logits, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_family_writes_a_portable_config(arch, tmp_path):
    folder = save_compressed(compressed(arch, "svd"), char_tokenizer(), tmp_path / arch)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "svd_explorer" and config["base_model_type"] == tiny_model(arch).config.model_type
    assert config["low_rank"] and config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_svd_explorer.")


def test_the_model_card_says_how_it_was_made_and_how_to_load_it(tmp_path):
    info = {"base": {"source": "org/base"}, "method": "svd-llm", "ratio": 0.2, "allocation": {"name": "uniform"},
            "scores": {"ppl_original": 30.0, "ppl_compressed": 40.0}, "command": "python -m svd_explorer compress"}
    card = (save_compressed(compressed("llama"), None, tmp_path / "c", info) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\nbase_model: org/base")
    assert "trust_remote_code=True" in card and "ppl_compressed | 40" in card and "python -m svd_explorer" in card


def test_merge_and_push_from_the_command_line(tmp_path, monkeypatch, capsys):
    from svd_explorer.cli.main import main
    from svd_explorer.model import publish

    folder = save_compressed(compressed("llama", "svd"), char_tokenizer(), tmp_path / "f", {"method": "svd"})
    assert main(["merge", str(folder), str(tmp_path / "dense")]) == 0
    assert (tmp_path / "dense" / "svd_explorer.json").exists()
    calls = []

    class Hub:   # stands in for huggingface_hub.HfApi: the test stops at the upload call
        def create_repo(self, repo, **kw):
            calls.append(("create", repo, kw["private"]))

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], kw["folder_path"]))
            return "https://huggingface.co/me/m/commit/1"

    monkeypatch.setattr(publish, "HfApi", Hub)
    capsys.readouterr()
    assert main(["push", str(folder), "--repo", "me/m", "--private"]) == 0
    assert calls == [("create", "me/m", True), ("upload", "me/m", str(folder))] and "commit" in capsys.readouterr().out
    monkeypatch.setenv("SVD_EXPLORER_PUBLIC", "1")
    assert main(["push", str(folder), "--repo", "me/m"]) == 2
    assert "refused in public mode" in capsys.readouterr().err and len(calls) == 2
    monkeypatch.delenv("SVD_EXPLORER_PUBLIC")
    assert main(["push", str(tmp_path), "--repo", "me/m"]) == 2          # not a saved folder: one line, no upload
    assert "not a folder saved by SVD Explorer" in capsys.readouterr().err and len(calls) == 2
