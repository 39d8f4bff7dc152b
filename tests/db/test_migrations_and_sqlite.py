"""Migrations run on Postgres and SQLite; on SQLite the claim is a single-writer path and still disjoint."""
from __future__ import annotations

import hashlib
import threading

import uuid

from sqlalchemy import inspect, text

from db.migrate import downgrade, upgrade
from db.queries import ImageFacts, NewJob, claim_batch, create_api_key, get_or_create_tenant, insert_jobs, store_image
from db.session import get_engine, get_session_factory

TABLES = {"tenants", "api_keys", "images", "batches", "jobs", "alembic_version"}


def test_postgres_database_is_migrated(database_url):
    assert TABLES <= set(inspect(get_engine(database_url)).get_table_names())


def test_postgres_stores_image_bytes_uncompressed(database_url):
    """Images are JPEG or PNG, compressed already: Postgres must not spend pglz on them (migration 0005). Bytes
    that pglz would shrink a hundredfold are stored at full size, out of line."""
    data = b"\x00" * 100_000
    image = ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=1, height=1)
    with get_session_factory(database_url).begin() as session:
        tenant = get_or_create_tenant(session, name=f"storage-{uuid.uuid4().hex[:8]}")
        store_image(session, tenant_id=tenant.id, image=image)
        compression, stored_size = session.execute(text(
            "SELECT pg_column_compression(data), pg_column_size(data) FROM images WHERE tenant_id = :tenant"),
            {"tenant": tenant.id}).one()
    assert compression is None
    assert stored_size >= len(data)


def test_sqlite_migrates_down_and_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    downgrade(url)
    assert set(inspect(get_engine(url)).get_table_names()) == {"alembic_version"}
    upgrade(url)
    assert TABLES <= set(inspect(get_engine(url)).get_table_names())


def test_sqlite_claims_from_many_threads_are_disjoint(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    factory = get_session_factory(url)
    data = b"image"
    image = ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=1, height=1)
    with factory.begin() as session:
        tenant = get_or_create_tenant(session, name="t")
        create_api_key(session, tenant_id=tenant.id)
        store_image(session, tenant_id=tenant.id, image=image)
        insert_jobs(session, tenant_id=tenant.id, max_attempts=3,
                    jobs=[NewJob(task="vqa", queue="q", params={"question": "?"}, image_sha256=image.sha256)] * 40)
    claimed: list = []

    def claim_all(worker: str) -> None:
        while True:
            with factory.begin() as session:
                claim = claim_batch(session, queue="q", worker_id=worker, limit=3, lease_seconds=30)
            if not claim.jobs:
                return
            claimed.extend(job.id for job in claim.jobs)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(claimed) == 40 and len(set(claimed)) == 40
