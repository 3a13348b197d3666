"""Sending a saved folder to the Hugging Face Hub (`python -m svd_explorer push`).

The token is the environment's (HF_TOKEN, or the one `huggingface-cli login` stored): never a flag, so it
stays out of shell histories. Public mode refuses: a Space must never upload with its own token. The
folder is checked first, as loading would check it, so only a folder that loads is ever published.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from ..errors import ConfigError
from ..files import public_mode
from .saved_folder import MANIFEST, MERGED_INFO, verify_compressed_folder


def check_publishable(folder) -> str:
    """'factors' or 'merged': what the folder holds, verified; ConfigError when it is neither."""
    folder = Path(folder)
    if public_mode():
        raise ConfigError("push is refused in public mode: a shared server never uploads with its own token")
    if (folder / MANIFEST).exists():
        verify_compressed_folder(folder)
        return "factors"
    if (folder / MERGED_INFO).exists() and (folder / "config.json").exists():
        return "merged"
    raise ConfigError(f"{folder} is not a folder saved by SVD Explorer (no {MANIFEST} or {MERGED_INFO})")


def push_folder(folder, repo: str, private: bool = False, api: HfApi | None = None) -> str:
    """Create `repo` if needed and upload the whole folder; returns the URL of the commit."""
    check_publishable(folder)
    api = api or HfApi()
    api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                               commit_message="Upload a model compressed with SVD Explorer")
    return str(getattr(commit, "commit_url", commit))
