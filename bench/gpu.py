"""Every method at 20% with the papers' protocol (--preset paper) on a 0.5B hub model, on a GPU.

    python bench/gpu.py [--model Qwen/Qwen2.5-0.5B] [--out bench/results/gpu]

Not part of CI. Needs a CUDA device and the Hugging Face hub (the model and WikiText-2 train); prints
the same table as bench/methods.py. Without a GPU it says so and exits 0.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from methods import run_and_print  # noqa: E402

from svd_explorer.compress.methods import list_methods  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="bench/results/gpu")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU here: bench/gpu.py needs a CUDA device (nothing was run)")
        return 0
    sweep = ["sweep", "--model", args.model, "--methods", args.methods, "--ratios", "0.2", "--seeds", args.seeds,
             "--preset", "paper", "--device", "cuda", "--gpus-per-run", "1", "--extra-eval", "ptb", "--out", args.out]
    return run_and_print(sweep, args.out)


if __name__ == "__main__":
    sys.exit(main())
