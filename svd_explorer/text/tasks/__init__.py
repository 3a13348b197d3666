"""Zero-shot task definitions for lm-eval, read from the local data folder (yaml + loaders)."""
