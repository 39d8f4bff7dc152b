"""/v1/batches: submit many jobs at once (JSON or a JSONL upload), follow their counts, read results as JSONL."""
from __future__ import annotations

import json
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from db.queries import batch_counts, batch_jobs, get_batch
from services.config import ServiceSettings
from services.deps import (
    ACCESS_ERRORS,
    CurrentTenant,
    IntakeSubmitTenant,
    ReadTenant,
    SessionDep,
    SettingsDep,
    confirm_live_key,
)
from services.errors import found
from services.input_checks import CheckedJob, check_job
from services.request_bodies import RawJob, read_batch_request
from services.routes.jobs import IdempotencyKey
from services.schemas import (
    BATCH_CREATE_EXAMPLE,
    BATCH_EXAMPLE,
    RESULT_LINE_EXAMPLE,
    BatchCreate,
    BatchPublic,
    error_response,
    example_response,
    inline_schema,
)
from services.submission import check_idempotency_key, submit_batch
from services.webhooks import check_callback_url

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ACCESS_ERRORS)

NOT_FOUND = {404: error_response("No such batch for this tenant", "batch_id", "no batch with this id")}
JSONL_FORM_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL: one item object per line"},
        "task": {"type": "string", "enum": ["caption", "vqa", "sentiment", "classify"]},
        "priority": {"type": "integer"},
        "callback_url": {"type": "string", "description": "where to POST the batch.completed event"},
    },
}
CREATE_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(BatchCreate),
                                 "example": BATCH_CREATE_EXAMPLE},
            "multipart/form-data": {"schema": JSONL_FORM_SCHEMA,
                                    "example": {"task": "caption", "file": "(items.jsonl)"}},
        },
    }
}


def _check_items(raw_items: list[RawJob], settings: ServiceSettings) -> list[CheckedJob]:
    return [check_job(raw.fields, raw.image_bytes, settings, f"items[{i}].") for i, raw in enumerate(raw_items)]


def _check_and_store_batch(session: Session, tenant: CurrentTenant, raw_items: list[RawJob], settings: ServiceSettings,
                           key: str | None, callback_url: str | None) -> tuple[dict, int]:
    """Checks every item, stores the batch within the tenant's quota (a retry of a stored Idempotency-Key gets its
    replay), and returns the answer's body and status: 202 for a new batch, 200 for a replay."""
    checked = _check_items(raw_items, settings)
    current = confirm_live_key(session, tenant, settings)
    submitted = submit_batch(session, tenant_id=current.id, items=checked, settings=settings, idempotency_key=key,
                             callback_url=callback_url, quota_limit=current.max_active_jobs)
    counts = batch_counts(session, batch_id=submitted.batch.id)
    return BatchPublic.from_row(submitted.batch, counts).model_dump(mode="json"), 202 if submitted.created else 200


@router.post(
    "",
    status_code=202,
    response_model=BatchPublic,
    openapi_extra=CREATE_BATCH_BODY,
    responses={
        202: example_response("Queued", {**BATCH_EXAMPLE, "counts": {**BATCH_EXAMPLE["counts"], "queued": 3,
                                                                      "succeeded": 0}, "done": 0, "progress": 0.0}),
        200: example_response("Replay of an earlier request with the same Idempotency-Key", BATCH_EXAMPLE),
        409: error_response("Idempotency-Key reused with another body", "Idempotency-Key",
                            "this key was already used with a different request body"),
        413: error_response("Too many items", "items", "1500 items, over the limit of 1000 per batch"),
        415: error_response("Unsupported Content-Type", "body", "unsupported Content-Type 'text/plain'"),
        422: error_response("An item is invalid", "items[3].labels", "labels has 1 items; give 2 to 50"),
        429: {**ACCESS_ERRORS[429], "description": "Too many requests from this key this minute (Authorization), "
                                                   "or the batch would pass the tenant's quota of active jobs (jobs)"},
    },
)
async def create_batch(request: Request, tenant: IntakeSubmitTenant, session: SessionDep, settings: SettingsDep,
                       idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Submit many jobs in one request; every item is checked first, and none is stored if one is bad."""
    key = check_idempotency_key(idempotency_key, settings)
    raw = await read_batch_request(request, settings)
    callback_url = check_callback_url(raw.callback_url, settings)
    # One trip to a thread for the checks, the quota and the ledger.
    body, status = await run_in_threadpool(_check_and_store_batch, session, tenant, raw.items, settings, key,
                                           callback_url)
    return JSONResponse(body, status_code=status)


@router.get("/{batch_id}", response_model=BatchPublic,
            responses={200: example_response("The batch", BATCH_EXAMPLE), **NOT_FOUND})
def get_batch_route(batch_id: uuid.UUID, tenant: ReadTenant, session: SessionDep) -> BatchPublic:
    """A batch's counts per status and its progress."""
    batch = found(get_batch(session, tenant_id=tenant.id, batch_id=batch_id), "batch_id")
    return BatchPublic.from_row(batch, batch_counts(session, batch_id=batch.id))


def result_line(job) -> str:
    """One JSONL line of a batch's results."""
    return json.dumps({
        "index": job.batch_index, "job_id": str(job.id), "ref": job.ref, "task": job.task, "status": job.status,
        "result": job.result, "error": job.error,
    })


@router.get(
    "/{batch_id}/results",
    response_class=Response,
    responses={200: example_response("One line per item, in submission order", RESULT_LINE_EXAMPLE,
                                     "application/x-ndjson"), **NOT_FOUND},
)
def batch_results(batch_id: uuid.UUID, tenant: ReadTenant, session: SessionDep) -> Response:
    """The batch's jobs as JSONL, one line per item in submission order (unfinished ones show their status)."""
    batch = found(get_batch(session, tenant_id=tenant.id, batch_id=batch_id), "batch_id")
    lines = [result_line(job) for job in batch_jobs(session, batch_id=batch.id)]
    return Response("".join(line + "\n" for line in lines), media_type="application/x-ndjson")
