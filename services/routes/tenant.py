"""/v1/tenant: a tenant's admin reads and sets the tenant's image-URL switch, quota of active jobs and webhook URL."""
from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from db.models import Tenant
from db.queries import count_active_jobs, get_tenant
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, BODY_ERRORS, AdminTenant, SessionDep, SettingsDep
from services.errors import InputError
from services.schemas import error_response, example_response
from services.webhooks import check_callback_url, ensure_webhook_secret

router = APIRouter(prefix="/v1/tenant", tags=["tenant"], responses=ACCESS_ERRORS)

TENANT_EXAMPLE = {"id": "5d0c1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f", "name": "acme", "allow_image_urls": False,
                  "max_active_jobs": None, "active_jobs_limit": 10000, "active_jobs": 12,
                  "webhook_url": None, "webhook_secret_set": False, "webhook_secret": None}


class TenantPublic(BaseModel):
    """The tenant's settings, and how many of its jobs are queued or running now."""

    id: uuid.UUID
    name: str
    allow_image_urls: bool
    max_active_jobs: int | None = Field(description="The tenant's own quota; null: the service's default.")
    active_jobs_limit: int = Field(description="The quota in force.")
    active_jobs: int
    webhook_url: str | None = Field(None, description="Receives events of jobs and batches that name no callback.")
    webhook_secret_set: bool = Field(False, description="Whether the tenant has a webhook signing secret.")
    webhook_secret: str | None = Field(None, description="The signing secret, only in the answer that created it "
                                       "(first webhook_url set); later: POST /v1/tenant/webhook-secret for a new one.")


class TenantUpdate(BaseModel):
    """The settings to change; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    allow_image_urls: bool | None = Field(None, description="Let jobs name their image by an http(s) URL.")
    max_active_jobs: int | None = Field(None, ge=1, description="Quota of queued plus running jobs; null: back to "
                                        "the service's default. At most the service's ceiling.")
    webhook_url: str | None = Field(None, description="Where events are POSTed when a job or batch names no "
                                    "callback_url; null removes it.")


def _public(session: Session, tenant: Tenant, settings: ServiceSettings) -> TenantPublic:
    return TenantPublic(
        id=tenant.id, name=tenant.name, allow_image_urls=tenant.allow_image_urls,
        max_active_jobs=tenant.max_active_jobs,
        active_jobs_limit=tenant.max_active_jobs or settings.tenant_max_active_jobs,
        active_jobs=count_active_jobs(session, tenant_id=tenant.id),
        webhook_url=tenant.webhook_url, webhook_secret_set=bool(tenant.webhook_secret),
    )


@router.get("", response_model=TenantPublic, responses={200: example_response("The tenant", TENANT_EXAMPLE)})
def read_tenant(current: AdminTenant, session: SessionDep, settings: SettingsDep) -> TenantPublic:
    """This tenant's settings and its count of active jobs."""
    return _public(session, get_tenant(session, tenant_id=current.id), settings)


@router.patch(
    "",
    response_model=TenantPublic,
    responses={200: example_response("Updated", {**TENANT_EXAMPLE, "allow_image_urls": True}),
               **BODY_ERRORS,
               422: error_response("A field is invalid", "max_active_jobs", "at most 1000000 active jobs")},
    openapi_extra={"requestBody": {"content": {"application/json": {"example": {
        "allow_image_urls": True, "max_active_jobs": 500}}}}},
)
def update_tenant(body: TenantUpdate, current: AdminTenant, session: SessionDep,
                  settings: SettingsDep) -> TenantPublic:
    """Switch image URLs on or off, set the quota of active jobs (null: the default), or the webhook URL."""
    ceiling = settings.tenant_max_active_jobs_ceiling
    if body.max_active_jobs is not None and body.max_active_jobs > ceiling:
        raise InputError("max_active_jobs", f"at most {ceiling} active jobs")
    webhook_url = check_callback_url(body.webhook_url, settings, "webhook_url")
    tenant = get_tenant(session, tenant_id=current.id)
    if body.allow_image_urls is not None:
        tenant.allow_image_urls = body.allow_image_urls
    if "max_active_jobs" in body.model_fields_set:
        tenant.max_active_jobs = body.max_active_jobs
    new_secret = None
    if "webhook_url" in body.model_fields_set:
        tenant.webhook_url = webhook_url
        if webhook_url:  # the first URL brings the secret its events are signed with, shown in this answer only
            secret, created = ensure_webhook_secret(session, tenant_id=tenant.id)
            new_secret = secret if created else None
    session.commit()
    return _public(session, tenant, settings).model_copy(update={"webhook_secret": new_secret})
