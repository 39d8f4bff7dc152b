"""Engines and sessions: one engine per database URL per process; SQLite runs one writer at a time."""
from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from db.config import DbSettings


def _make_sqlite_single_writer(engine: Engine, busy_timeout_ms: int) -> None:
    """Every SQLite transaction starts with BEGIN IMMEDIATE: writers queue on the file lock, none deadlock."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | None = None) -> Engine:
    """A new engine for `url` (default: LENSQ_DATABASE_URL)."""
    settings = DbSettings()
    url = url or settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=settings.echo_sql, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000})
        _make_sqlite_single_writer(engine, settings.sqlite_busy_timeout_ms)
        return engine
    return create_engine(url, echo=settings.echo_sql, pool_pre_ping=True, pool_size=5, max_overflow=10)


def is_postgres(session: Session) -> bool:
    """Whether the session talks to Postgres (row locks, advisory locks) rather than SQLite."""
    return session.get_bind().dialect.name == "postgresql"


@functools.cache
def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url` (default: LENSQ_DATABASE_URL)."""
    return make_engine(url or DbSettings().database_url)


@functools.cache
def get_session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The process-wide session factory for `url`."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
