"""An OpenAI batch's status and counts from its LensQ batch's jobs, and its output and error files once all are final."""
from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.orm import Session

from db.models import Job, OpenAIBatch
from db.openai_batches import get_openai_batch, mark_finalized
from db.openai_files import insert_file
from db.queries import batch_counts, batch_jobs
from services.openai_shapes import BATCH_PREFIX, BATCH_REQUEST_PREFIX, batch_object, chat_completion, public_id

OUTPUT_PURPOSE = "batch_output"
# The HTTP status a chat request would have got for a job that failed this way (see routes/openai_chat.py).
FAILED_JOB_STATUS = {"input": 422}
MAX_ERRORS_SHOWN = 100


def _job_counts(row: OpenAIBatch, session: Session) -> dict[str, int]:
    return batch_counts(session, batch_id=row.batch_id) if row.batch_id else {}


def _all_final(counts: dict[str, int]) -> bool:
    return counts.get("queued", 0) + counts.get("running", 0) == 0


def batch_status(row: OpenAIBatch, counts: dict[str, int]) -> str:
    """validating never shows: the input is checked before the create call answers."""
    if row.batch_id is None:
        return "failed"  # no line was valid
    if row.finalized_at is not None:
        return "cancelled" if row.cancelled_at else "completed"
    if row.cancelled_at is not None:
        return "cancelling"
    return "finalizing" if _all_final(counts) else "in_progress"


def request_counts(row: OpenAIBatch, counts: dict[str, int]) -> dict[str, int]:
    """total: every request line; failed: refused lines and failed jobs (cancelled ones are neither done nor failed)."""
    refused = len(row.intake_errors or [])
    return {"total": sum(counts.values()) + refused, "completed": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0) + refused}


def describe_batch(session: Session, row: OpenAIBatch) -> dict[str, Any]:
    """The batch object as clients see it now."""
    counts = _job_counts(row, session)
    status = batch_status(row, counts)
    errors = None
    if status == "failed":
        errors = [{"code": e["code"], "line": e["line"], "message": e["message"], "param": e["param"]}
                  for e in (row.intake_errors or [])[:MAX_ERRORS_SHOWN]]
    completed_at = row.finalized_at if status == "completed" else None
    return batch_object(row, status=status, counts=request_counts(row, counts), completed_at=completed_at,
                        errors=errors)


def _job_line(job: Job) -> tuple[bool, dict[str, Any]]:
    """(is it output, the line) for one job of the batch."""
    line = {"id": public_id(BATCH_REQUEST_PREFIX, job.id), "custom_id": job.ref}
    if job.status == "succeeded":
        body = chat_completion(job)
        return True, {**line, "response": {"status_code": 200, "request_id": str(job.id), "body": body}, "error": None}
    if job.status == "failed":
        status = FAILED_JOB_STATUS.get(job.error_code or "", 502)
        body = {"error": {"field": "job_id", "message": f"job {job.id} failed ({job.error_code}): {job.error}"}}
        return False, {**line, "response": {"status_code": status, "request_id": str(job.id), "body": body},
                       "error": None}
    return False, {**line, "response": None,
                   "error": {"code": "batch_cancelled", "message": f"job {job.id} was {job.status} before it ran"}}


def _intake_line(record: dict[str, Any], row: OpenAIBatch) -> dict[str, Any]:
    return {"id": f"{BATCH_REQUEST_PREFIX}{row.id.hex}_line{record['line']}", "custom_id": record["custom_id"],
            "response": None, "error": {"code": record["code"], "message": record["message"], "param": record["param"],
                                        "line": record["line"]}}


def _write_jsonl(session: Session, row: OpenAIBatch, lines: list[dict[str, Any]], kind: str) -> uuid.UUID | None:
    if not lines:
        return None
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    name = f"{public_id(BATCH_PREFIX, row.id)}_{kind}.jsonl"
    return insert_file(session, tenant_id=row.tenant_id, purpose=OUTPUT_PURPOSE, filename=name, data=data).id


def finalize_if_done(session: Session, *, tenant_id: uuid.UUID, openai_batch_id: uuid.UUID) -> OpenAIBatch | None:
    """Writes the output and error files once every job is final (once: the row is locked and re-read); commits."""
    row = get_openai_batch(session, tenant_id=tenant_id, openai_batch_id=openai_batch_id, for_update=True)
    if row is None or row.finalized_at is not None or not _all_final(_job_counts(row, session)):
        session.rollback()  # releases the lock; nothing to write yet
        return row
    output, errors = [], [_intake_line(record, row) for record in row.intake_errors or []]
    for job in batch_jobs(session, batch_id=row.batch_id) if row.batch_id else []:
        is_output, line = _job_line(job)
        (output if is_output else errors).append(line)
    mark_finalized(session, row=row, output_file_id=_write_jsonl(session, row, output, "output"),
                   error_file_id=_write_jsonl(session, row, errors, "error"))
    session.commit()
    return row
