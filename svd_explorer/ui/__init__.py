"""The Gradio app: texts.py (what the page says), state.py (what the server keeps), callbacks.py (what
happens on a click), layout.py (the page and its wiring), limits.py (public-Space bounds)."""
from __future__ import annotations

from .layout import CSS, build_demo
from .limits import Limits


def launch(demo=None, **kwargs):
    """Queue and launch; host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set."""
    import gradio as gr

    demo = demo or build_demo()
    limits = demo.limits
    demo.queue(max_size=limits.queue * 4, default_concurrency_limit=4)
    return demo.launch(theme=gr.themes.Soft(), css=CSS, max_file_size=f"{limits.upload_mb}mb", **kwargs)


__all__ = ["Limits", "build_demo", "launch"]
