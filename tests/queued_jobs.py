"""Queues caption jobs straight into the ledger (no API, no doorbell), for tests of the worker's claim loop."""
from __future__ import annotations

import hashlib

from db.queries import ImageFacts, NewJob, insert_jobs, store_image
from image_factory import shape_png


def enqueue_captions(session_factory, tenant, queue: str, count: int, start: int = 0) -> list[str]:
    """`count` caption jobs on `queue`, on shapes start..start+count-1 (64x64 PNGs); returns their images' sha256."""
    with session_factory.begin() as session:
        jobs = []
        for index in range(start, start + count):
            data = shape_png(index)
            sha256 = hashlib.sha256(data).hexdigest()
            store_image(session, tenant_id=tenant.id, image=ImageFacts(data, sha256, "PNG", 64, 64))
            jobs.append(NewJob(task="caption", queue=queue, params={}, image_sha256=sha256))
        insert_jobs(session, tenant_id=tenant.id, jobs=jobs, max_attempts=3)
    return [job.image_sha256 for job in jobs]
