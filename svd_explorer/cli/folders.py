"""`merge` and `push`: what a user does with a saved folder after the run.

    python -m svd_explorer merge runs/svd-llm-20 runs/svd-llm-20-dense     # a standard dense checkpoint
    python -m svd_explorer push runs/svd-llm-20 --repo me/smollm2-svd-llm-20   # token from HF_TOKEN
"""
from __future__ import annotations

import json

from ..model.loading import load_compressed_with_tokenizer
from ..model.publish import push_folder
from ..model.saving import SAVE_DTYPES, check_output_folder, folder_bytes, save_merged


def add_folder_parsers(sub) -> None:
    m = sub.add_parser("merge", help="write a saved folder's factors back as a standard dense checkpoint")
    m.add_argument("folder", help="a folder saved by compress --output")
    m.add_argument("output", help="an empty folder for the dense checkpoint")
    m.add_argument("--save-dtype", choices=list(SAVE_DTYPES), default="bfloat16")
    m.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    m.add_argument("--debug", action="store_true")
    p = sub.add_parser("push", help="upload a saved folder to the Hugging Face Hub (token from HF_TOKEN)")
    p.add_argument("folder", help="a folder saved by compress --output, or by merge")
    p.add_argument("--repo", required=True, help="the hub repository, USER/NAME (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--debug", action="store_true")


def merge_command(args) -> int:
    check_output_folder(args.output, args.folder, args.force)
    loaded = load_compressed_with_tokenizer(args.folder)
    save_merged(loaded.model, loaded.tokenizer, args.output, loaded.manifest, args.save_dtype)
    print(json.dumps({"output": args.output, "bytes": folder_bytes(args.output),
                      "factors_bytes": folder_bytes(args.folder)}, indent=1))
    return 0


def push_command(args) -> int:
    print(push_folder(args.folder, args.repo, args.private))
    return 0
