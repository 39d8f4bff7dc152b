"""FastAPI dependencies: the settings, a database session, the tenant behind the bearer key and its scopes."""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from db.models import KEY_SCOPES, ApiKey
from db.queries import find_live_api_key
from services.config import ServiceSettings
from services.errors import InputError
from services.rate_limits import check_request_rate
from services.schemas import error_response


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; routes commit explicitly, anything left open is rolled back."""
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def _bearer_token(request: Request) -> str:
    challenge = {"WWW-Authenticate": "Bearer"}
    header = request.headers.get("authorization")
    if not header:
        raise InputError("Authorization", "missing bearer API key (Authorization: Bearer lq_...)", 401, challenge)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InputError("Authorization", "expected 'Authorization: Bearer <API key>'", 401, challenge)
    return token.strip()


@dataclass(frozen=True)
class CurrentTenant:
    """The tenant a request acts for, and what the request's key may do."""

    id: uuid.UUID
    name: str
    key_id: uuid.UUID
    scopes: frozenset[str]
    rate_limit_per_minute: int  # the key's own, else the service's default
    max_active_jobs: int  # the tenant's own, else the service's default
    allow_image_urls: bool


def _current_tenant(key: ApiKey, settings: ServiceSettings) -> CurrentTenant:
    tenant = key.tenant
    return CurrentTenant(
        id=tenant.id, name=tenant.name, key_id=key.id, scopes=frozenset(key.scopes.split()),
        rate_limit_per_minute=key.rate_limit_per_minute or settings.key_rate_limit_per_minute,
        max_active_jobs=tenant.max_active_jobs or settings.tenant_max_active_jobs,
        allow_image_urls=tenant.allow_image_urls,
    )


def tenant_of_key(key: ApiKey, settings: ServiceSettings) -> CurrentTenant:
    """The tenant a live key acts for, with the key's scopes and limits: for sign-ins other than the bearer header."""
    return _current_tenant(key, settings)


# Documents the scheme in the OpenAPI; the header itself is read by _bearer_token, whose errors say more.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer lq_...`")


def get_tenant(request: Request, session: SessionDep, settings: SettingsDep,
               _scheme: Annotated[object, Security(bearer_scheme)]) -> CurrentTenant:
    """The tenant owning the request's API key (401 when unknown or revoked), once the key's rate allows (429)."""
    key = find_live_api_key(session, token=_bearer_token(request))
    current = _current_tenant(key, settings) if key is not None else None
    session.rollback()  # end the read transaction: on SQLite every transaction holds the writer lock
    if current is None:
        raise InputError("Authorization", "unknown or revoked API key", 401, {"WWW-Authenticate": "Bearer"})
    check_request_rate(request.app.state.rate_counter, key_id=current.key_id, limit=current.rate_limit_per_minute)
    return current


TenantDep = Annotated[CurrentTenant, Depends(get_tenant)]


def require_scope(scope: str) -> Callable[..., Awaitable[CurrentTenant]]:
    """A dependency giving the request's tenant if its key has `scope`; 403 naming Authorization if not."""
    if scope not in KEY_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(KEY_SCOPES)}")

    async def tenant_with_scope(tenant: TenantDep) -> CurrentTenant:
        if scope not in tenant.scopes:
            raise InputError("Authorization", f"this API key lacks the {scope!r} scope", 403)
        return tenant

    tenant_with_scope.scope = scope  # read by the tests that check every route declares one
    return tenant_with_scope


SubmitTenant = Annotated[CurrentTenant, Depends(require_scope("submit"))]
ReadTenant = Annotated[CurrentTenant, Depends(require_scope("read"))]
AdminTenant = Annotated[CurrentTenant, Depends(require_scope("admin"))]


def _with_header(response: dict, name: str, description: str, kind: str) -> dict:
    return {**response, "headers": {name: {"description": description, "schema": {"type": kind}}}}


# The refusals every authenticated route can give, in LensQ's error shape (it replaces FastAPI's own 422 shape).
ACCESS_ERRORS = {
    401: _with_header(error_response("No key, or an unknown or revoked key", "Authorization",
                                     "unknown or revoked API key"), "WWW-Authenticate", "Bearer", "string"),
    403: error_response("The key lacks the scope this route needs", "Authorization",
                        "this API key lacks the 'submit' scope"),
    422: error_response("A parameter or field is invalid", "job_id", "Input should be a valid UUID"),
    429: _with_header(error_response("Too many requests from this key this minute, or too many active jobs",
                                     "Authorization", "this API key's limit of 6000 requests per minute is spent; "
                                     "retry in 12s"), "Retry-After", "Seconds to wait before retrying", "integer"),
    # The key is looked up in the ledger first, so any authenticated route answers this while it is unreachable.
    503: _with_header(error_response("The database is unavailable", "database",
                                     "the database is unavailable; retry later"),
                      "Retry-After", "Seconds to wait before retrying", "integer"),
}
# FastAPI's answer to a JSON body it cannot even decode, on routes whose body it parses.
BODY_ERRORS = {400: error_response("The body is not JSON", "request", "There was an error parsing the body")}
