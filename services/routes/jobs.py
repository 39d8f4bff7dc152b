"""/v1/jobs: submit one job, read it, list jobs with a cursor, cancel."""
from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from db.queries import cancel_job, get_job, is_final, list_jobs
from db.structured_logs import bind_log_context
from services.deps import (
    ACCESS_ERRORS,
    IntakeSubmitTenant,
    ReadTenant,
    SessionDep,
    SettingsDep,
    SubmitTenant,
)
from services.errors import InputError, found
from services.input_checks import check_job
from services.request_bodies import read_job
from services.schemas import (
    JOB_CREATE_EXAMPLES,
    JOB_EXAMPLE,
    QUEUED_JOB_EXAMPLE,
    ErrorCodeName,
    JobCreate,
    JobCreateForm,
    JobPublic,
    JobsPublic,
    StatusName,
    TaskName,
    error_response,
    example_response,
)
from services.submission import SingleJob, SingleJobIntake, check_idempotency_key
from services.webhooks import check_callback_url

log = logging.getLogger("services.submission")  # the line submit_job logs, under the same logger
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ACCESS_ERRORS)

NOT_FOUND = {404: error_response("No such job for this tenant", "job_id", "no job with this id")}
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description="Retry-safe submission key.")]

CREATE_JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema(), "examples": JOB_CREATE_EXAMPLES},
            "multipart/form-data": {
                "schema": JobCreateForm.model_json_schema(),
                "example": {"task": "vqa", "image": "(binary PNG/JPEG file)", "question": "what color is it?"},
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    openapi_extra=CREATE_JOB_BODY,
    responses={
        202: example_response("Queued", QUEUED_JOB_EXAMPLE),
        200: example_response("Replay of an earlier request with the same Idempotency-Key", QUEUED_JOB_EXAMPLE),
        409: error_response("Idempotency-Key reused with another body", "Idempotency-Key",
                            "this key was already used with a different request body"),
        413: error_response("Too large", "image", "image is 20000000 bytes, over the limit of 10485760"),
        415: error_response("Unsupported format", "image", "SVG is not supported; send one of JPEG, PNG, ..."),
        422: error_response("A field is invalid", "question", "question must not be empty"),
        429: {**ACCESS_ERRORS[429], "description": "Too many requests from this key this minute (Authorization), "
                                                   "or the tenant's quota of queued and running jobs is full (jobs)"},
    },
)
async def create_job(request: Request, tenant: IntakeSubmitTenant, settings: SettingsDep,
                     idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Submit a job: JSON with a base64 data: URL image, or multipart with the image as a file part."""
    key = check_idempotency_key(idempotency_key, settings)
    raw = await read_job(request, settings, allow_image_urls=tenant.allow_image_urls)
    callback_url = check_callback_url(raw.fields.get("callback_url"), settings)
    checked = await run_in_threadpool(check_job, raw.fields, raw.image_bytes, settings)
    intake: SingleJobIntake = request.app.state.single_job_intake
    # Stored with the jobs that arrive with it; with a key, a retry of a stored key gets its replay (200).
    stored = await intake.submit(SingleJob(tenant=tenant, checked=checked, callback_url=callback_url,
                                           idempotency_key=key))
    bind_log_context(tenant_id=tenant.id, job_id=stored.job_id)
    if stored.created:
        log.info("queued %s job", stored.task)
    return JSONResponse(stored.body, status_code=202 if stored.created else 200)


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    """An opaque cursor pointing just after this job in newest-first order."""
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), str(job_id)]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) inside a cursor; a 422 naming `cursor` if it is not one of ours."""
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        created_at, job_id = datetime.fromisoformat(created_at), uuid.UUID(job_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InputError("cursor", "not a cursor returned by this API") from None
    if created_at.tzinfo is None:  # ours always carry a zone; the ledger refuses naive times
        raise InputError("cursor", "not a cursor returned by this API")
    return created_at, job_id


@router.get(
    "",
    response_model=JobsPublic,
    responses={200: example_response("A page of jobs", {"data": [JOB_EXAMPLE], "next_cursor": "WyIyMDI2LTAxLTAx..."})},
)
def list_jobs_route(
    tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    status: Annotated[StatusName | None, Query(examples=["succeeded"])] = None,
    task: Annotated[TaskName | None, Query(examples=["vqa"])] = None,
    batch_id: Annotated[uuid.UUID | None, Query()] = None,
    error_code: Annotated[ErrorCodeName | None, Query(examples=["dead"], description="why failed jobs failed")] = None,
    limit: Annotated[int | None, Query(ge=1, examples=[50])] = None,
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page")] = None,
) -> JobsPublic:
    """The tenant's jobs, newest first, filtered by status, task, batch or error code; follow next_cursor for more."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    after = decode_cursor(cursor) if cursor else None
    jobs = list_jobs(session, tenant_id=tenant.id, limit=limit + 1, status=status, task=task, batch_id=batch_id,
                     error_code=error_code, after=after)
    page, more = jobs[:limit], len(jobs) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return JobsPublic(data=[JobPublic.from_row(job) for job in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic,
            responses={200: example_response("The job", JOB_EXAMPLE), **NOT_FOUND})
def get_job_route(job_id: uuid.UUID, tenant: ReadTenant, session: SessionDep) -> JobPublic:
    """One job with its status and, once it finished, its result or error."""
    job = found(get_job(session, tenant_id=tenant.id, job_id=job_id), "job_id")
    return JobPublic.from_row(job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={
        200: example_response("Cancelled", {**QUEUED_JOB_EXAMPLE, "status": "cancelled"}),
        409: error_response("Already finished", "status", "job already succeeded"),
        **NOT_FOUND,
    },
)
def cancel_job_route(job_id: uuid.UUID, tenant: SubmitTenant, session: SessionDep) -> JobPublic:
    """Cancel a queued or running job (a running job's result is discarded when it arrives)."""
    job = found(get_job(session, tenant_id=tenant.id, job_id=job_id), "job_id")
    if is_final(job.status):
        raise InputError("status", f"job already {job.status}", 409)
    job = cancel_job(session, tenant_id=tenant.id, job_id=job_id)
    session.commit()
    if job.status != "cancelled":
        raise InputError("status", f"job already {job.status}", 409)
    return JobPublic.from_row(job)
