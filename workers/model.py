"""The worker's model and its helpers: one pipeline and one preprocessing thread pool per process, made lazily."""
from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workers.config import WorkerSettings

log = logging.getLogger(__name__)
_pipeline: Any = None
_lock = threading.Lock()


def get_pipeline() -> Any:
    """This process's pipeline (`multimodal.load_pipeline(LENSQ_MODEL)`), loaded once."""
    global _pipeline
    with _lock:
        if _pipeline is None:
            from multimodal import load_pipeline  # torch is imported here, in the worker only

            settings = WorkerSettings()
            started = time.monotonic()
            _pipeline = load_pipeline(settings.model, device=settings.device, quantize=settings.quantize,
                                      embedding_cache_size=settings.embedding_cache_size)
            log.info("loaded %s in %.1fs", _pipeline.model_version, time.monotonic() - started)
    return _pipeline


@functools.cache
def preprocess_pool() -> ThreadPoolExecutor:
    """The threads that decode and resize images, so the model's thread only runs the model."""
    return ThreadPoolExecutor(max_workers=WorkerSettings().preprocess_threads, thread_name_prefix="preprocess")


def decode_image_bytes(data: bytes) -> Any:
    """A PIL image from stored bytes; raises ValueError (multimodal.ImageError) with the reason."""
    from multimodal import decode_image

    return decode_image(data)
