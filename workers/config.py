"""Settings of the workers package: broker, queues, model and batching, leases, time limits and the sweeper."""
import functools
import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_KINDS = ("caption", "vqa", "sentiment", "classify")


class WorkerSettings(BaseSettings):
    """Worker settings, read from LENSQ_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore", protected_namespaces=())

    broker_url: str = "redis://127.0.0.1:6379/0"
    queue_prefix: str = "lensq"
    # Longer than any message can run (see message_time_limit): a doorbell is redelivered only after this (Redis).
    visibility_timeout_seconds: int = 6 * 3600

    model: str = "lensq-tiny"
    device: str = "auto"
    quantize: str | None = None

    batch_size: int = Field(32, ge=1, le=1024)
    # Before claiming, wait up to this long for the queue to hold a full batch; the wait ends early once the
    # queue stops growing between two polls, so a lone job at light load waits one poll, not the whole window.
    batch_fill_wait_seconds: float = Field(0.05, ge=0)
    batch_fill_poll_seconds: float = Field(0.005, gt=0)
    max_batches_per_message: int = Field(8, ge=1)
    # Under a backlog, claim and decode the next batch on another thread while the model runs the current one.
    claim_ahead: bool = True
    # And run that batch's images through the vision tower there too, so the model's thread runs only the LM:
    # torch releases the GIL, so on two cores the tower and the LM run side by side.
    encode_ahead: bool = True
    # Image embeddings kept per worker (keyed by image sha256 and model version): a repeated image is not re-encoded.
    embedding_cache_size: int = Field(256, ge=0)
    # Tenants' fine-tuned versions kept applied over the base model per worker (workers/adapters.py), least recently
    # used out: each holds only its trained parts (adapter, head), so a worker serves many tenants' versions.
    tuned_model_cache_size: int = Field(8, ge=1)
    # Threads that decode and resize a batch's images off the model's thread.
    preprocess_threads: int = Field(2, ge=1)
    lease_seconds: float = Field(120.0, gt=0)
    max_attempts: int = Field(3, ge=1)

    # One model call gets this long: a batch's batched call, or one job alone when its batch is re-run one by one.
    job_time_limit_seconds: float = Field(300.0, gt=0)
    # A call still running this long after its limit is stuck where Python cannot interrupt it: the process exits.
    time_limit_grace_seconds: float = Field(30.0, gt=0)
    # A doorbell claims no new batch after this long; it rings again instead, so no message holds a worker for long.
    message_soft_time_limit_seconds: float = Field(600.0, gt=0)
    # Celery's soft shutdown (cold shutdown only): 0 for the solo pool, see workers.celery_app.delivery_settings.
    soft_shutdown_seconds: float = Field(0.0, ge=0)

    sweep_interval_seconds: float = Field(2.0, gt=0)
    stale_queued_seconds: float = Field(5.0, gt=0)

    # Fine-tuning (workers/fine_tuning.py), served only by workers started for the train queue
    # (`lensq worker --queues lensq.train`). A cancel is seen within poll seconds; a `metrics` event is written at
    # every validation and otherwise at most once per progress seconds; a queued job untouched this long is rung
    # again (long: a deployment without a training worker would otherwise fill the broker with doorbells).
    fine_tune_poll_seconds: float = Field(2.0, gt=0)
    fine_tune_progress_seconds: float = Field(2.0, gt=0)
    fine_tune_stale_queued_seconds: float = Field(60.0, gt=0)

    # Webhooks (workers/webhook_delivery.py): a deliverer thread in each worker POSTs the outbox's due events.
    webhook_delivery_enabled: bool = True
    # How often an idle deliverer looks for due events written by other processes (its own worker wakes it at once).
    webhook_poll_seconds: float = Field(1.0, gt=0)
    webhook_batch_size: int = Field(20, ge=1)
    webhook_concurrency: int = Field(4, ge=1)
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    # Attempt n waits base * 2^(n-1) seconds (at most max), times a random 0.8-1.2; then the delivery is failed.
    webhook_max_attempts: int = Field(10, ge=1)
    webhook_retry_base_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    # CIDRs a webhook may reach although they are private or loopback: empty in production; tests add 127.0.0.1/32.
    webhook_allow_cidrs: list[str] = Field(default_factory=list)

    # Operations (workers/metrics.py, workers/worker_logs.py): each worker process serves Prometheus metrics on this
    # port (0: off), and logs as text (Celery's format) or as one JSON object per line.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log_format: Literal["text", "json"] = "text"

    # Test-only fault injection (see workers/faults.py): off unless LENSQ_FAULT_INJECTION=1 on the worker.
    fault_injection: bool = False
    fault_stall_seconds: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _message_limit_below_visibility_timeout(self) -> "WorkerSettings":
        if message_time_limit(self) >= self.visibility_timeout_seconds:
            raise ValueError(f"a message may run {message_time_limit(self):.0f}s, not below the broker's visibility "
                             f"timeout of {self.visibility_timeout_seconds}s: lower the time limits or raise it")
        return self


def current_settings() -> WorkerSettings:
    """The settings the environment gives now, built once per distinct set of LENSQ_* variables.

    Building WorkerSettings reads and validates every field (about 1.5 ms); a doorbell that did it on each message
    paid that on every lone job's path. The cache key is the variables themselves, so a changed environment (a
    test's, or a deployment's restart) is still read. Treat the result as read-only: callers share it."""
    return _settings_for(tuple(sorted((name, value) for name, value in os.environ.items()
                                      if name.upper().startswith("LENSQ_"))))


@functools.lru_cache(maxsize=8)
def _settings_for(_environment: tuple[tuple[str, str], ...]) -> WorkerSettings:
    return WorkerSettings()


def worst_batch_seconds(settings: WorkerSettings) -> float:
    """The longest one batch can take: its batched call, then each job alone, each cut off at its hard limit."""
    return (settings.batch_size + 1) * (settings.job_time_limit_seconds + settings.time_limit_grace_seconds)


def message_time_limit(settings: WorkerSettings) -> float:
    """The hard limit of one doorbell: batches start only before the soft limit, and each is bounded."""
    return settings.message_soft_time_limit_seconds + worst_batch_seconds(settings) + settings.time_limit_grace_seconds


def queue_for_task(task: str, settings: WorkerSettings | None = None) -> str:
    """The Celery queue (and ledger queue) of a task kind, e.g. 'lensq.caption'."""
    prefix = (settings or WorkerSettings()).queue_prefix
    return f"{prefix}.{task}"


def train_queue(settings: WorkerSettings | None = None) -> str:
    """The fine-tuning queue, e.g. 'lensq.train': served only by workers started for it, never by default."""
    return queue_for_task("train", settings)


def all_queues(settings: WorkerSettings | None = None) -> list[str]:
    """Every queue a worker serves by default, one per task kind."""
    return [queue_for_task(task, settings) for task in TASK_KINDS]
