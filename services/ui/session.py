"""The web page's sign-in: a signed, HttpOnly session cookie naming an API key, and the same-origin check on POSTs."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlalchemy.orm import Session

from db.models import ApiKey
from db.queries import find_live_api_key, find_live_api_key_by_id
from services.config import ServiceSettings
from services.deps import CurrentTenant, tenant_of_key
from services.errors import InputError
from services.rate_limits import check_request_rate

COOKIE_NAME = "lensq_session"
COOKIE_PATH = "/ui"
# Used when no LENSQ_UI_SESSION_SECRET is set: sessions then last as long as this API process.
_PROCESS_SECRET = secrets.token_bytes(32)


def _secret(settings: ServiceSettings) -> bytes:
    return settings.ui_session_secret.encode() if settings.ui_session_secret else _PROCESS_SECRET


def _signature(settings: ServiceSettings, key: ApiKey, expires: int) -> str:
    # The key's stored hash is signed too: a session is bound to that very key row, never to a recycled id.
    message = f"{key.id}.{expires}.{key.key_hash}".encode()
    digest = hmac.new(_secret(settings), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def session_value(settings: ServiceSettings, key: ApiKey) -> str:
    """The cookie's value: the key's id, an expiry, and their signature; the API key itself never leaves the form."""
    expires = int(time.time() + settings.ui_session_hours * 3600)
    return f"{key.id.hex}.{expires}.{_signature(settings, key, expires)}"


def _key_of_session(session: Session, settings: ServiceSettings, value: str) -> ApiKey | None:
    """The live key a cookie value names, if its signature holds and it has not expired."""
    try:
        key_hex, expires_text, signature = value.split(".")
        key_id, expires = uuid.UUID(hex=key_hex), int(expires_text)
    except ValueError:
        return None
    if expires < time.time():
        return None
    key = find_live_api_key_by_id(session, key_id=key_id)  # a revoked key ends its sessions at once
    if key is None or not hmac.compare_digest(signature, _signature(settings, key, expires)):
        return None
    return key


def sign_in(session: Session, settings: ServiceSettings, token: str) -> ApiKey:
    """The live key of a token typed into the sign-in form; InputError naming `api_key` otherwise."""
    key = find_live_api_key(session, token=token.strip()) if token and token.strip() else None
    if key is None:
        raise InputError("api_key", "unknown or revoked API key", 401)
    return key


def set_session_cookie(response: Response, request: Request, settings: ServiceSettings, key: ApiKey) -> None:
    """Sets the session: HttpOnly (no script reads it), SameSite=Strict (no other site sends it), scoped to /ui."""
    secure = settings.ui_cookie_secure if settings.ui_cookie_secure is not None else request.url.scheme == "https"
    response.set_cookie(COOKIE_NAME, session_value(settings, key), max_age=int(settings.ui_session_hours * 3600),
                        path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")


def signed_in_tenant(request: Request, session: Session, settings: ServiceSettings) -> CurrentTenant | None:
    """The tenant of the request's session cookie, checked like a bearer key (live, rate-limited); None if none."""
    value = request.cookies.get(COOKIE_NAME)
    key = _key_of_session(session, settings, value) if value else None
    current = tenant_of_key(key, settings) if key is not None else None
    session.rollback()  # end the read transaction, as the bearer check does
    if current is not None:
        check_request_rate(request.app.state.rate_counter, key_id=current.key_id, limit=current.rate_limit_per_minute)
    return current


def require_session(request: Request, session: Session, settings: ServiceSettings,
                    scope: str) -> CurrentTenant:
    """The signed-in tenant if its key has `scope`: for the page's fetches, which answer errors as JSON."""
    tenant = signed_in_tenant(request, session, settings)
    if tenant is None:
        raise InputError("session", "not signed in: sign in at /ui/sign-in with an API key", 401)
    if scope not in tenant.scopes:
        raise InputError("Authorization", f"this API key lacks the {scope!r} scope", 403)
    return tenant


def check_same_origin(request: Request) -> None:
    """Refuses a cookie-authenticated POST sent from another site (CSRF), besides what SameSite=Strict stops.

    The browser's Origin (else Referer) must name this host; a POST naming neither is refused too."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if source == "null" or not source or urlsplit(source).netloc != request.headers.get("host", ""):
        raise InputError("Origin", "cross-site request refused: post from LensQ's own page", 403)
