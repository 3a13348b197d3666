"""The Gradio app: texts.py (what the page says), state.py (what the server keeps), callbacks.py (what
happens on a click), layout.py (the page, its wiring and `launch`), limits.py (public-Space bounds).

This file imports nothing, so no module of the page reaches back to its package: import from the module
that holds a name (`from svd_explorer.ui.layout import build_demo, launch`)."""
