"""The OpenAI-compatible wire shapes: public ids, chat completions and chunks, file and batch objects."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from db.models import Job, OpenAIBatch, StoredFile
from services.errors import InputError

CHAT_PREFIX = "chatcmpl-"
FILE_PREFIX = "file-"
BATCH_PREFIX = "batch_"
BATCH_REQUEST_PREFIX = "batch_req_"
MODERATION_PREFIX = "modr-"
# What a finished job's result holds the assistant's text under, per task the chat surface runs.
CONTENT_KEYS = {"caption": "caption", "vqa": "answer"}


def public_id(prefix: str, row_id: uuid.UUID) -> str:
    """An OpenAI-style id for a ledger row, e.g. file-3b24...; the row's UUID is recoverable from it."""
    return prefix + row_id.hex


def parse_public_id(prefix: str, value: str, field: str) -> uuid.UUID:
    """The row UUID inside an id of ours; a 404 naming `field` for anything else (no such object)."""
    try:
        if value.startswith(prefix):
            return uuid.UUID(hex=value.removeprefix(prefix))
    except ValueError:
        pass
    raise InputError(field, f"no {field.removesuffix('_id')} with this id", 404)


def unix_time(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def chat_content(job: Job) -> str:
    """The assistant's text for a succeeded caption or vqa job."""
    return str((job.result or {}).get(CONTENT_KEYS.get(job.task, ""), ""))


def chat_completion(job: Job) -> dict[str, Any]:
    """A succeeded job as an OpenAI chat.completion; its id carries the job id (chatcmpl-<job id>)."""
    return {
        "id": f"{CHAT_PREFIX}{job.id}",
        "object": "chat.completion",
        "created": unix_time(job.created_at),
        "model": job.model_version or "",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": chat_content(job)},
                     "logprobs": None, "finish_reason": "stop"}],
        # The API never loads the model's tokenizer (it stays torch-free), so it cannot count tokens: zeros, not guesses.
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": job.model_version,
    }


def chat_chunks(job: Job) -> list[dict[str, Any]]:
    """A succeeded job as the chat.completion.chunk events of a stream: role, content, then the finish reason."""
    head = {"id": f"{CHAT_PREFIX}{job.id}", "object": "chat.completion.chunk", "created": unix_time(job.created_at),
            "model": job.model_version or "", "system_fingerprint": job.model_version}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": chat_content(job)}, None), ({}, "stop")]
    return [{**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            for delta, reason in deltas]


def file_object(row: StoredFile) -> dict[str, Any]:
    """A stored file in the OpenAI Files shape."""
    return {
        "id": public_id(FILE_PREFIX, row.id), "object": "file", "bytes": row.size_bytes,
        "created_at": unix_time(row.created_at), "filename": row.filename, "purpose": row.purpose,
        "status": "processed", "status_details": None, "expires_at": None,
    }


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """An OpenAI list page."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def batch_object(row: OpenAIBatch, *, status: str, counts: dict[str, int], completed_at: datetime | None,
                 errors: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An OpenAI batch object; status and counts are computed from the LensQ batch's jobs by the caller."""
    def file_id(value: uuid.UUID | None) -> str | None:
        return public_id(FILE_PREFIX, value) if value else None

    return {
        "id": public_id(BATCH_PREFIX, row.id), "object": "batch", "endpoint": row.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": file_id(row.input_file_id), "completion_window": row.completion_window, "status": status,
        "output_file_id": file_id(row.output_file_id), "error_file_id": file_id(row.error_file_id),
        "created_at": unix_time(row.created_at), "in_progress_at": unix_time(row.created_at),
        "expires_at": None, "finalizing_at": unix_time(row.finalized_at), "completed_at": unix_time(completed_at),
        "failed_at": unix_time(row.finalized_at) if status == "failed" else None, "expired_at": None,
        "cancelling_at": unix_time(row.cancelled_at),
        "cancelled_at": unix_time(row.finalized_at) if status == "cancelled" else None,
        "request_counts": counts, "metadata": row.batch_metadata,
        "lensq_batch_id": str(row.batch_id) if row.batch_id else None,
    }
