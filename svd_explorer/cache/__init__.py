"""Kept once, read many times: original-stream statistics and their sidecar tables, under a byte cap."""
