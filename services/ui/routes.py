"""/ui: the web page's routes — sign-in, jobs with a live list, batches, the moderation queue, thumbnails."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from db.audit import list_moderation_decisions
from db.queries import batch_counts, get_batch, get_image, list_batches
from services.deps import CurrentTenant, SessionDep, SettingsDep
from services.errors import InputError, found
from services.input_checks import check_job
from services.rate_limits import check_job_quota
from services.request_bodies import read_job
from services.routes.moderation_review import record_review
from services.schemas import JobPublic
from services.submission import submit_job
from services.ui import pages
from services.ui.events import SNAPSHOT_JOBS, job_events
from services.ui.moderation_page import moderation_page
from services.ui.session import (
    check_same_origin,
    clear_session_cookie,
    require_session,
    set_session_cookie,
    sign_in,
    signed_in_tenant,
)
from services.ui.thumbnails import thumbnail_jpeg

router = APIRouter(prefix="/ui", include_in_schema=False)

STATIC = {name: (Path(__file__).parent / "static" / name).read_text()
          for name in ("ui.css", "ui.js")}
MEDIA_TYPES = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
SIGN_IN = "/ui/sign-in"
# A tenant's HTML is never cached or shared by a proxy; it runs only LensQ's own script and style (inline style
# attributes draw the progress bars), and no other site may frame it (the review buttons are worth clickjacking).
PRIVATE = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
BATCHES_SHOWN = 50
DECISIONS_SHOWN = 100
SMALL_FORM_FIELDS = 10  # the sign-in and review forms: a few text fields, never a file


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=PRIVATE)


def _page_tenant(request: Request, session, settings, scope: str, active: str) -> CurrentTenant | Response:
    """The signed-in tenant if its key has `scope`; else the response to send instead (sign-in, or refusal)."""
    tenant = signed_in_tenant(request, session, settings)
    if tenant is None:
        return RedirectResponse(SIGN_IN, status_code=303)
    if scope not in tenant.scopes:
        return _html(pages.refused_page(tenant.name, scope, active), 403)
    return tenant


@router.get("/static/ui.css")
def stylesheet() -> Response:
    return Response(STATIC["ui.css"], media_type=MEDIA_TYPES["ui.css"], headers={"Cache-Control": "max-age=300"})


@router.get("/static/ui.js")
def script() -> Response:
    return Response(STATIC["ui.js"], media_type=MEDIA_TYPES["ui.js"], headers={"Cache-Control": "max-age=300"})


# --- signing in and out -----------------------------------------------------------------------------

@router.get("/sign-in")
def sign_in_form() -> HTMLResponse:
    return _html(pages.sign_in_page())


@router.post("/session")
async def create_session(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Checks the posted API key once and answers with the signed session cookie; the key is not kept."""
    check_same_origin(request)
    token = (await request.form(max_files=0, max_fields=SMALL_FORM_FIELDS)).get("api_key")
    try:
        key = await run_in_threadpool(sign_in, session, settings, token if isinstance(token, str) else "")
    except InputError as error:
        return _html(pages.sign_in_page(error.message), error.status)
    response = RedirectResponse("/ui", status_code=303)
    set_session_cookie(response, request, settings, key)
    session.rollback()
    return response


@router.post("/sign-out")
def sign_out(request: Request) -> Response:
    check_same_origin(request)
    response = RedirectResponse(SIGN_IN, status_code=303)
    clear_session_cookie(response)
    return response


# --- jobs: the form, the submission, the live list, thumbnails -------------------------------------------

@router.get("")
def jobs_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    tenant = _page_tenant(request, session, settings, "read", "jobs")
    if isinstance(tenant, Response):
        return tenant
    return _html(pages.jobs_page(tenant.name, can_submit="submit" in tenant.scopes))


@router.post("/jobs")
async def submit_from_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The form's job, through the same reading, checks, quota and submission as POST /v1/jobs."""
    check_same_origin(request)
    tenant = await run_in_threadpool(require_session, request, session, settings, "submit")
    raw = await read_job(request, settings, allow_image_urls=tenant.allow_image_urls)
    checked = await run_in_threadpool(check_job, raw.fields, raw.image_bytes, settings)
    await run_in_threadpool(lambda: check_job_quota(session, tenant_id=tenant.id, limit=tenant.max_active_jobs,
                                                    new_jobs=1))
    submitted = await run_in_threadpool(
        lambda: submit_job(session, tenant_id=tenant.id, checked=checked, settings=settings, idempotency_key=None))
    if "application/json" not in request.headers.get("accept", ""):  # the form posted without the page's script
        return RedirectResponse("/ui", status_code=303)
    return JSONResponse(JobPublic.from_row(submitted.job).model_dump(mode="json"), status_code=202)


@router.get("/events")
async def events(request: Request, session: SessionDep, settings: SettingsDep,
                 batch_id: Annotated[uuid.UUID | None, Query()] = None) -> StreamingResponse:
    """The tenant's job changes (one batch's, with batch_id) as server-sent events."""
    tenant = await run_in_threadpool(require_session, request, session, settings, "read")
    snapshot = SNAPSHOT_JOBS
    if batch_id is not None:
        batch = await run_in_threadpool(lambda: get_batch(session, tenant_id=tenant.id, batch_id=batch_id))
        snapshot = found(batch, "batch_id").total  # a batch page starts with every one of its jobs
    session.close()  # the stream reads with sessions of its own; this one would sit idle for minutes
    stream = job_events(request, settings, tenant_id=tenant.id, batch_id=batch_id, snapshot=snapshot)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/thumbnail")
def thumbnail(request: Request, session: SessionDep, settings: SettingsDep,
              sha256: Annotated[str, Query(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")]) -> Response:
    """A small JPEG of one of the tenant's stored images (another tenant's is a 404)."""
    tenant = require_session(request, session, settings, "read")
    image = get_image(session, tenant_id=tenant.id, sha256=sha256)
    if image is None:
        raise InputError("sha256", "no image with this sha256", 404)
    data = thumbnail_jpeg(image.data, settings.ui_thumbnail_side)
    # Content-addressed: the same sha256 is always the same picture, so the browser may keep it.
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400, immutable"})


# --- batches ------------------------------------------------------------------------------------------

@router.get("/batches")
def batches_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    tenant = _page_tenant(request, session, settings, "read", "batches")
    if isinstance(tenant, Response):
        return tenant
    return _html(pages.batches_page(tenant.name, list_batches(session, tenant_id=tenant.id, limit=BATCHES_SHOWN)))


@router.get("/batch")
def batch_page(request: Request, session: SessionDep, settings: SettingsDep,
               batch_id: Annotated[uuid.UUID, Query()]) -> Response:
    tenant = _page_tenant(request, session, settings, "read", "batches")
    if isinstance(tenant, Response):
        return tenant
    batch = found(get_batch(session, tenant_id=tenant.id, batch_id=batch_id), "batch_id")
    return _html(pages.batch_page(tenant.name, batch, batch_counts(session, batch_id=batch.id)))


# --- the moderation queue -----------------------------------------------------------------------------

REVIEWED_NOTICES = {"upheld": "Upheld: recorded in the audit trail.",
                    "overturned": "Overturned: recorded in the audit trail."}


@router.get("/moderation")
def moderation_queue(request: Request, session: SessionDep, settings: SettingsDep,
                     review_status: Annotated[str, Query(pattern="^(pending|upheld|overturned|all)$")] = "pending",
                     done: Annotated[str | None, Query()] = None) -> Response:
    """Flagged decisions awaiting review (or reviewed ones), newest first."""
    tenant = _page_tenant(request, session, settings, "read", "moderation")
    if isinstance(tenant, Response):
        return tenant
    wanted = None if review_status == "all" else review_status
    decisions = list_moderation_decisions(session, tenant_id=tenant.id, limit=DECISIONS_SHOWN, flagged=True,
                                          review_status=wanted)
    return _html(moderation_page(tenant.name, decisions, review_filter=review_status,
                                 can_review="admin" in tenant.scopes, notice=REVIEWED_NOTICES.get(done or "")))


@router.post("/moderation/review")
async def review_from_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Records a reviewer's uphold or overturn, with the decision and its audit event in one transaction."""
    check_same_origin(request)
    tenant = await run_in_threadpool(require_session, request, session, settings, "admin")
    form = await request.form(max_files=0, max_fields=SMALL_FORM_FIELDS)
    decision_id, verdict, note = form.get("decision_id"), form.get("verdict"), form.get("note")
    try:
        decision_id = uuid.UUID(str(decision_id))
    except ValueError:
        raise InputError("decision_id", "not a decision id") from None
    if verdict not in ("uphold", "overturn"):
        raise InputError("verdict", "verdict must be uphold or overturn")
    note = str(note).strip()[:2000] if note else None
    decision, _event = await run_in_threadpool(lambda: record_review(session, tenant, decision_id, verdict=verdict,
                                                                     note=note or None))
    return RedirectResponse(f"/ui/moderation?review_status=pending&done={decision.review_status}", status_code=303)
