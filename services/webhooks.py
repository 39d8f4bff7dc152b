"""Webhook settings on the API side: callback URLs checked at submission, the signing secret made and shown once."""
from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.orm import Session

from db.webhooks import ensure_webhook_secret
from services.config import ServiceSettings
from services.errors import InputError

CALLBACK_FIELD = "callback_url"


def check_callback_url(value: Any, settings: ServiceSettings, field: str = CALLBACK_FIELD) -> str | None:
    """An absolute http(s) URL with a host, no credentials and no control characters, within the length limit;
    None when absent. Where it points is checked when it is called (DNS can change in between)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, f"{field} must be an http:// or https:// URL string")
    value = value.strip()
    if len(value) > settings.max_callback_url_chars:
        raise InputError(field, f"{field} is {len(value)} characters, over the limit of "
                                f"{settings.max_callback_url_chars}")
    if not value.isprintable() or " " in value:
        raise InputError(field, f"{field} must not contain spaces or control characters")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InputError(field, f"{field} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(field, f"{field} must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise InputError(field, f"{field} must not carry a user name or password (events are signed instead)")
    return value


def secret_for_callbacks(session: Session, *, tenant_id: uuid.UUID, callback_url: str | None) -> None:
    """Makes sure a tenant naming a callback has a signing secret (read it with POST /v1/tenant/webhook-secret)."""
    if callback_url:
        ensure_webhook_secret(session, tenant_id=tenant_id)
