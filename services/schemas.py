"""The API's schema families (JobCreate, JobPublic, JobsPublic, BatchCreate, BatchPublic) and their examples."""
from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm.exc import DetachedInstanceError

from db.models import Batch, Job
from services.config import ServiceSettings

TaskName = Literal["caption", "vqa", "sentiment", "classify"]
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ErrorCodeName = Literal["input", "model", "timeout", "dead"]  # db.models.ErrorCode

TINY_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISfHgA0wYRUdtBIA0MoBFD5jqJkAAAAASUVORK5CYII="  # 8x8 red
JOB_ID = "3b241101-e2bb-4255-8caf-4136c566a962"
BATCH_ID = "6f1b7a52-2f4b-4bb2-9d8a-0d6b1f3c9e11"


class JobCreate(BaseModel):
    """One job as JSON: the task, a base64 data: URL image, and the task's fields."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName
    image: str = Field(description="A base64 data: URL; the type is sniffed from the bytes.")
    question: str | None = Field(None, description="vqa only (required there).")
    text: str | None = Field(None, description="sentiment only: the post's text.")
    labels: list[str] | None = Field(None, description="classify only: 2 to 50 candidate labels.")
    priority: int = Field(0, description="Higher runs first.")
    ref: str | None = Field(None, description="Your own reference, echoed back.")
    callback_url: str | None = Field(None, description="Where to POST the job's final event (signed); default: the "
                                     "tenant's webhook_url.")
    model: str | None = Field(None, description="A base model or one of your fine-tuned versions (GET /v1/models); "
                              "default: your default version for the task, if one was promoted, else the base model.")


class JobCreateForm(BaseModel):
    """One job as multipart/form-data: the image as a file part, the other fields as form fields."""

    task: TaskName
    image: bytes = Field(json_schema_extra={"format": "binary"})
    question: str | None = None
    text: str | None = None
    labels: list[str] | None = Field(None, description="Repeat the field, or send one JSON array.")
    priority: int = 0
    ref: str | None = None
    callback_url: str | None = None
    model: str | None = None


class BatchItem(BaseModel):
    """One item of a batch; `task` and `priority` default to the batch's."""

    model_config = ConfigDict(extra="forbid")

    image: str
    task: TaskName | None = None
    question: str | None = None
    text: str | None = None
    labels: list[str] | None = None
    priority: int | None = None
    ref: str | None = None
    model: str | None = None


class BatchCreate(BaseModel):
    """Many jobs in one request."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName | None = None
    priority: int = 0
    items: list[BatchItem]
    model: str | None = Field(None, description="The items' model unless an item names its own.")
    callback_url: str | None = Field(None, description="Where to POST one batch.completed event when every job is "
                                     "final (its jobs send none of their own); default: the tenant's webhook_url.")


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: uuid.UUID
    task: TaskName
    status: StatusName
    params: dict[str, Any]
    priority: int
    ref: str | None
    batch_id: uuid.UUID | None
    image_sha256: str
    result: dict[str, Any] | None
    error: str | None
    error_code: ErrorCodeName | None = Field(
        None, description="Why it failed: its input, the model, its time limit, or its worker lost on every attempt.")
    attempts: int
    model_version: str | None
    model: str | None = Field(None, description="The model it asked for: a fine-tuned version's name, or the base "
                              "model; model_version is the exact build that ran it.")
    callback_url: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id, task=job.task, status=job.status, params=job.params or {}, priority=job.priority, ref=job.ref,
            batch_id=job.batch_id, image_sha256=job.image_sha256, result=job.result, error=job.error,
            error_code=job.error_code, attempts=job.attempts, model_version=job.model_version, model=_model_name(job),
            callback_url=job.callback_url,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        )


@functools.cache
def base_model_name() -> str:
    """The model a job that runs on no version runs on: the service's first base model."""
    return ServiceSettings().fine_tune_base_models[0]


def _model_name(job: Job) -> str | None:
    if job.model_version_id is None:
        return base_model_name()
    try:
        return job.requested_version.name
    except DetachedInstanceError:  # a job read by a session already closed: what its worker recorded, if any
        return job.model_version


class JobsPublic(BaseModel):
    """A page of jobs, newest first; pass next_cursor as `cursor` for the next page."""

    data: list[JobPublic]
    next_cursor: str | None


class BatchPublic(BaseModel):
    """A batch with its counts per status and its progress."""

    id: uuid.UUID
    total: int
    counts: dict[str, int]
    done: int
    progress: float
    finished: bool
    callback_url: str | None = None
    created_at: datetime
    results_url: str

    @classmethod
    def from_row(cls, batch: Batch, counts: dict[str, int]) -> BatchPublic:
        done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        return cls(
            id=batch.id, total=batch.total, counts=counts, done=done,
            progress=round(done / batch.total, 4) if batch.total else 1.0, finished=done >= batch.total,
            callback_url=batch.callback_url, created_at=batch.created_at, results_url=f"/v1/batches/{batch.id}/results",
        )


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx: which field, and why."""

    error: ErrorDetail


# --- examples -----------------------------------------------------------------------------------

JOB_EXAMPLE = {
    "id": JOB_ID, "task": "vqa", "status": "succeeded", "params": {"question": "what shape is this?"},
    "priority": 0, "ref": "shape-001.png", "batch_id": None, "image_sha256": "9f2d" + "0" * 60,
    "result": {"answer": "circle"}, "error": None, "attempts": 1, "model_version": "lensq-tiny@3f2a9c1e",
    "model": "lensq-tiny",
    "created_at": "2026-01-01T12:00:00Z", "started_at": "2026-01-01T12:00:01Z", "finished_at": "2026-01-01T12:00:02Z",
}
QUEUED_JOB_EXAMPLE = {**JOB_EXAMPLE, "status": "queued", "result": None, "attempts": 0, "model_version": None,
                      "started_at": None, "finished_at": None}
BATCH_EXAMPLE = {
    "id": BATCH_ID, "total": 3, "counts": {"queued": 1, "running": 0, "succeeded": 2, "failed": 0, "cancelled": 0},
    "done": 2, "progress": 0.6667, "finished": False, "created_at": "2026-01-01T12:00:00Z",
    "results_url": f"/v1/batches/{BATCH_ID}/results",
}
JOB_CREATE_EXAMPLES = {
    "caption": {"summary": "Caption an image", "value": {"task": "caption", "image": TINY_PNG}},
    "vqa": {"summary": "Ask a question", "value": {"task": "vqa", "image": TINY_PNG, "question": "what color is it?"}},
    "sentiment": {"summary": "Sentiment of a post", "value": {"task": "sentiment", "image": TINY_PNG, "text": "best day ever"}},
    "classify": {"summary": "Zero-shot classification",
                 "value": {"task": "classify", "image": TINY_PNG, "labels": ["cat", "dog", "rocket"]}},
}
BATCH_CREATE_EXAMPLE = {
    "task": "caption",
    "items": [{"image": TINY_PNG, "ref": "a.png"},
              {"image": TINY_PNG, "task": "vqa", "question": "what color is it?", "ref": "b.png"}],
}
RESULT_LINE_EXAMPLE = (
    '{"index": 0, "job_id": "' + JOB_ID + '", "ref": "a.png", "task": "caption", "status": "succeeded", '
    '"result": {"caption": "a red circle"}, "error": null}\n'
)


def inline_schema(model: type[BaseModel]) -> dict:
    """A model's JSON schema with its nested definitions inlined (for a request body in openapi_extra)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


def example_response(description: str, example: Any, media_type: str = "application/json") -> dict:
    """An OpenAPI response entry carrying an example."""
    return {"description": description, "content": {media_type: {"example": example}}}


def error_response(description: str, field: str, message: str) -> dict:
    """An OpenAPI error response entry with an example body."""
    return {"model": ErrorResponse, **example_response(description, {"error": {"field": field, "message": message}})}


AUTH_ERRORS = {401: error_response("No key, or a bad key", "Authorization", "missing bearer API key")}
