"""Where the project writes on its own (one cache folder, $SVD_EXPLORER_CACHE or the user's cache folder),
how it writes tensors there (whole files or none), and whether it serves the public ($SVD_EXPLORER_PUBLIC)."""
from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file


def public_mode() -> bool:
    """SVD_EXPLORER_PUBLIC set (the Dockerfile sets it): strangers use this server, so the app is strict and
    nothing is ever uploaded with the server's token."""
    return os.environ.get("SVD_EXPLORER_PUBLIC", "0") not in ("0", "", "false")


def cache_dir(*parts: str) -> Path:
    """$SVD_EXPLORER_CACHE, else $XDG_CACHE_HOME/svd-explorer, else ~/.cache/svd-explorer (created)."""
    root = os.environ.get("SVD_EXPLORER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "svd-explorer")
    folder = Path(root, *parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def modified_time(path: Path) -> float:
    """A file's modification time, 0 when another process removed it meanwhile (caches prune concurrently)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def write_atomically(path: Path, write) -> None:
    """write(partial) a file beside `path`, then rename it onto `path`: a reader (another run sharing the
    cache) never sees half a file, and a write that fails (a full disk) leaves nothing behind and raises."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def save_atomically(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """A safetensors file, written whole or not at all."""
    write_atomically(path, lambda partial: save_file(tensors, str(partial), metadata=metadata))
