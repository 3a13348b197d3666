"""Compression time on an accelerator against one calibration forward, for a model of SmolLM2-135M's shape.

    python bench/device.py [--device cuda] [--methods svd-llm,saes-svd,aa-svd] [--preset demo|paper] [--out FILE]

A lent GPU machine cannot fetch the embedded model (and the GGUF file is too large to carry), so this
builds a Llama with SmolLM2-135M-Instruct's configuration and random weights (seed 0), a character
tokenizer and seeded synthetic English-like text for calibration and evaluation. Time depends on the
shapes, not on the weights, so `seconds / calib_forward_seconds` is comparable with the CPU's figures
from bench/presets.py; perplexities of a random model mean nothing and are not reported. Also checks
that the accelerator and the CPU make the same compressed model: svd-llm at 20% in float32 on both,
the relative difference of their perplexities (a random model's, compared with each other only), and
what `--offload cpu` saves of the accelerator's memory.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from svd_explorer.run.config import with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
WORDS = ("the of and to in is was for on as with by at from that which his her their low rank matrix model "
         "layer error value singular compress river city music history science water light energy").split()


def random_smollm_shape(folder: Path) -> Path:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).save_pretrained(folder)
    chars = [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="</s>").save_pretrained(folder)
    return folder


def synthetic_text(path: Path, chars: int = 400_000) -> Path:
    rng = random.Random(0)
    words = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS) + ("." if rng.random() < 0.08 else ""))
    path.write_text(" ".join(words))
    return path


def measure(model: Path, text: Path, method: str, device: str, preset: str = "demo", **extra) -> dict:
    config = with_preset(preset, model=str(model), calib=str(text), eval_source=str(text), eval_windows=8,
                         method=method, ratio=0.2, device=device, stats_cache="off", **extra)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    record = run(config).record
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"method": method, "device": record.device, "precision": record.compression.calibration["precision"],
            "linalg": record.linalg, "seconds": record.compression.seconds,
            "calib_forward_seconds": record.calib_forward_seconds, "wall": time.time() - start,
            "peak_gpu_mb": peak, "ppl": record.scores.get("ppl_compressed")}


def table(rows: list[dict], device: str) -> list[str]:
    lines = [f"device: {torch.cuda.get_device_name() if device.startswith('cuda') else device}, "
             f"torch {torch.__version__}", "",
             "| method | precision | compression s | calib forward s | multiple | whole run s | peak GPU MB |",
             "|---|---|---|---|---|---|---|"]
    return lines + [f"| {r['method']} | {r['precision']} | {r['seconds']:.1f} | {r['calib_forward_seconds']:.2f} | "
                    f"{r['seconds'] / r['calib_forward_seconds']:.1f}x | {r['wall']:.0f} | "
                    f"{r['peak_gpu_mb'] or 0:.0f} |" for r in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", default="svd-llm,saes-svd,aa-svd")
    parser.add_argument("--preset", default="demo", choices=("demo", "paper"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    model, text = random_smollm_shape(work / "model"), synthetic_text(work / "text.txt", 1_200_000)
    rows = []
    for method in args.methods.split(","):
        rows.append(measure(model, text, method, args.device, args.preset))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.preset != "demo":     # the checks below are the demo preset's
        print("\n".join(table(rows, args.device)))
        return 0
    offloaded = measure(model, text, "svd-llm", args.device, offload="cpu")
    same = [measure(model, text, "svd-llm", device, precision="float32") for device in (args.device, "cpu")]
    gap = abs(same[0]["ppl"] - same[1]["ppl"]) / same[1]["ppl"]
    lines = table(rows, args.device)
    lines += ["", f"svd-llm 20% in float32: perplexity on {args.device} {same[0]['ppl']:.6g}, on cpu "
              f"{same[1]['ppl']:.6g}, relative difference {gap:.2e} (linalg: {same[0]['linalg']})",
              f"svd-llm 20% with --offload cpu (one block on the accelerator at a time): peak GPU memory "
              f"{offloaded['peak_gpu_mb']:.0f} MB against {rows[0]['peak_gpu_mb'] or 0:.0f} MB in memory, "
              f"compression {offloaded['seconds']:.1f} s, perplexity equal to the in-memory run's: "
              f"{offloaded['ppl'] == rows[0]['ppl']} ({offloaded['ppl']:.6g})"]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n\n" + json.dumps(rows + [offloaded] + same, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
