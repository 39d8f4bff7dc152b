"""Queries of stored files (the OpenAI Files surface): keyword-only, tenant-scoped; callers own the transaction."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session, defer

from db.models import OpenAIBatch, StoredFile, utcnow


def insert_file(session: Session, *, tenant_id: uuid.UUID, purpose: str, filename: str, data: bytes) -> StoredFile:
    """A new stored file."""
    row = StoredFile(tenant_id=tenant_id, purpose=purpose, filename=filename, data=data, size_bytes=len(data),
                     created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, *, tenant_id: uuid.UUID, file_id: uuid.UUID, with_data: bool = False) -> StoredFile | None:
    """The tenant's file (its bytes only when asked for), or None: another tenant's file is None too."""
    stmt = select(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
    return session.scalar(stmt if with_data else stmt.options(defer(StoredFile.data)))


def list_files(session: Session, *, tenant_id: uuid.UUID, limit: int, purpose: str | None = None,
               newest_first: bool = True, after: tuple[datetime, uuid.UUID] | None = None) -> list[StoredFile]:
    """The tenant's files without their bytes, newest (or oldest) first, after the (created_at, id) cursor."""
    stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id).options(defer(StoredFile.data))
    if purpose is not None:
        stmt = stmt.where(StoredFile.purpose == purpose)
    key = tuple_(StoredFile.created_at, StoredFile.id)
    if after is not None:
        stmt = stmt.where(key < tuple_(*after) if newest_first else key > tuple_(*after))
    order = (StoredFile.created_at.desc(), StoredFile.id.desc()) if newest_first else (StoredFile.created_at,
                                                                                          StoredFile.id)
    return list(session.scalars(stmt.order_by(*order).limit(limit)))


def batch_reading_file(session: Session, *, tenant_id: uuid.UUID, file_id: uuid.UUID) -> uuid.UUID | None:
    """The id of a batch whose input is this file, if any (deleting it would delete the batch)."""
    stmt = select(OpenAIBatch.id).where(OpenAIBatch.tenant_id == tenant_id, OpenAIBatch.input_file_id == file_id)
    return session.scalar(stmt.limit(1))


def delete_file(session: Session, *, tenant_id: uuid.UUID, file_id: uuid.UUID) -> bool:
    """Deletes the tenant's file (a batch's output or error file link is cleared); whether there was one."""
    stmt = delete(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
    return session.execute(stmt).rowcount > 0

