"""Runs the Alembic migrations shipped in db/migrations against a database URL."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.config import DbSettings

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str | None = None) -> Config:
    """The Alembic config for LensQ's migrations, pointed at `url` (default: LENSQ_DATABASE_URL)."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", (url or DbSettings().database_url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Brings the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Takes the database at `url` down to `revision`."""
    command.downgrade(alembic_config(url), revision)
