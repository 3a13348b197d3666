"""Devices, dtypes and the sequential (offloaded) mode, all on the CPU: no test needs a GPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from svd_explorer.errors import ConfigError, ModelLoadError
from svd_explorer.model.devices import resolve_device, resolve_dtype
from svd_explorer.model.offload import choose_placement
from svd_explorer.run import engine
from svd_explorer.run.config import with_preset


def tiny_run(tiny_folder, text_file, **kw):
    config = with_preset("demo", model=str(tiny_folder), method=kw.pop("method", "svd-llm"), ratio=0.3,
                         calib=str(text_file), eval_source=str(text_file), calib_samples=4, seq_len=16,
                         eval_windows=3, batch_size=2, refine_steps=3, **kw)
    return engine.run(config, keep_model=True)


def test_a_device_that_is_not_here_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--device cuda is not available on this machine; available: cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu-please")
    assert (resolve_device("auto") == torch.device("cpu")
            and resolve_dtype("auto", torch.device("cpu")) == torch.float32)


def test_a_dtype_the_device_does_not_support_is_refused(monkeypatch):
    import svd_explorer.model.devices as devices

    monkeypatch.setattr(devices, "supports", lambda dtype, device: dtype == torch.float32)
    with pytest.raises(ConfigError, match="--dtype bfloat16 is not supported by cpu"):
        resolve_dtype("bfloat16", torch.device("cpu"))


def test_auto_and_cpu_give_identical_results(tiny_folder, text_file):
    a, b = tiny_run(tiny_folder, text_file, device="auto"), tiny_run(tiny_folder, text_file, device="cpu")
    x, y = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(x[k], y[k]) for k in x) and a.record.device == b.record.device == "cpu"
    assert a.record.scores == b.record.scores


@pytest.mark.parametrize("method", ["svd-llm", "saes-svd", "aa-svd"])
def test_disk_offload_gives_the_same_weights_and_perplexity(tiny_folder, text_file, method):
    memory = tiny_run(tiny_folder, text_file, method=method, offload="none")
    disk = tiny_run(tiny_folder, text_file, method=method, offload="disk")
    assert disk.record.placement["mode"] == "disk" and memory.record.placement["mode"] == "memory"
    from svd_explorer.model.offload import cpu_tensors

    x, y = dict(cpu_tensors(memory.model)), dict(cpu_tensors(disk.model))
    assert x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)
    assert disk.record.scores["ppl_compressed"] == pytest.approx(memory.record.scores["ppl_compressed"], rel=1e-5)
    from svd_explorer.text.generation import side_by_side

    texts = list(side_by_side([memory.model, disk.model], disk.loaded.tokenizer, "Hello", max_new_tokens=4))
    assert texts[-1][0] == texts[-1][1]            # generation runs through the offloaded blocks alike


def test_placement_is_decided_from_the_figures(monkeypatch, tmp_path):
    import shutil

    import svd_explorer.model.offload as offload

    cpu = torch.device("cpu")
    monkeypatch.setattr(offload, "free_memory", lambda device: 10 * 2**30)
    fits = choose_placement("auto", cpu, params=10**8, block_params=10**6, dtype_bytes=4, work_bytes=0)
    assert fits.mode == "memory" and "it fits" in fits.reason
    big = choose_placement("auto", cpu, params=3 * 10**9, block_params=10**7, dtype_bytes=4, work_bytes=0,
                           folder=str(tmp_path))
    assert big.mode == "disk" and big.folder == str(tmp_path) and "needs about 22.4 GiB" in big.sentence()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 2**30))
    with pytest.raises(ModelLoadError, match=r"does not fit: .* offloading it .* needs about 22.4 GiB of disk"):
        choose_placement("auto", cpu, params=3 * 10**9, block_params=10**7, dtype_bytes=4, work_bytes=0,
                         folder=str(tmp_path))


# Many thin blocks: the decoder (about 400 MB) is large beside one block's transient working set (float64
# copies, Gram matrices, decompositions), which is the same in both runs but makes each peak noisy.
BIG_CONFIG = dict(hidden_size=512, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=8,
                  num_hidden_layers=32, vocab_size=128)
BLOCK_PARAMS = 4 * 512 * 512 + 3 * 512 * 1408


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """A Llama of about 400 MB of decoder weights, random, built from a config."""
    import transformers
    from conftest import char_tokenizer

    folder = tmp_path_factory.mktemp("big-llama")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**BIG_CONFIG))
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_disk_offload_lowers_peak_memory_by_about_the_decoder(big_folder, text_file, tmp_path):
    """Each run in its own process (peak RSS is a process's high-water mark): the offloaded one keeps only a
    block of each model in memory, so its peak is lower by at least the decoder's weights minus one block."""
    peaks = {}
    for mode in ("none", "disk"):
        out = tmp_path / f"{mode}.json"
        done = subprocess.run([sys.executable, "-m", "svd_explorer", "compress", "--model", str(big_folder),
                               "--method", "svd-llm", "--ratio", "0.2", "--calib", str(text_file), "--eval",
                               str(text_file), "--seq-len", "32", "--calib-samples", "4", "--eval-windows", "2",
                               "--batch-size", "2", "--offload", mode, "--no-stats-cache", "--no-cost", "--json",
                               str(out)],
                              capture_output=True, text=True, timeout=900, env={**os.environ})
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[mode] = json.loads(out.read_text())
    block_mb = BLOCK_PARAMS * 4 / 2**20
    decoder_mb = BIG_CONFIG["num_hidden_layers"] * block_mb
    assert peaks["disk"]["placement"]["mode"] == "disk"
    assert peaks["disk"]["ppl_compressed"] == pytest.approx(peaks["none"]["ppl_compressed"], rel=5e-3)
    assert peaks["none"]["peak_rss_mb"] - peaks["disk"]["peak_rss_mb"] >= decoder_mb - block_mb
