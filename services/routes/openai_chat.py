"""POST /v1/chat/completions: an OpenAI chat request run as one LensQ caption or vqa job, answered when it ends."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from db.models import Job
from db.queries import find_job_by_idempotency_key
from services.chat_requests import check_chat_job, read_chat_request
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, CurrentTenant, SessionDep, SettingsDep, SubmitTenant
from services.errors import InputError, error_body
from services.input_checks import CheckedJob
from services.job_waiting import wait_for_jobs
from services.openai_shapes import chat_chunks, chat_completion
from services.rate_limits import check_job_quota
from services.routes.jobs import IdempotencyKey
from services.schemas import TINY_PNG, error_response, example_response
from services.submission import check_idempotency_key, submit_job

router = APIRouter(prefix="/v1/chat", tags=["openai"], responses=ACCESS_ERRORS)
# A stream sends a comment this often while the job runs, so proxies do not close an idle connection.
STREAM_KEEPALIVE_SECONDS = 10.0
# Every answer names its job, so a client can always find it at /v1/jobs/{id}.
JOB_ID_HEADER = "X-LensQ-Job-Id"

CHAT_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["messages"], "properties": {
            "model": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}},
            "stream": {"type": "boolean"}, "temperature": {"type": "number", "enum": [0]},
            "max_tokens": {"type": "integer", "minimum": 1}}},
        "example": {"model": "lensq-tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": TINY_PNG}}, {"type": "text", "text": "what color is it?"}]}]},
    }}}
}
COMPLETION_EXAMPLE = {
    "id": "chatcmpl-3b241101-e2bb-4255-8caf-4136c566a962", "object": "chat.completion", "created": 1767268800,
    "model": "lensq-tiny@3f2a9c1e", "choices": [{"index": 0, "message": {"role": "assistant", "content": "red"},
                                                  "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
}


def _unfinished_error(job: Job, settings: ServiceSettings) -> InputError:
    """Why a job gave no completion; a job still waiting names its id, so the client can poll /v1/jobs/{id}."""
    # Not retried by OpenAI clients: a retry would submit a new job, while this one is still there to poll.
    header = {JOB_ID_HEADER: str(job.id), "x-should-retry": "false"}
    if job.status == "failed":
        status = 422 if job.error_code == "input" else 502
        return InputError("job_id", f"job {job.id} failed ({job.error_code}): {job.error}", status, header)
    if job.status == "cancelled":
        return InputError("job_id", f"job {job.id} was cancelled", 409, header)
    # 409 (the job is not in a state to answer yet), not 504: a 5xx invites a resubmission, and browsers retry 408.
    return InputError("job_id", f"job {job.id} is still {job.status} after {settings.openai_wait_seconds:g}s; "
                      f"poll GET /v1/jobs/{job.id} for its result", 409, header)


def _store_job(session: Session, tenant: CurrentTenant, checked: CheckedJob, settings: ServiceSettings,
               key: str | None) -> Job:
    """The same intake as POST /v1/jobs: the tenant's quota (unless a replay), then one transaction and a ring."""
    if key is None or find_job_by_idempotency_key(session, tenant_id=tenant.id, key=key) is None:
        check_job_quota(session, tenant_id=tenant.id, limit=tenant.max_active_jobs, new_jobs=1)
    job = submit_job(session, tenant_id=tenant.id, checked=checked, settings=settings, idempotency_key=key).job
    session.expunge(job)
    session.rollback()  # a replay read the key in a transaction: end it before the wait, which may be long
    return job


async def _final_job(request: Request, tenant: CurrentTenant, job: Job, timeout: float) -> Job:
    settings: ServiceSettings = request.app.state.settings
    jobs = await wait_for_jobs(request.app.state.session_factory, tenant_id=tenant.id, job_ids=[job.id],
                               timeout=timeout, poll_seconds=settings.openai_poll_seconds)
    return jobs.get(job.id, job)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _stream(request: Request, tenant: CurrentTenant, job: Job) -> AsyncIterator[str]:
    """The completion as chat.completion.chunk events once the job ends, then [DONE]; an error event otherwise."""
    settings: ServiceSettings = request.app.state.settings
    waited = 0.0
    while True:
        step = min(STREAM_KEEPALIVE_SECONDS, settings.openai_wait_seconds - waited)
        job = await _final_job(request, tenant, job, step)
        waited += step
        if job.status not in ("queued", "running") or waited >= settings.openai_wait_seconds:
            break
        yield ": waiting for the job\n\n"
    if job.status == "succeeded":
        for chunk in chat_chunks(job):
            yield _sse(chunk)
    else:
        error = _unfinished_error(job, settings)
        yield _sse(error_body(error.field, error.message))
    yield "data: [DONE]\n\n"


async def _read_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise InputError("body", f"body is not valid JSON: {exc}", 400) from None


@router.post(
    "/completions",
    openapi_extra=CHAT_BODY,
    responses={
        200: example_response("The completion (or, with stream: true, text/event-stream chunks)", COMPLETION_EXAMPLE),
        400: error_response("A field LensQ cannot honour", "temperature", "only temperature 0 (greedy decoding) is "
                            "supported; omit it or send 0"),
        409: error_response("The job did not finish in time (poll it), was cancelled, or Idempotency-Key was "
                            "reused with another body", "job_id", "job 3b241101-... is still queued after 120s; "
                            "poll GET /v1/jobs/3b241101-... for its result"),
        413: error_response("Image too large", "messages[0].content[0].image_url.url", "image is over the limit"),
        415: error_response("Not an image type LensQ reads", "messages[0].content[0].image_url.url",
                            "SVG is not supported; send one of JPEG, PNG, ..."),
        422: error_response("The image or question is invalid, or the job failed on its input",
                            "messages[0].content[0].image_url.url", "image could not be decoded"),
        502: error_response("The job failed", "job_id", "job 3b241101-... failed (model): ..."),
    },
)
async def create_chat_completion(request: Request, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep,
                                 idempotency_key: IdempotencyKey = None) -> Any:
    """OpenAI chat completions over LensQ: the last user message's image and text become one job (a question →
    vqa; no text, or a request to describe or caption → caption); the answer comes once the job finishes."""
    key = check_idempotency_key(idempotency_key, settings)
    chat = read_chat_request(await _read_body(request))
    checked = await run_in_threadpool(check_chat_job, chat, settings, allow_image_urls=tenant.allow_image_urls)
    job = await run_in_threadpool(_store_job, session, tenant, checked, settings, key)
    if chat.stream:
        return StreamingResponse(_stream(request, tenant, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", JOB_ID_HEADER: str(job.id)})
    job = await _final_job(request, tenant, job, settings.openai_wait_seconds)
    if job.status != "succeeded":
        raise _unfinished_error(job, settings)
    return JSONResponse(chat_completion(job), headers={JOB_ID_HEADER: str(job.id)})
