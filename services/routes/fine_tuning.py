"""/v1/fine_tuning/jobs in the OpenAI fine-tuning shape: create (data checked first), list, read, cancel, events."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from db.fine_tuning_jobs import (
    FINAL_FINE_TUNE_STATUSES,
    get_fine_tuning_job,
    list_events,
    list_fine_tuning_jobs,
    request_cancel,
)
from db.models import FineTuningEvent, FineTuningJob
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from services.errors import InputError, found
from services.fine_tune_intake import FTJOB_PREFIX, store_fine_tuning_job
from services.fine_tune_request import check_request, openai_hyperparameters
from services.openai_shapes import FILE_PREFIX, list_object, parse_public_id, public_id, unix_time
from services.schemas import error_response, example_response
from services.ui.events import sse_message
from workers.celery_app import ring

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["openai"], responses=ACCESS_ERRORS)

FTEVENT_PREFIX = "ftevent-"
NOT_FOUND = {404: error_response("No such fine-tuning job for this tenant", "fine_tuning_job_id",
                                 "no fine_tuning_job with this id")}
JOB_EXAMPLE = {
    "id": "ftjob-6f1b7a522f4b4bb29d8a0d6b1f3c9e11", "object": "fine_tuning.job", "model": "lensq-tiny",
    "created_at": 1767268800, "finished_at": None, "fine_tuned_model": None, "organization_id": "acme",
    "result_files": [], "status": "queued", "validation_file": None,
    "training_file": "file-3b241101e2bb42558caf4136c566a962",
    "hyperparameters": {"max_steps": 200, "batch_size": 16, "learning_rate": 0.001, "n_epochs": 64.0,
                        "learning_rate_multiplier": 1.0, "method": "auto", "seed": 0},
    "trained_tokens": None, "error": None, "seed": 0, "estimated_finish": None, "metadata": None,
    "task": "sentiment", "trained_steps": 0,
    "data_report": {"splits": {"train": 50, "validation": 9, "test": 13}, "warnings": []},
}
EVENT_EXAMPLE = {"id": "ftevent-42", "object": "fine_tuning.job.event", "created_at": 1767268830, "level": "info",
                 "message": "Step 20/200: training loss=0.812, validation metric=0.41", "type": "metrics",
                 "data": {"step": 20, "max_steps": 200, "loss": 0.812, "validation_metric": 0.41}}
CREATE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["model", "training_file", "task"],
    "properties": {
        "model": {"type": "string"}, "training_file": {"type": "string"}, "validation_file": {"type": "string"},
        "task": {"type": "string", "enum": ["sentiment", "vqa", "caption", "classify"]},
        "labels": {"type": "array", "items": {"type": "string"}}, "suffix": {"type": "string"},
        "seed": {"type": "integer"}, "hyperparameters": {"type": "object"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "example": {"model": "lensq-tiny", "training_file": JOB_EXAMPLE["training_file"], "task": "sentiment",
                "suffix": "posts", "hyperparameters": {"max_steps": 100}}}}}}


def job_object(row: FineTuningJob, organization: str) -> dict[str, Any]:
    """A fine-tuning job in OpenAI's `fine_tuning.job` shape, with LensQ's task, data report and steps."""
    train_examples = ((row.data_report or {}).get("splits") or {}).get("train", 0)
    hyperparameters = openai_hyperparameters(row.hyperparameters or {}, train_examples)
    return {
        "id": public_id(FTJOB_PREFIX, row.id), "object": "fine_tuning.job", "model": row.base_model,
        "created_at": unix_time(row.created_at), "finished_at": unix_time(row.finished_at),
        "fine_tuned_model": row.fine_tuned_model, "organization_id": organization, "result_files": [],
        "status": row.status, "training_file": public_id(FILE_PREFIX, row.training_file_id),
        "validation_file": public_id(FILE_PREFIX, row.validation_file_id) if row.validation_file_id else None,
        "hyperparameters": hyperparameters, "trained_tokens": None, "error": row.error,
        "seed": hyperparameters.get("seed", 0), "estimated_finish": None, "metadata": row.job_metadata,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "task": row.task, "data_report": row.data_report, "trained_steps": row.trained_steps,
        "user_provided_suffix": row.suffix,
    }


def event_object(row: FineTuningEvent) -> dict[str, Any]:
    """An event in OpenAI's `fine_tuning.job.event` shape: progress lines (they carry a step) are metrics."""
    return {"id": f"{FTEVENT_PREFIX}{row.id}", "object": "fine_tuning.job.event",
            "created_at": unix_time(row.created_at), "level": row.level, "message": row.message, "data": row.data,
            "type": "metrics" if isinstance(row.data, dict) and "step" in row.data else "message"}


def _tenant_job(session: Session, tenant_id: uuid.UUID, fine_tuning_job_id: str) -> FineTuningJob:
    job_id = parse_public_id(FTJOB_PREFIX, fine_tuning_job_id, "fine_tuning_job_id")
    return found(get_fine_tuning_job(session, tenant_id=tenant_id, job_id=job_id), "fine_tuning_job_id")


def _ring_safely(queue: str) -> None:
    """Rings the train queue; if the broker is down the job stays queued for the sweeper to re-ring."""
    try:
        ring(queue, reason="fine-tune")
    except Exception as exc:  # the job is committed either way
        log.warning("could not ring %s (%s); the sweeper will re-ring", queue, exc)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise InputError("body", f"the body must be JSON: {exc}", 400) from None


@router.post("", openapi_extra=CREATE_BODY, responses={
    200: example_response("The queued job, its data checked and stored in splits", JOB_EXAMPLE),
    400: error_response("A field or the data failed its checks", "training_file",
                        "2 line(s) failed the checks: line 3 (label): unknown label 'happy'; one of negative, "
                        "neutral, positive; line 9 (image): not an image"),
    404: error_response("A file id names no file of this tenant", "training_file", "no training_file with this id")})
async def create_fine_tuning_job(request: Request, tenant: SubmitTenant, session: SessionDep,
                                 settings: SettingsDep) -> dict:
    """Fine-tune a base model on a JSONL file (purpose fine-tune): the data is checked at once (errors: 400 naming
    the file and its bad lines; warnings: in `data_report` and as `warn` events), then the job queues for training."""
    checked = check_request(await _json_body(request), settings)
    row = await run_in_threadpool(store_fine_tuning_job, session, tenant, settings, checked)
    await run_in_threadpool(_ring_safely, row.queue)
    return job_object(row, tenant.name)


def _job_cursor(session: Session, tenant_id: uuid.UUID, after: str | None):
    if after is None:
        return None
    row = found(get_fine_tuning_job(session, tenant_id=tenant_id,
                                    job_id=parse_public_id(FTJOB_PREFIX, after, "after")), "after")
    return row.created_at, row.id


def _metadata_filter(request: Request) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query filters."""
    return {name[len("metadata["):-1]: value for name, value in request.query_params.items()
            if name.startswith("metadata[") and name.endswith("]")}


@router.get("", responses={200: example_response("A page of jobs, newest first",
                                                 list_object([JOB_EXAMPLE], False)),
                           404: error_response("`after` names no job of this tenant", "after", "no after with this id")})
def list_fine_tuning_jobs_route(
    request: Request, tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    after: Annotated[str | None, Query(max_length=100, description="the last id of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> dict:
    """The tenant's fine-tuning jobs, newest first (`metadata[key]=value` filters by tag)."""
    limit = min(limit or 20, settings.max_page_size)
    rows = list_fine_tuning_jobs(session, tenant_id=tenant.id, limit=limit + 1,
                                 after=_job_cursor(session, tenant.id, after), metadata=_metadata_filter(request))
    return list_object([job_object(row, tenant.name) for row in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{fine_tuning_job_id}", responses={200: example_response("The job", JOB_EXAMPLE), **NOT_FOUND})
def get_fine_tuning_job_route(fine_tuning_job_id: str, tenant: ReadTenant, session: SessionDep) -> dict:
    """One fine-tuning job: status, data report, steps trained, and its model's name once it succeeded."""
    return job_object(_tenant_job(session, tenant.id, fine_tuning_job_id), tenant.name)


@router.post("/{fine_tuning_job_id}/cancel", responses={
    200: example_response("Cancelled (queued), or cancelling (running: the worker stops at its next step)",
                          {**JOB_EXAMPLE, "status": "cancelled"}),
    409: error_response("Already final", "fine_tuning_job_id", "fine-tuning job already succeeded"), **NOT_FOUND})
def cancel_fine_tuning_job(fine_tuning_job_id: str, tenant: SubmitTenant, session: SessionDep) -> dict:
    """Cancel a job: a queued one at once; a running one is stopped by its worker, which then marks it cancelled."""
    job = _tenant_job(session, tenant.id, fine_tuning_job_id)
    if job.status in FINAL_FINE_TUNE_STATUSES:
        raise InputError("fine_tuning_job_id", f"fine-tuning job already {job.status}", 409)
    job = request_cancel(session, tenant_id=tenant.id, job_id=job.id)
    session.commit()
    return job_object(job, tenant.name)


def _event_cursor(after: str | None) -> int | None:
    if after is None:
        return None
    number = after.removeprefix(FTEVENT_PREFIX)
    if not number.isdigit() or len(number) > 18:
        raise InputError("after", "after must be an event id (ftevent-<number>)", 400)
    return int(number)


@router.get("/{fine_tuning_job_id}/events", responses={
    200: {"description": "A page of events (newest first unless order=asc); with stream=true, server-sent events "
                         "oldest first until the job is final",
          "content": {"application/json": {"example": list_object([EVENT_EXAMPLE], False)},
                      "text/event-stream": {"example": f"id: 42\nevent: fine_tuning.job.event\n"
                                                       f"data: {json.dumps(EVENT_EXAMPLE)}\n\n"}}},
    400: error_response("`after` is not an event id", "after", "after must be an event id (ftevent-<number>)"),
    **NOT_FOUND})
def list_fine_tuning_events(
    request: Request, fine_tuning_job_id: str, tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    after: Annotated[str | None, Query(max_length=40, description="the last event id already seen")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    stream: Annotated[bool, Query(description="follow live as server-sent events until the job is final")] = False,
) -> Any:
    """The job's events: life (created, validated, claimed, resumed), warnings, and progress (step, loss,
    validation metric); `stream=true` follows them live."""
    job = _tenant_job(session, tenant.id, fine_tuning_job_id)
    cursor = _event_cursor(after)
    if stream:
        session.close()  # the stream reads with sessions of its own
        return StreamingResponse(_event_stream(request, settings, job.id, cursor), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    limit = min(limit or 20, settings.max_page_size)
    rows = list_events(session, job_id=job.id, limit=limit + 1, after=cursor, newest_first=order == "desc")
    return list_object([event_object(row) for row in rows[:limit]], has_more=len(rows) > limit)


def _read_new_events(session_factory, job_id: uuid.UUID, after: int | None) -> tuple[list[dict], bool]:
    """Events past `after`, oldest first, and whether the job was final before they were read (so none follow)."""
    with session_factory() as session:
        job = session.get(FineTuningJob, job_id)
        final = job is None or job.status in FINAL_FINE_TUNE_STATUSES
        rows = list_events(session, job_id=job_id, limit=500, after=after, newest_first=False)
        return [event_object(row) for row in rows], final and len(rows) < 500


async def _event_stream(request: Request, settings: ServiceSettings, job_id: uuid.UUID,
                        after: int | None) -> AsyncIterator[str]:
    """Events as they land, a keep-alive when idle; `done` once the job is final and all its events are sent. A
    stream past its age limit just ends: reconnect with after=<the last id>."""
    started = last_sent = time.monotonic()
    while time.monotonic() - started < settings.fine_tune_events_max_seconds:
        if await request.is_disconnected():
            return
        events, final = await run_in_threadpool(_read_new_events, request.app.state.session_factory, job_id, after)
        for event in events:
            after = int(event["id"].removeprefix(FTEVENT_PREFIX))
            yield sse_message("fine_tuning.job.event", event, event["id"])
        if final:
            yield sse_message("done", {"id": public_id(FTJOB_PREFIX, job_id)})
            return
        if events:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= settings.ui_events_keepalive_seconds:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(settings.fine_tune_events_poll_seconds)
