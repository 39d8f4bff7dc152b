"""FastAPI dependencies: the settings, a database session, the tenant behind the bearer key and its scopes."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from db.models import KEY_SCOPES, ApiKey, Tenant
from db.queries import find_live_api_key, find_live_api_key_by_id, hash_api_key
from services.config import ServiceSettings
from services.errors import InputError
from services.rate_limits import check_request_rate_async
from services.schemas import error_response

# How long the intake routes (POST /v1/jobs, POST /v1/batches) trust a key they looked up, instead of reading the
# ledger before every request. Their write transaction checks the key again (confirm_live_key), so a revoked key
# never stores a job; a tenant's image URL switch changed elsewhere reaches them within this many seconds (at once
# in the process that changed it, which empties its cache on commit). Every other route reads the ledger each time.
KEY_CACHE_SECONDS = 2.0


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings  # async: a plain read needs no thread


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


class KeyCache:
    """The tenants of recently used live keys, by token hash, each trusted for `seconds`; see KEY_CACHE_SECONDS."""

    _every: weakref.WeakSet[KeyCache] = weakref.WeakSet()  # emptied together when this process changes a key

    def __init__(self, seconds: float = KEY_CACHE_SECONDS, max_entries: int = 10_000):
        self.seconds, self.max_entries = seconds, max_entries
        self.entries: dict[str, tuple[CurrentTenant, float]] = {}
        # Bumped on every change: a lookup that began before a change does not store what it read.
        self.generation = 0
        self.lock = threading.Lock()
        # Per token hash: the ledger read in flight for it, with its event loop (see _shared_look_up).
        self.lookups: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        KeyCache._every.add(self)

    def get(self, token_hash: str) -> CurrentTenant | None:
        entry = self.entries.get(token_hash)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def put(self, token_hash: str, tenant: CurrentTenant, generation: int) -> None:
        with self.lock:
            if generation != self.generation:
                return
            if len(self.entries) >= self.max_entries:
                self.entries.clear()  # only live keys in use get in: a full cache is rare, and refills on use
            self.entries[token_hash] = (tenant, time.monotonic() + self.seconds)

    def clear(self) -> None:
        with self.lock:
            self.generation += 1
            self.entries.clear()

    @classmethod
    def clear_all(cls) -> None:
        for cache in list(cls._every):
            cache.clear()


# Any commit of this process that changed a key or a tenant (a revocation, a quota) empties the key caches.
_CHANGED_KEYS = "lensq_changed_keys_or_tenants"


@event.listens_for(Session, "after_flush")
def _note_changed_keys(session: Session, _flush_context) -> None:
    if any(isinstance(row, (ApiKey, Tenant)) for row in (*session.dirty, *session.deleted)):
        session.info[_CHANGED_KEYS] = True


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_key_changes(state) -> None:
    if (state.is_update or state.is_delete) and state.bind_mapper is not None and \
            state.bind_mapper.class_ in (ApiKey, Tenant):
        state.session.info[_CHANGED_KEYS] = True


@event.listens_for(Session, "after_commit")
def _empty_key_caches_after_change(session: Session) -> None:
    if session.info.pop(_CHANGED_KEYS, False):
        KeyCache.clear_all()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_changes(session: Session) -> None:
    session.info.pop(_CHANGED_KEYS, None)


def _look_up_key(session_factory: sessionmaker[Session], token: str, settings: ServiceSettings,
                 cache: KeyCache) -> CurrentTenant | None:
    """The tenant of a live key read from the ledger (None: unknown or revoked), remembered in `cache`."""
    generation = cache.generation
    with session_factory() as session:  # its own short read: the route's session, if any, starts clean
        key = find_live_api_key(session, token=token)
        current = _current_tenant(key, settings) if key is not None else None
    if current is not None:
        cache.put(key.key_hash, current, generation)
    return current


# Documents the scheme in the OpenAPI; the header itself is read by _bearer_token, whose errors say more.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer lq_...`")


def _unknown_key() -> InputError:
    return InputError("Authorization", "unknown or revoked API key", 401, {"WWW-Authenticate": "Bearer"})


async def _shared_look_up(request: Request, token: str, token_hash: str, settings: ServiceSettings,
                          cache: KeyCache) -> CurrentTenant | None:
    """_look_up_key for the intake routes, one read at a time per key: when a busy key's cache entry lapses, every
    request of it in flight would otherwise read the ledger at once (32 reads queued on the connection pool at
    concurrency 32); those arriving while a read runs wait for it, which began after they did not."""
    loop = asyncio.get_running_loop()
    in_flight = cache.lookups.get(token_hash)
    if in_flight is None or in_flight[0] is not loop:
        lookup = asyncio.ensure_future(run_in_threadpool(_look_up_key, request.app.state.session_factory, token,
                                                         settings, cache))
        in_flight = cache.lookups[token_hash] = (loop, lookup)

        def forget(done: asyncio.Future) -> None:  # unless another loop's read has taken the key's place since
            if cache.lookups.get(token_hash, (None, None))[1] is done:
                del cache.lookups[token_hash]

        lookup.add_done_callback(forget)
    return await asyncio.shield(in_flight[1])  # a client that goes away leaves the read to the others


async def _tenant_of_request(request: Request, settings: ServiceSettings, *, cached: bool) -> CurrentTenant:
    token = _bearer_token(request)
    cache: KeyCache = request.app.state.key_cache
    if cached:
        token_hash = hash_api_key(token)
        current = cache.get(token_hash) or await _shared_look_up(request, token, token_hash, settings, cache)
    else:
        current = await run_in_threadpool(_look_up_key, request.app.state.session_factory, token, settings, cache)
    if current is None:
        raise _unknown_key()
    await check_request_rate_async(request.app.state.rate_counter, key_id=current.key_id,
                                   limit=current.rate_limit_per_minute)
    return current


async def get_tenant(request: Request, settings: SettingsDep,
                     _scheme: Annotated[object, Security(bearer_scheme)]) -> CurrentTenant:
    """The tenant owning the request's API key (401 when unknown or revoked), once the key's rate allows (429)."""
    return await _tenant_of_request(request, settings, cached=False)


async def get_intake_tenant(request: Request, settings: SettingsDep,
                            _scheme: Annotated[object, Security(bearer_scheme)]) -> CurrentTenant:
    """get_tenant for the intake routes: a key looked up in the last KEY_CACHE_SECONDS costs no thread and no query;
    the route's write transaction confirms it (confirm_live_key)."""
    return await _tenant_of_request(request, settings, cached=True)


def confirm_live_key(session: Session, tenant: CurrentTenant, settings: ServiceSettings) -> CurrentTenant:
    """The request's tenant as the ledger has it now, in the caller's transaction: 401 if its key was revoked since
    it was looked up, and the tenant's current quota."""
    key = find_live_api_key_by_id(session, key_id=tenant.key_id)
    if key is None:
        raise _unknown_key()
    return _current_tenant(key, settings)


TenantDep = Annotated[CurrentTenant, Depends(get_tenant)]


def require_scope(scope: str, *, intake: bool = False) -> Callable[..., Awaitable[CurrentTenant]]:
    """A dependency giving the request's tenant if its key has `scope`; 403 naming Authorization if not. With
    `intake`, the key may come from the key cache (get_intake_tenant)."""
    if scope not in KEY_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(KEY_SCOPES)}")

    async def tenant_with_scope(
            tenant: CurrentTenant = Depends(get_intake_tenant if intake else get_tenant)) -> CurrentTenant:
        if scope not in tenant.scopes:
            raise InputError("Authorization", f"this API key lacks the {scope!r} scope", 403)
        return tenant

    tenant_with_scope.scope = scope  # read by the tests that check every route declares one
    return tenant_with_scope


SubmitTenant = Annotated[CurrentTenant, Depends(require_scope("submit"))]
# POST /v1/jobs and POST /v1/batches: their transaction confirms the key (confirm_live_key)
IntakeSubmitTenant = Annotated[CurrentTenant, Depends(require_scope("submit", intake=True))]
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
