"""Settings of the workers package: broker, queues, model and batching, leases and the sweeper."""
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_KINDS = ("caption", "vqa", "sentiment", "classify")


class WorkerSettings(BaseSettings):
    """Worker settings, read from LENSQ_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore", protected_namespaces=())

    broker_url: str = "redis://127.0.0.1:6379/0"
    queue_prefix: str = "lensq"
    # Longer than any job: a doorbell message is redelivered only after this (Redis transport).
    visibility_timeout_seconds: int = 6 * 3600

    model: str = "lensq-tiny"
    device: str = "auto"
    quantize: str | None = None

    batch_size: int = Field(16, ge=1, le=1024)
    max_batches_per_message: int = Field(8, ge=1)
    lease_seconds: float = Field(120.0, gt=0)
    max_attempts: int = Field(3, ge=1)

    sweep_interval_seconds: float = Field(2.0, gt=0)
    stale_queued_seconds: float = Field(5.0, gt=0)


def queue_for_task(task: str, settings: WorkerSettings | None = None) -> str:
    """The Celery queue (and ledger queue) of a task kind, e.g. 'lensq.caption'."""
    prefix = (settings or WorkerSettings()).queue_prefix
    return f"{prefix}.{task}"


def all_queues(settings: WorkerSettings | None = None) -> list[str]:
    """Every queue a worker serves by default, one per task kind."""
    return [queue_for_task(task, settings) for task in TASK_KINDS]
