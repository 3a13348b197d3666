"""Limits of the app: generous on a user's own machine, strict on a public Space (SVD_EXPLORER_PUBLIC=1).

Every value the page sends is a stranger's: each is bounded here, and each bound can be changed by
the environment variable named beside it. In public mode only allow-listed models load (or, with a
parameter cap, hub models whose config says they are small enough), never a local path, and hub
downloads do not carry the Space's token.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from ..errors import ConfigError
from ..files import public_mode
from ..model.blocks import count_parameters, meta_model
from ..model.hub import EMBEDDED
from ..model.loading import read_config, source_kind

PUBLIC_MODELS = (*EMBEDDED, "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
                 "Qwen/Qwen2.5-0.5B-Instruct")

# field -> (environment variable, public value, local value)
BOUNDS = {
    "calib_samples": ("SVD_EXPLORER_MAX_CALIB_SAMPLES", 64, 256),
    "seq_len": ("SVD_EXPLORER_MAX_SEQ_LEN", 512, 2048),
    "eval_windows": ("SVD_EXPLORER_MAX_EVAL_WINDOWS", 40, 200),
    "refine_steps": ("SVD_EXPLORER_MAX_REFINE_STEPS", 200, 1000),
    "refine_batch": ("SVD_EXPLORER_MAX_REFINE_BATCH", 4, 32),
    "zero_shot_limit": ("SVD_EXPLORER_MAX_ZERO_SHOT_LIMIT", 200, 1000),
    "new_tokens": ("SVD_EXPLORER_MAX_NEW_TOKENS", 256, 512),
    "prompt_chars": ("SVD_EXPLORER_MAX_PROMPT_CHARS", 2000, 8000),
    "job_seconds": ("SVD_EXPLORER_JOB_SECONDS", 900, 0),           # 0: no limit
    "queue": ("SVD_EXPLORER_QUEUE", 8, 32),
    "models_kept": ("SVD_EXPLORER_MODELS_KEPT", 2, 4),
    "upload_mb": ("SVD_EXPLORER_MAX_UPLOAD_MB", 20, 200),
    "download_seconds": ("SVD_EXPLORER_DOWNLOAD_SECONDS", 600, 3600),
    "downloads_mb": ("SVD_EXPLORER_DOWNLOADS_MB", 4000, 0),          # 0: no bound
    "max_params": ("SVD_EXPLORER_MAX_PARAMS", 0, 0),               # 0: allow-list only (public), no cap (local)
}


@dataclass(frozen=True)
class Limits:
    public: bool
    models: tuple
    calib_samples: int
    seq_len: int
    eval_windows: int
    refine_steps: int
    refine_batch: int
    zero_shot_limit: int
    new_tokens: int
    prompt_chars: int
    job_seconds: int
    queue: int
    models_kept: int
    upload_mb: int
    download_seconds: int
    downloads_mb: int
    max_params: int

    @classmethod
    def of(cls, public: bool = False, **overrides) -> "Limits":
        """Public or local values from BOUNDS, with some replaced (tests, and from_env)."""
        values = {name: public_value if public else local_value
                  for name, (_, public_value, local_value) in BOUNDS.items()}
        return cls(public=public, **{"models": PUBLIC_MODELS, **values, **overrides})

    @classmethod
    def from_env(cls, public: bool | None = None) -> "Limits":
        public = public_mode() if public is None else public
        values = {name: _env_int(var) for name, (var, _, _) in BOUNDS.items() if var in os.environ}
        models = tuple(m.strip() for m in os.environ.get("SVD_EXPLORER_MODELS", ",".join(PUBLIC_MODELS)).split(",")
                       if m.strip())
        return cls.of(public, models=models, **values)

    def with_(self, **changes) -> "Limits":
        return replace(self, **changes)

    def describe(self) -> list[tuple[str, str, object]]:
        """(environment variable, field, value) of every limit, for the README and the page."""
        return [(BOUNDS[f.name][0], f.name, getattr(self, f.name)) for f in fields(self) if f.name in BOUNDS]

    @property
    def token(self):
        """Hub downloads in public mode never carry the Space's own token."""
        return False if self.public else None

    def check_model(self, source: str) -> None:
        """Refuse, in one line, a model this Space does not load (before anything is downloaded but a config)."""
        source = (source or "").strip()
        if not self.public or source in self.models:
            return
        if source_kind(source) == "folder":
            raise ConfigError("local folders cannot be loaded on this public Space; pick one of the listed models",
                              "model")
        if self.max_params <= 0:
            raise ConfigError(f"this public Space only loads {', '.join(self.models)}", "model")
        params = count_parameters(meta_model(read_config(source, token=False)))
        if params > self.max_params:
            raise ConfigError(f"{source} has {params / 1e6:.0f}M parameters; this public Space loads models up to "
                              f"{self.max_params / 1e6:.0f}M", "model")

    def check_values(self, **values) -> None:
        """Each count within its bound (names as in BOUNDS), with a message naming the control; a missing value
        (an API caller may send none) is refused too, rather than failing later in int()."""
        for name, value in values.items():
            high = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be a number >= 0, got {value!r}")
            if high and value > high:
                raise ConfigError(f"{name.replace('_', ' ')} is at most {high} here (you asked for {value:g})")


def _env_int(var: str) -> int:
    """An integer limit from the environment, or a one-line error naming the variable (at start, not later)."""
    try:
        return int(os.environ[var])
    except ValueError:
        raise ConfigError(f"{var} must be a whole number, got {os.environ[var]!r}") from None
