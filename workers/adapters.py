"""Tenants' fine-tuned versions applied over the worker's one base model, kept in a least-recently-used cache."""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from db.model_versions import VersionHeader, version_header, version_parts
from db.session import session_scope
from workers.config import WorkerSettings

log = logging.getLogger(__name__)


class VersionUnusable(Exception):
    """A job's version cannot run on this worker: it is gone, or it was tuned from another base model."""


def base_model_names(pipeline: Any, settings: WorkerSettings) -> set[str]:
    """The names the worker's base model goes by: its setting (LENSQ_MODEL) and its checkpoint's own name."""
    built_from = str(getattr(pipeline, "model_version", "")).split("@", 1)[0]
    return {name for name in (settings.model, built_from) if name}


class TunedPipelines:
    """Versions applied over one base pipeline, keyed by version id and weights hash; the oldest used goes first.

    Each entry holds only the version's trained parts over the SAME base model objects (multimodal.finetune's
    apply_tuned), so memory grows by adapters and heads, never by copies of the base model."""

    def __init__(self, size: int, settings: WorkerSettings, database_url: str | None = None):
        self.size, self.settings, self.database_url = size, settings, database_url  # None: LENSQ_DATABASE_URL
        self._entries: OrderedDict[tuple[uuid.UUID, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _header(self, pipeline: Any, version_id: uuid.UUID) -> VersionHeader:
        with session_scope(self.database_url) as session:
            header = version_header(session, version_id=version_id)
        if header is None:
            raise VersionUnusable(f"model version {version_id} no longer exists")
        names = base_model_names(pipeline, self.settings)
        if header.base_model not in names:
            raise VersionUnusable(f"model {header.name} was tuned from {header.base_model}, but this worker runs "
                                  f"{' / '.join(sorted(names))}")
        return header

    def _load(self, pipeline: Any, header: VersionHeader) -> Any:
        from multimodal.finetune import TunedParts, apply_tuned  # torch is imported in the worker only

        started = time.monotonic()
        with session_scope(self.database_url) as session:
            stored = version_parts(session, version_id=header.id)
        if stored is None:
            raise VersionUnusable(f"model version {header.id} no longer exists")
        weights, config = stored
        tuned = apply_tuned(pipeline, TunedParts.from_stored(header.task, weights, config))
        log.info("applied %s (%d bytes of weights) in %.2fs", header.name, len(weights), time.monotonic() - started)
        return tuned

    def get(self, pipeline: Any, version_id: uuid.UUID) -> Any:
        """The version applied over `pipeline`, loaded on first use; VersionUnusable when it cannot run here."""
        header = self._header(pipeline, version_id)
        key = (header.id, header.weights_sha256)  # a version's weights never change, but a hash costs nothing
        with self._lock:  # one model thread per worker: loading under the lock keeps a version loaded once
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            tuned = self._load(pipeline, header)
            self._entries[key] = tuned
            while len(self._entries) > self.size:
                (evicted, _), _ = self._entries.popitem(last=False)
                log.info("evicted model version %s from the cache", evicted)
            return tuned


@functools.cache
def tuned_pipelines() -> TunedPipelines:
    """This process's cache of tuned pipelines, sized by LENSQ_TUNED_MODEL_CACHE_SIZE."""
    settings = WorkerSettings()
    return TunedPipelines(settings.tuned_model_cache_size, settings)
