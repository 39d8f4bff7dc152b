"""/v1/batches in the OpenAI Batch API shape: a JSONL file of chat requests run as one LensQ batch, answered as files."""
from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from db.models import JobStatus, OpenAIBatch
from db.openai_batches import get_openai_batch, insert_openai_batch, list_openai_batches, mark_cancelling
from db.openai_files import get_file
from db.queries import batch_jobs, cancel_job
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, CurrentTenant, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from services.errors import InputError, found
from services.openai_batch_intake import CHAT_URL, BatchIntake, read_batch_input
from services.openai_batch_results import describe_batch, finalize_if_done
from services.openai_shapes import BATCH_PREFIX, FILE_PREFIX, list_object, parse_public_id
from services.rate_limits import check_job_quota
from services.request_bodies import remember_json_body
from services.routes import batches as lensq_batches
from services.routes.jobs import IdempotencyKey
from services.schemas import error_response, example_response
from services.submission import submit_batch

router = APIRouter(prefix="/v1/batches", tags=["openai"], responses=ACCESS_ERRORS)

COMPLETION_WINDOWS = ("24h",)
MAX_METADATA_KEYS = 16
NOT_FOUND = {404: error_response("No such batch for this tenant", "batch_id", "no batch with this id")}
BATCH_EXAMPLE = {
    "id": "batch_6f1b7a522f4b4bb29d8a0d6b1f3c9e11", "object": "batch", "endpoint": CHAT_URL, "errors": None,
    "input_file_id": "file-3b241101e2bb42558caf4136c566a962", "completion_window": "24h", "status": "completed",
    "output_file_id": "file-9d2a...", "error_file_id": None, "created_at": 1767268800,
    "request_counts": {"total": 2, "completed": 2, "failed": 0}, "metadata": None,
}


def _batch_row_id(batch_id_suffix: str) -> uuid.UUID:
    """The row id inside batch_<hex>: the path names the suffix, so these routes never shadow /v1/batches/{uuid}."""
    return parse_public_id(BATCH_PREFIX, BATCH_PREFIX + batch_id_suffix, "batch_id")


def _check_create_fields(body: dict[str, Any]) -> tuple[str, str, dict | None]:
    if body.get("endpoint") != CHAT_URL:
        raise InputError("endpoint", f"endpoint must be {CHAT_URL} (the one LensQ serves)", 400)
    window = body.get("completion_window", "24h")
    if window not in COMPLETION_WINDOWS:
        raise InputError("completion_window", f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}", 400)
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items())):
        raise InputError("metadata", f"metadata must map up to {MAX_METADATA_KEYS} keys (64 chars) to strings "
                         "(512 chars)", 400)
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str):
        raise InputError("input_file_id", "input_file_id must be the id of a file uploaded with purpose batch", 400)
    return input_file_id, window, metadata


def _input_data(session: Session, tenant_id: uuid.UUID, input_file_id: str) -> tuple[uuid.UUID, bytes]:
    file_id = parse_public_id(FILE_PREFIX, input_file_id, "input_file_id")
    row = found(get_file(session, tenant_id=tenant_id, file_id=file_id, with_data=True), "input_file_id")
    if row.purpose != "batch":
        raise InputError("input_file_id", f"the file's purpose is {row.purpose!r}; upload it with purpose batch", 400)
    session.rollback()  # the read is done; checking the lines may take a while
    return row.id, row.data


def _store(session: Session, tenant: CurrentTenant, settings: ServiceSettings, intake: BatchIntake,
           fields: dict[str, Any]) -> uuid.UUID:
    """The valid lines as one LensQ batch and the OpenAI batch over it, in one transaction (none valid: no jobs)."""
    if not intake.jobs:
        row = insert_openai_batch(session, tenant_id=tenant.id, batch_id=None, intake_errors=intake.errors, **fields)
        session.commit()
        return row.id
    check_job_quota(session, tenant_id=tenant.id, limit=tenant.max_active_jobs, new_jobs=len(intake.jobs))
    created: list[OpenAIBatch] = []
    submit_batch(session, tenant_id=tenant.id, items=intake.jobs, settings=settings, idempotency_key=None,
                 with_batch=lambda s, batch: created.append(insert_openai_batch(
                     s, tenant_id=tenant.id, batch_id=batch.id, intake_errors=intake.errors, **fields)))
    return created[0].id


def _current(session: Session, tenant_id: uuid.UUID, row_id: uuid.UUID) -> dict[str, Any]:
    """The batch after writing its files if every job is now final."""
    found(finalize_if_done(session, tenant_id=tenant_id, openai_batch_id=row_id), "batch_id")
    return describe_batch(session, get_openai_batch(session, tenant_id=tenant_id, openai_batch_id=row_id))


async def _create_openai_batch(body: dict[str, Any], tenant: CurrentTenant, session: Session,
                               settings: ServiceSettings) -> dict[str, Any]:
    input_file_id, window, metadata = _check_create_fields(body)
    file_id, data = await run_in_threadpool(_input_data, session, tenant.id, input_file_id)
    intake = await run_in_threadpool(read_batch_input, data, settings)
    fields = {"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": window, "metadata": metadata}
    row_id = await run_in_threadpool(_store, session, tenant, settings, intake, fields)
    return await run_in_threadpool(_current, session, tenant.id, row_id)


async def _openai_body(request: Request) -> dict[str, Any] | None:
    """The JSON body if it is an OpenAI batch request (it names an input file), else None."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return None
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        return None  # LensQ's own route parses it again and says what is wrong
    remember_json_body(request, body)
    return body if isinstance(body, dict) and "input_file_id" in body else None


@router.post("", include_in_schema=False)
async def create_batch(request: Request, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep,
                       idempotency_key: IdempotencyKey = None) -> Any:
    """POST /v1/batches serves both shapes: a body naming input_file_id is an OpenAI batch, any other body the
    LensQ batch documented under the batches tag (one path, as OpenAI clients and LensQ clients both expect it)."""
    body = await _openai_body(request)
    if body is None:
        return await lensq_batches.create_batch(request=request, tenant=tenant, session=session, settings=settings,
                                                idempotency_key=idempotency_key)
    return await _create_openai_batch(body, tenant, session, settings)


@router.get("", responses={200: example_response("A page of batches", list_object([BATCH_EXAMPLE], False)),
                           404: error_response("`after` names no batch of this tenant", "after", "no after with this id")})
def list_batches(tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
                 limit: Annotated[int | None, Query(ge=1)] = None,
                 after: Annotated[str | None, Query(max_length=100, description="the last id of the previous page")]
                 = None) -> dict:
    """The tenant's OpenAI batches, newest first."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    cursor = None
    if after is not None:
        previous = found(get_openai_batch(session, tenant_id=tenant.id,
                                          openai_batch_id=parse_public_id(BATCH_PREFIX, after, "after")), "after")
        cursor = (previous.created_at, previous.id)
    rows = list_openai_batches(session, tenant_id=tenant.id, limit=limit + 1, after=cursor)
    data = [_current(session, tenant.id, row.id) for row in rows[:limit]]
    return list_object(data, has_more=len(rows) > limit)


@router.get("/batch_{batch_id}", responses={200: example_response("The batch", BATCH_EXAMPLE), **NOT_FOUND})
def get_batch(batch_id: str, tenant: ReadTenant, session: SessionDep) -> dict:
    """An OpenAI batch: its status and request counts; output_file_id and error_file_id once it is done."""
    return _current(session, tenant.id, _batch_row_id(batch_id))


@router.post("/batch_{batch_id}/cancel", responses={
    200: example_response("Cancelling (or already done)", {**BATCH_EXAMPLE, "status": "cancelling"}), **NOT_FOUND})
def cancel_batch(batch_id: str, tenant: SubmitTenant, session: SessionDep) -> dict:
    """Cancel the batch's queued requests; running ones finish. Done when every job is final (then cancelled)."""
    row_id = _batch_row_id(batch_id)
    row = found(get_openai_batch(session, tenant_id=tenant.id, openai_batch_id=row_id, for_update=True), "batch_id")
    if row.finalized_at is None and row.batch_id is not None:
        mark_cancelling(session, row=row)
        queued = [job.id for job in batch_jobs(session, batch_id=row.batch_id) if job.status == JobStatus.queued.value]
        for job_id in queued:
            cancel_job(session, tenant_id=tenant.id, job_id=job_id)
    session.commit()
    return _current(session, tenant.id, row_id)
