"""The FastAPI app factory: settings, database sessions, error shape and routers."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from db.session import get_session_factory
from services.config import ServiceSettings
from services.errors import install_error_handlers
from services.routes import batches, health, jobs

DESCRIPTION = (
    "Send images with text and get a caption, an answer, a sentiment or a zero-shot classification. "
    "Jobs are queued and run by workers in batches; poll a job or a batch for its result. "
    "Authenticate with `Authorization: Bearer <API key>`. Every error is JSON naming the field: "
    '`{"error": {"field": "image", "message": "..."}}`.'
)


def create_app(settings: ServiceSettings | None = None, database_url: str | None = None) -> FastAPI:
    """A LensQ API app; the database is LENSQ_DATABASE_URL unless `database_url` is given."""
    app = FastAPI(title="LensQ", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings or ServiceSettings()
    app.state.session_factory = get_session_factory(database_url)
    install_error_handlers(app)
    for router in (health.router, jobs.router, batches.router):
        app.include_router(router)
    logging.getLogger("services").setLevel(logging.INFO)
    return app
