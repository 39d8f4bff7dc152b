"""The FastAPI app factory: settings, database sessions, error shape and routers."""
from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from db.session import get_session_factory
from services.body_limit import BodyLimitMiddleware
from services.config import ServiceSettings
from services.deps import KeyCache
from services.errors import install_error_handlers
from services.metrics import install_metrics
from services.rate_limits import make_counter
from services.request_logs import install_request_logs
from services.submission import SingleJobIntake
from services.routes import batches, health, jobs, keys, tenant
from services.routes import openai_batches, openai_chat, openai_files, openai_moderations
from services.routes import moderation_review
from services.routes import fine_tuning
from services.routes import models as model_routes
from services.routes import webhooks as webhook_routes
from services.ui import routes as ui_routes

DESCRIPTION = (
    "Send images with text and get a caption, an answer, a sentiment or a zero-shot classification. "
    "Jobs are queued and run by workers in batches; poll a job or a batch for its result. "
    "Authenticate with `Authorization: Bearer <API key>`; a key's scopes (`submit`, `read`, `admin`) say which "
    "routes it may call, and its rate limit (429 with `Retry-After`) how often. Every error is JSON naming the field: "
    '`{"error": {"field": "image", "message": "..."}}`.'
)


@asynccontextmanager
async def startup_objects_frozen(_app: FastAPI) -> AsyncIterator[None]:
    """Once the app is built and served, its start-up objects (about 160,000: FastAPI, pydantic, SQLAlchemy) leave
    the garbage collector's view for good: a full collection that walked them all held the event loop, and every
    request on it, for about 40 ms."""
    gc.freeze()
    yield


def create_app(settings: ServiceSettings | None = None, database_url: str | None = None) -> FastAPI:
    """A LensQ API app; the database is LENSQ_DATABASE_URL unless `database_url` is given."""
    app = FastAPI(title="LensQ", version="0.1.0", description=DESCRIPTION, lifespan=startup_objects_frozen)
    app.state.settings = settings or ServiceSettings()
    app.state.session_factory = get_session_factory(database_url)
    app.state.rate_counter = make_counter(app.state.settings)
    app.state.key_cache = KeyCache()  # the tenants of recently used keys (services.deps.KEY_CACHE_SECONDS)
    # POST /v1/jobs: jobs arriving together are stored together, with or without an Idempotency-Key
    app.state.single_job_intake = SingleJobIntake(app.state.session_factory, app.state.settings)
    install_error_handlers(app)
    limits = app.state.settings  # bodies are capped before any route reads them
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_request_bytes,
                       max_bytes_by_path={"/v1/jobs": limits.max_job_request_bytes,
                                          "/ui/jobs": limits.max_job_request_bytes,
                                          # one image each, like a job; a file upload up to its own cap
                                          "/v1/chat/completions": limits.max_job_request_bytes,
                                          "/v1/moderations": limits.max_job_request_bytes,
                                          "/v1/files": limits.max_file_bytes + limits.max_job_fields_bytes})
    for router in (health.router, jobs.router, batches.router, keys.router, tenant.router):
        if router is batches.router:  # first: POST /v1/batches takes OpenAI batches and hands LensQ ones on
            app.include_router(openai_batches.router)
        app.include_router(router)
    for router in (openai_chat.router, openai_files.router, openai_moderations.router):
        app.include_router(router)
    app.include_router(moderation_review.router)
    app.include_router(webhook_routes.router)
    app.include_router(fine_tuning.router)
    app.include_router(model_routes.router)
    app.include_router(ui_routes.router)  # the web page, /ui: not part of the OpenAPI
    install_metrics(app)  # added after the body limit: its middleware is outside it, so it counts 413s too
    install_request_logs(app)  # outermost: every line of a request, the metrics' included, has its context
    logging.getLogger("services").setLevel(logging.INFO)
    return app
