"""Settings of the db package: where the database is."""
from pydantic_settings import BaseSettings, SettingsConfigDict


class DbSettings(BaseSettings):
    """Database settings, read from LENSQ_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore")

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/lensq"
    sqlite_busy_timeout_ms: int = 30_000
    echo_sql: bool = False
