"""Where the project writes on its own: one cache folder, $SVD_EXPLORER_CACHE or the user's cache folder."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$SVD_EXPLORER_CACHE, else $XDG_CACHE_HOME/svd-explorer, else ~/.cache/svd-explorer (created)."""
    root = os.environ.get("SVD_EXPLORER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "svd-explorer")
    folder = Path(root, *parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
