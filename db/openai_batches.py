"""Queries of OpenAI batches (an input file run as one LensQ batch): keyword-only; callers own the transaction."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import OpenAIBatch, utcnow
from db.pages import newest_first
from db.session import is_postgres


def insert_openai_batch(
    session: Session, *, tenant_id: uuid.UUID, batch_id: uuid.UUID | None, input_file_id: uuid.UUID, endpoint: str,
    completion_window: str, metadata: dict[str, Any] | None, intake_errors: list[dict[str, Any]],
) -> OpenAIBatch:
    """A new OpenAI batch over the LensQ batch `batch_id` (None: no line was valid)."""
    row = OpenAIBatch(tenant_id=tenant_id, batch_id=batch_id, input_file_id=input_file_id, endpoint=endpoint,
                      completion_window=completion_window, batch_metadata=metadata, intake_errors=intake_errors,
                      created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def get_openai_batch(session: Session, *, tenant_id: uuid.UUID, openai_batch_id: uuid.UUID,
                     for_update: bool = False) -> OpenAIBatch | None:
    """The tenant's OpenAI batch, or None; `for_update` locks its row until the transaction ends (Postgres)."""
    stmt = select(OpenAIBatch).where(OpenAIBatch.id == openai_batch_id, OpenAIBatch.tenant_id == tenant_id)
    if for_update and is_postgres(session):
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def list_openai_batches(session: Session, *, tenant_id: uuid.UUID, limit: int,
                        after: tuple[datetime, uuid.UUID] | None = None) -> list[OpenAIBatch]:
    """The tenant's OpenAI batches, newest first, after the (created_at, id) cursor."""
    stmt = select(OpenAIBatch).where(OpenAIBatch.tenant_id == tenant_id)
    return list(session.scalars(newest_first(stmt, OpenAIBatch, after).limit(limit)))


def mark_cancelling(session: Session, *, row: OpenAIBatch) -> None:
    """Records the cancellation request (its first time is kept)."""
    if row.cancelled_at is None:
        row.cancelled_at = utcnow()
        session.flush()


def mark_finalized(session: Session, *, row: OpenAIBatch, output_file_id: uuid.UUID | None,
                   error_file_id: uuid.UUID | None) -> None:
    """Links the written output and error files; the batch is then completed, cancelled or failed for good."""
    row.output_file_id, row.error_file_id, row.finalized_at = output_file_id, error_file_id, utcnow()
    session.flush()
