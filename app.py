"""SVD Explorer web app: `make run` (or `python app.py`), and the Hugging Face Docker Space.

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).
"""
from svd_explorer.ui.layout import launch

if __name__ == "__main__":
    launch()
