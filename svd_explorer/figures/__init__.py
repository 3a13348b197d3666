"""Plotly pictures of runs, drawn from records (never from models)."""
