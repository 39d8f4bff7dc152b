"""SQLAlchemy 2 models of the ledger: tenants, keys, images, batches, jobs, files, moderation, webhooks, audit."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Boolean,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Task(str, enum.Enum):
    """What a job asks of the model."""

    caption = "caption"
    vqa = "vqa"
    sentiment = "sentiment"
    classify = "classify"


class JobStatus(str, enum.Enum):
    """Where a job is in its life; the last three are final."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
KEY_SCOPES = ("submit", "read", "admin")
ACTIVE_SQL = "status IN ('queued', 'running')"


class ErrorCode(str, enum.Enum):
    """Why a job failed, as a stable word a client can filter on (the `error` text says more)."""

    input = "input"  # the job's own input could not be used (bad image, bad fields)
    model = "model"  # the model raised on this job
    timeout = "timeout"  # the job ran past its time limit
    dead = "dead"  # its worker was lost on each of max_attempts tries


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_id() -> uuid.UUID:
    """A fresh random id."""
    return uuid.uuid4()


class UtcDateTime(TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _in_values(column: str, enum_cls: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(m.value) for m in enum_cls)})"


class Base(DeclarativeBase):
    """Declarative base of every LensQ table."""

    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, uuid.UUID: Uuid}


class Tenant(Base):
    """A customer: owns keys, images, batches and jobs."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Fetching images from http(s) URLs is off unless an admin turns it on for the tenant.
    allow_image_urls: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # How many of the tenant's jobs may wait or run at once; None: the service's default.
    max_active_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    # Where the tenant's job and batch events are POSTed when a job or batch names no callback of its own.
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The HMAC-SHA256 key of every webhook sent for this tenant; it must be readable to sign, so it is not hashed.
    webhook_secret: Mapped[str | None] = mapped_column(String(128), default=None)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """A bearer key; only the sha256 of the token is stored, plus a short prefix to recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Space-separated subset of KEY_SCOPES.
    scopes: Mapped[str] = mapped_column(String(100), default="submit read", server_default="submit read")
    # Requests per minute allowed to this key; None: the service's default.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class Image(Base):
    """An uploaded image, content-addressed by its sha256 within a tenant; stored once."""

    __tablename__ = "images"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(Base):
    """Many jobs submitted together; its counts are computed from its jobs."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_tenant_idempotency", "tenant_id", "idempotency_key", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    total: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # Receives the batch's events (its end); None: the tenant's webhook_url, if any.
    callback_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One request to the model for one image; the unit a worker claims, leases and finishes."""

    __tablename__ = "jobs"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "image_sha256"], ["images.tenant_id", "images.sha256"], ondelete="CASCADE"),
        CheckConstraint(_in_values("task", Task), name="ck_jobs_task"),
        CheckConstraint(_in_values("status", JobStatus), name="ck_jobs_status"),
        Index("ix_jobs_claim", "queue", "status", "priority", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_batch", "batch_id", "batch_index"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # Workers renew their leases every few seconds by token: without this, each renewal scans the whole table.
        Index("ix_jobs_lease_token", "lease_token"),
        Index("ix_jobs_tenant_idempotency", "tenant_id", "idempotency_key", unique=True),
        Index("ix_jobs_tenant_error_code", "tenant_id", "error_code"),
        # The web page's live list reads a tenant's jobs changed since its last poll, twice a second per open page.
        Index("ix_jobs_tenant_updated", "tenant_id", "updated_at"),
        # The quota check counts a tenant's queued and running jobs: cheap however long its history.
        Index("ix_jobs_tenant_active", "tenant_id", postgresql_where=text(ACTIVE_SQL), sqlite_where=text(ACTIVE_SQL)),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    image_sha256: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), default=None)
    batch_index: Mapped[int | None] = mapped_column(Integer, default=None)
    ref: Mapped[str | None] = mapped_column(String(500), default=None)
    task: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(16), default=None)
    model_version: Mapped[str | None] = mapped_column(String(200), default=None)
    # Receives the job's final event; None: the tenant's webhook_url, if any (a batch's jobs send none of their own).
    callback_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The tenant's fine-tuned version the job asked for; None: the worker's base model.
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT", name="fk_jobs_model_version_id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    rung_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    image: Mapped[Image] = relationship(viewonly=True)
    # The version it asked for, read for the job's public `model` name (its weights are deferred, never read here).
    requested_version: Mapped[ModelVersion | None] = relationship(viewonly=True)


class StoredFile(Base):
    """A file a tenant uploaded (OpenAI Files shape: batch input, fine-tune data) or LensQ wrote (batch output)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OpenAIBatch(Base):
    """An OpenAI Batch API request: an input file of JSONL requests, run as one LensQ batch, answered as files."""

    __tablename__ = "openai_batches"
    __table_args__ = (Index("ix_openai_batches_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # The LensQ batch running the valid lines; None when no line was valid (everything is in the error file).
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), default=None)
    input_file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    output_file_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), default=None)
    error_file_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), default=None)
    endpoint: Mapped[str] = mapped_column(String(100))
    completion_window: Mapped[str] = mapped_column(String(16), default="24h")
    # "metadata" is reserved by SQLAlchemy's declarative classes, hence the attribute name.
    batch_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", default=None)
    # Lines refused at intake (bad JSON, unknown url, bad body), one error-file line each: [{line, custom_id, ...}].
    intake_errors: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the output and error files were written: the batch is then completed (or cancelled).
    finalized_at: Mapped[datetime | None] = mapped_column(default=None)


class ModerationPolicy(Base):
    """One version of a tenant's moderation policy; versions are never edited, a change is a new version."""

    __tablename__ = "moderation_policies"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # {category: {"labels": [prompt, ...], "against": [prompt, ...], "threshold": float, ...}}
    categories: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModerationDecision(Base):
    """One moderation verdict as it was made: its input's hash, the model and policy versions, the scores."""

    __tablename__ = "moderation_decisions"
    __table_args__ = (
        Index("ix_moderation_decisions_tenant_created", "tenant_id", "created_at"),
        Index("ix_moderation_decisions_tenant_review", "tenant_id", "review_status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # sha256 over the whole input (image bytes' hash and text); the image itself is kept by its own sha256.
    input_sha256: Mapped[str] = mapped_column(String(64))
    image_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    model_version: Mapped[str | None] = mapped_column(String(200), default=None)
    policy_version: Mapped[int] = mapped_column(Integer)
    flagged: Mapped[bool] = mapped_column(Boolean)
    categories: Mapped[dict[str, Any]] = mapped_column()
    category_scores: Mapped[dict[str, Any]] = mapped_column()
    category_applied_input_types: Mapped[dict[str, Any]] = mapped_column()
    # Why the item was flagged without scores (fail closed: the model could not score it); None when it was scored.
    failure: Mapped[str | None] = mapped_column(Text, default=None)
    job_ids: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    # "pending" for a flagged item awaiting a reviewer, then "upheld" or "overturned"; None when not flagged.
    review_status: Mapped[str | None] = mapped_column(String(16), default=None)
    reviewer: Mapped[str | None] = mapped_column(String(200), default=None)
    review_note: Mapped[str | None] = mapped_column(Text, default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to POST to a callback URL: an outbox row written with the change it reports, then delivered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))  # e.g. "job.succeeded", "batch.completed"
    subject_id: Mapped[uuid.UUID] = mapped_column()  # the job's or batch's id
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # One entry per attempt, for the tenant's delivery log: [{attempt, at, status_code, error, duration_ms}].
    attempt_log: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    """An append-only record of a decision a person or key made: a review, a policy change, a forced promotion."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))  # e.g. "moderation.review", "moderation.policy"
    subject_id: Mapped[str | None] = mapped_column(String(200), default=None)
    actor: Mapped[str] = mapped_column(String(200))  # the API key's prefix, or a reviewer's name
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FineTuneStatus(str, enum.Enum):
    """Where a fine-tuning job is (OpenAI's words); the last three are final."""

    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class FineTuningJob(Base):
    """A tenant's request to adapt the base model to its data: claimed, leased and checkpointed like a job."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        CheckConstraint(_in_values("status", FineTuneStatus), name="ck_fine_tuning_jobs_status"),
        CheckConstraint(_in_values("task", Task), name="ck_fine_tuning_jobs_task"),
        Index("ix_fine_tuning_jobs_tenant_created", "tenant_id", "created_at"),
        Index("ix_fine_tuning_jobs_claim", "queue", "status", "created_at"),
        Index("ix_fine_tuning_jobs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    base_model: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100))
    training_file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("files.id", ondelete="RESTRICT"))
    validation_file_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("files.id", ondelete="RESTRICT"),
                                                                default=None)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    # The tenant's own key/value tags (OpenAI's `metadata`); the attribute is renamed as on OpenAIBatch.
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", default=None)
    status: Mapped[str] = mapped_column(String(24), default=FineTuneStatus.queued.value)
    # What the data checks found (split sizes, label counts, warnings): kept for the tenant to read.
    data_report: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # {"code", "message", "param"} once failed (OpenAI's error object).
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200), default=None)
    trained_steps: Mapped[int] = mapped_column(Integer, default=0)
    # The last checkpoint (weights, optimizer, step, RNG, best so far): a resumed run starts from it.
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class FineTuningEvent(Base):
    """One line of a fine-tuning job's progress (step, loss, validation metric) or of its life (claimed, resumed)."""

    __tablename__ = "fine_tuning_events"
    __table_args__ = (Index("ix_fine_tuning_events_job", "job_id", "id"),)

    # An increasing integer: clients page and stream events by it.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FineTuningExample(Base):
    """One checked training example of a fine-tuning job, in its split; the image is stored once in `images`."""

    __tablename__ = "fine_tuning_examples"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "image_sha256"], ["images.tenant_id", "images.sha256"], ondelete="CASCADE"),
        CheckConstraint("split IN ('train', 'validation', 'test')", name="ck_fine_tuning_examples_split"),
        Index("ix_fine_tuning_examples_job_split", "job_id", "split", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(16))
    line: Mapped[int] = mapped_column(Integer)  # the line of its file (1-based), for reports naming bad lines
    image_sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    # The label (sentiment, classify), the answer (vqa) or the caption (caption).
    target: Mapped[str] = mapped_column(Text)


class ModelVersion(Base):
    """A tenant's fine-tuned model: only what was trained (adapter, head, projector), over a named base model."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in_values("task", Task), name="ck_model_versions_task"),
        Index("ix_model_versions_tenant_name", "tenant_id", "name", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))  # e.g. "ft:lensq-tiny:acme:posts:1f3a9c"
    base_model: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(16))
    fine_tuning_job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("fine_tuning_jobs.id", ondelete="SET NULL"), default=None)
    # safetensors bytes of the trained parts; workers key their adapter cache by the sha256.
    weights: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The classification report on the test split, the validation curve, the early-stopping step, the base's score.
    eval: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantDefaultModel(Base):
    """Which version serves a tenant's jobs of a task that name none; set only through the promotion gate."""

    __tablename__ = "tenant_default_models"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    # True when the tenant forced it past the gate (an audit event records who and why).
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    promoted_at: Mapped[datetime] = mapped_column(default=utcnow)
