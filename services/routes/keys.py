"""/v1/keys: a tenant's admin creates, lists and revokes the tenant's API keys (the token is shown once)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from db.models import ApiKey
from db.queries import DEFAULT_KEY_SCOPES, create_api_key, get_api_key, revoke_tenant_key, tenant_api_keys
from services.deps import ACCESS_ERRORS, BODY_ERRORS, AdminTenant, SessionDep, SettingsDep
from services.errors import InputError, found
from services.schemas import error_response, example_response

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ACCESS_ERRORS)

ScopeName = Literal["submit", "read", "admin"]
# No control characters: Postgres refuses NUL in text, and a name is shown in terminals.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
KEY_ID = "0c3e5f1a-8d2b-4c6e-9a7f-1b2d3e4f5a6b"
KEY_EXAMPLE = {
    "id": KEY_ID, "name": "ci-uploader", "prefix": "lq_Ab3dE9xZ", "scopes": ["submit", "read"],
    "rate_limit_per_minute": None, "created_at": "2026-01-01T12:00:00Z", "revoked_at": None,
}
NOT_FOUND = {404: error_response("No such key for this tenant", "key_id", "no key with this id")}


class KeyCreate(BaseModel):
    """A new key: a name to recognise it by, what it may do, and optionally its own rate limit."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, pattern=PRINTABLE)
    scopes: list[ScopeName] = Field(default_factory=lambda: list(DEFAULT_KEY_SCOPES), min_length=1,
                                    description="submit: create and cancel jobs and batches; read: read them; "
                                                "admin: manage this tenant's keys and settings.")
    rate_limit_per_minute: int | None = Field(None, ge=1, description="Requests per minute; null: the service's "
                                              "default. At most the service's ceiling.")


class KeyPublic(BaseModel):
    """A key as its tenant's admin sees it: never the token, never its hash."""

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[ScopeName]
    rate_limit_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, key: ApiKey) -> KeyPublic:
        return cls(id=key.id, name=key.name, prefix=key.prefix, scopes=key.scopes.split(),
                   rate_limit_per_minute=key.rate_limit_per_minute, created_at=key.created_at,
                   revoked_at=key.revoked_at)


class KeyCreated(KeyPublic):
    """A key just created, with its token: shown this once, stored only as a hash."""

    token: str


class KeysPublic(BaseModel):
    """The tenant's keys, live and revoked, oldest first."""

    data: list[KeyPublic]


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses={
        201: example_response("Created; keep the token, it is not shown again",
                              {**KEY_EXAMPLE, "token": "lq_Ab3dE9xZ..."}),
        **BODY_ERRORS,
        422: error_response("A field is invalid", "rate_limit_per_minute", "at most 60000 requests per minute"),
    },
    openapi_extra={"requestBody": {"content": {"application/json": {"example": {
        "name": "ci-uploader", "scopes": ["submit", "read"], "rate_limit_per_minute": 600}}}}},
)
def create_key(body: KeyCreate, tenant: AdminTenant, session: SessionDep, settings: SettingsDep) -> KeyCreated:
    """Create a key for this tenant with the scopes given; the token is in this answer only."""
    ceiling = settings.key_rate_limit_ceiling
    if body.rate_limit_per_minute is not None and body.rate_limit_per_minute > ceiling:
        raise InputError("rate_limit_per_minute", f"at most {ceiling} requests per minute")
    key, token = create_api_key(session, tenant_id=tenant.id, name=body.name, scopes=body.scopes,
                                rate_limit_per_minute=body.rate_limit_per_minute)
    session.commit()
    return KeyCreated(**KeyPublic.from_row(key).model_dump(), token=token)


@router.get("", response_model=KeysPublic, responses={200: example_response("The keys", {"data": [KEY_EXAMPLE]})})
def list_keys(tenant: AdminTenant, session: SessionDep) -> KeysPublic:
    """This tenant's keys, live and revoked, without their tokens."""
    return KeysPublic(data=[KeyPublic.from_row(key) for key in tenant_api_keys(session, tenant_id=tenant.id)])


@router.get("/{key_id}", response_model=KeyPublic,
            responses={200: example_response("The key", KEY_EXAMPLE), **NOT_FOUND})
def get_key(key_id: uuid.UUID, tenant: AdminTenant, session: SessionDep) -> KeyPublic:
    """One of this tenant's keys, without its token."""
    key = found(get_api_key(session, tenant_id=tenant.id, key_id=key_id), "key_id")
    return KeyPublic.from_row(key)


@router.post(
    "/{key_id}/revoke",
    response_model=KeyPublic,
    responses={200: example_response("Revoked (at once; revoking again changes nothing)",
                                     {**KEY_EXAMPLE, "revoked_at": "2026-01-02T08:00:00Z"}), **NOT_FOUND},
)
def revoke_key(key_id: uuid.UUID, tenant: AdminTenant, session: SessionDep) -> KeyPublic:
    """Revoke one of this tenant's keys: its next request gets 401."""
    key = found(revoke_tenant_key(session, tenant_id=tenant.id, key_id=key_id), "key_id")
    session.commit()
    return KeyPublic.from_row(key)
