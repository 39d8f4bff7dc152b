"""FastAPI dependencies: the settings, a database session, and the tenant behind the bearer key."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from db.queries import tenant_for_api_key
from services.config import ServiceSettings
from services.errors import InputError


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
    """The tenant a request acts for."""

    id: uuid.UUID
    name: str


def get_tenant(request: Request, session: SessionDep) -> CurrentTenant:
    """The tenant owning the request's API key; 401 when there is none or it is unknown or revoked."""
    tenant = tenant_for_api_key(session, token=_bearer_token(request))
    current = CurrentTenant(id=tenant.id, name=tenant.name) if tenant is not None else None
    session.rollback()  # end the read transaction: on SQLite every transaction holds the writer lock
    if current is None:
        raise InputError("Authorization", "unknown or revoked API key", 401, {"WWW-Authenticate": "Bearer"})
    return current


TenantDep = Annotated[CurrentTenant, Depends(get_tenant)]
