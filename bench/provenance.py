"""Where a benchmark's numbers came from: the commit the files record beside their command."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit(unknown: str = "?") -> str:
    """The short hash of HEAD, or `unknown` outside a git checkout."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                          check=False).stdout.strip() or unknown
