"""The FastAPI app factory: settings, database sessions, error shape and routers."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from db.session import get_session_factory
from services.body_limit import BodyLimitMiddleware
from services.config import ServiceSettings
from services.errors import install_error_handlers
from services.rate_limits import make_counter
from services.routes import batches, health, jobs, keys, tenant

DESCRIPTION = (
    "Send images with text and get a caption, an answer, a sentiment or a zero-shot classification. "
    "Jobs are queued and run by workers in batches; poll a job or a batch for its result. "
    "Authenticate with `Authorization: Bearer <API key>`; a key's scopes (`submit`, `read`, `admin`) say which "
    "routes it may call, and its rate limit (429 with `Retry-After`) how often. Every error is JSON naming the field: "
    '`{"error": {"field": "image", "message": "..."}}`.'
)


def create_app(settings: ServiceSettings | None = None, database_url: str | None = None) -> FastAPI:
    """A LensQ API app; the database is LENSQ_DATABASE_URL unless `database_url` is given."""
    app = FastAPI(title="LensQ", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings or ServiceSettings()
    app.state.session_factory = get_session_factory(database_url)
    app.state.rate_counter = make_counter(app.state.settings)
    install_error_handlers(app)
    limits = app.state.settings  # bodies are capped before any route reads them
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_request_bytes,
                       max_bytes_by_path={"/v1/jobs": limits.max_job_request_bytes})
    for router in (health.router, jobs.router, batches.router, keys.router, tenant.router):
        app.include_router(router)
    logging.getLogger("services").setLevel(logging.INFO)
    return app
