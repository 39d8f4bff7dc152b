"""POST /v1/moderations (OpenAI shape) scored by LensQ's zero-shot and sentiment jobs; the tenant's versioned policy."""
from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job
from db.moderation import PolicyVersion, add_policy_version, current_policy, record_decisions
from db.queries import batch_jobs, cancel_job, get_api_key, is_final
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, AdminTenant, CurrentTenant, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from services.errors import InputError
from services.input_checks import CheckedJob
from services.job_waiting import wait_for_jobs
from services.moderation_inputs import read_moderation_input
from services.moderation_policy import check_policy
from services.moderation_scoring import ModerationItem, decide, jobs_for_item
from services.openai_shapes import MODERATION_PREFIX, public_id
from services.rate_limits import check_job_quota
from services.schemas import TINY_PNG, error_response, example_response
from services.submission import submit_batch

router = APIRouter(tags=["openai"], responses=ACCESS_ERRORS)

MODERATION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "required": ["input"], "properties": {
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                            {"type": "array", "items": {"type": "object"}}]},
        "model": {"type": "string"}}},
    "example": {"input": [{"type": "text", "text": "look at this"},
                          {"type": "image_url", "image_url": {"url": TINY_PNG}}]}}}}}
RESULT_EXAMPLE = {
    "flagged": False, "categories": {"violence": False, "negative_sentiment": False},
    "category_scores": {"violence": 0.0132, "negative_sentiment": 0.0405},
    "category_applied_input_types": {"violence": ["image"], "negative_sentiment": ["image", "text"]},
    "failure": None, "decision_id": "0c5e4b7e-...", "policy_version": 0,
}


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise InputError("body", f"body is not valid JSON: {exc}", 400) from None


def _submit(session: Session, tenant: CurrentTenant, settings: ServiceSettings,
            planned: list[dict[str, CheckedJob]]) -> list[dict[str, uuid.UUID]]:
    """Every item's jobs as one LensQ batch (same intake as /v1/batches); their ids by item and category."""
    flat = [(index, key, job) for index, jobs in enumerate(planned) for key, job in jobs.items()]
    ids: list[dict[str, uuid.UUID]] = [{} for _ in planned]
    if not flat:
        return ids
    check_job_quota(session, tenant_id=tenant.id, limit=tenant.max_active_jobs, new_jobs=len(flat))
    batch = submit_batch(session, tenant_id=tenant.id, items=[job for _, _, job in flat], settings=settings,
                         idempotency_key=None).batch
    for (index, key, _), job in zip(flat, batch_jobs(session, batch_id=batch.id)):  # both in submission order
        ids[index][key] = job.id
    session.rollback()
    return ids


def _cancel_unfinished(session: Session, tenant_id: uuid.UUID, jobs: dict[uuid.UUID, Job]) -> None:
    """Jobs whose verdict was already given without them are not worth running later."""
    for job in jobs.values():
        if not is_final(job.status):
            cancel_job(session, tenant_id=tenant_id, job_id=job.id)
    session.commit()


def _record(session: Session, tenant_id: uuid.UUID, items: list[ModerationItem], policy: PolicyVersion,
            ids: list[dict[str, uuid.UUID]], jobs: dict[uuid.UUID, Job], wait: float) -> list[dict[str, Any]]:
    decisions = [decide(item, policy, {key: jobs.get(job_id) for key, job_id in item_ids.items()}, wait)
                 for item, item_ids in zip(items, ids)]
    rows = record_decisions(session, tenant_id=tenant_id, decisions=decisions)
    session.commit()
    return [{"flagged": row.flagged, "categories": row.categories, "category_scores": row.category_scores,
             "category_applied_input_types": row.category_applied_input_types, "failure": row.failure,
             "decision_id": str(row.id), "policy_version": row.policy_version, "model_version": row.model_version}
            for row in rows]


def _plan(session: Session, tenant: CurrentTenant, settings: ServiceSettings,
          items: list[ModerationItem]) -> tuple[PolicyVersion, list[dict[str, CheckedJob]]]:
    policy = current_policy(session, tenant_id=tenant.id)
    session.rollback()
    return policy, [jobs_for_item(item, index, policy, settings) for index, item in enumerate(items)]


@router.post("/v1/moderations", openapi_extra=MODERATION_BODY, responses={
    200: example_response("One result per input", {"id": "modr-0c5e...", "model": "lensq-tiny@3f2a9c1e",
                                                   "results": [RESULT_EXAMPLE]}),
    400: error_response("A bad input", "input[1].image_url.url", "image_url.url must be a data: URL or an http(s) "
                        "URL"),
    413: error_response("Image too large, or more jobs than the tenant's quota", "input[0].image_url.url",
                        "image is over the limit"),
    415: error_response("Not an image type LensQ reads", "input[0].image_url.url", "SVG is not supported"),
    422: error_response("An image or text LensQ cannot use", "input[0]", "input[0] contains a NUL character")})
async def create_moderation(request: Request, tenant: SubmitTenant, session: SessionDep,
                            settings: SettingsDep) -> dict[str, Any]:
    """Judge texts, images or posts under the tenant's policy. An input the model could not score in time is
    flagged (fail closed) with its `failure`; every verdict is stored for review."""
    body = await _json_body(request)
    if not isinstance(body, dict) or "input" not in body:
        raise InputError("input", "input is required", 400)
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise InputError("model", "model must be a string", 400)
    items = await run_in_threadpool(read_moderation_input, body["input"], settings,
                                    allow_image_urls=tenant.allow_image_urls)
    policy, planned = await run_in_threadpool(_plan, session, tenant, settings, items)
    ids = await run_in_threadpool(_submit, session, tenant, settings, planned)
    job_ids = [job_id for item_ids in ids for job_id in item_ids.values()]
    jobs = await wait_for_jobs(request.app.state.session_factory, tenant_id=tenant.id, job_ids=job_ids,
                               timeout=settings.moderation_wait_seconds, poll_seconds=settings.openai_poll_seconds)
    await run_in_threadpool(_cancel_unfinished, session, tenant.id, jobs)
    results = await run_in_threadpool(_record, session, tenant.id, items, policy, ids, jobs,
                                      settings.moderation_wait_seconds)
    models = sorted({r["model_version"] for r in results if r["model_version"]})
    return {"id": public_id(MODERATION_PREFIX, uuid.UUID(results[0]["decision_id"])),
            "model": ", ".join(models) or body.get("model") or "lensq", "results": results}


def _policy_body(policy: PolicyVersion) -> dict[str, Any]:
    return {"version": policy.version, "default": policy.is_default, "categories": policy.categories,
            "created_at": policy.created_at.isoformat() if policy.created_at else None}


@router.get("/v1/moderation/policy", responses={200: example_response("The policy in force", {
    "version": 0, "default": True, "categories": {"negative_sentiment": {"source": "sentiment", "threshold": 0.9}},
    "created_at": None})})
def get_policy(tenant: ReadTenant, session: SessionDep) -> dict[str, Any]:
    """The tenant's moderation policy in force: its newest version, or the built-in one (version 0)."""
    return _policy_body(current_policy(session, tenant_id=tenant.id))


@router.put("/v1/moderation/policy", responses={
    200: example_response("The new version", {"version": 1, "default": False, "categories": {}, "created_at": "..."}),
    400: error_response("The body is not JSON", "body", "body is not valid JSON"),
    409: error_response("Changed concurrently", "version", "another change made this version first; retry"),
    422: error_response("A bad category", "categories.violence.threshold", "threshold must be a number in (0, 1]")})
async def put_policy(request: Request, tenant: AdminTenant, session: SessionDep, settings: SettingsDep) -> dict:
    """Replace the policy: a new version (the old ones are kept, and decisions name theirs), with an audit event."""
    categories = check_policy(await _json_body(request), settings)
    return await run_in_threadpool(_store_policy, session, tenant, categories)


def _store_policy(session: Session, tenant: CurrentTenant, categories: dict[str, Any]) -> dict[str, Any]:
    key = get_api_key(session, tenant_id=tenant.id, key_id=tenant.key_id)
    try:
        policy = add_policy_version(session, tenant_id=tenant.id, categories=categories,
                                    actor=f"key:{key.prefix if key else tenant.key_id}")
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InputError("version", "another change made this version first; retry", 409) from None
    return _policy_body(policy)
