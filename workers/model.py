"""The worker's model: one pipeline per process, loaded lazily on first use through get_pipeline()."""
from __future__ import annotations

import logging
import threading
import time
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
            _pipeline = load_pipeline(settings.model, device=settings.device, quantize=settings.quantize)
            log.info("loaded %s in %.1fs", _pipeline.model_version, time.monotonic() - started)
    return _pipeline


def decode_image_bytes(data: bytes) -> Any:
    """A PIL image from stored bytes; raises ValueError (multimodal.ImageError) with the reason."""
    from multimodal import decode_image

    return decode_image(data)
