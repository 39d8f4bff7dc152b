"""A job as the web page shows it: its fields for the live list and a one-line summary of its result."""
from __future__ import annotations

from typing import Any

from db.models import Job


def _top_label(result: dict[str, Any]) -> str:
    label = result.get("label")
    scores = result.get("probabilities") or result.get("scores") or {}
    score = scores.get(label) if isinstance(scores, dict) else None
    return f"{label} ({score:.0%})" if isinstance(score, (int, float)) else str(label)


def result_summary(result: dict[str, Any] | None) -> str:
    """The result in a few words: the caption, the answer, or the top label with its score."""
    if not result:
        return ""
    for name in ("caption", "answer"):
        if isinstance(result.get(name), str):
            return result[name]
    if "label" in result:
        return _top_label(result)
    return ", ".join(f"{name}: {value}" for name, value in result.items())[:300]


def params_summary(params: dict[str, Any] | None) -> str:
    """What the job asked, besides the image: the question, the text, or the labels."""
    params = params or {}
    if params.get("labels"):
        return ", ".join(str(label) for label in params["labels"])
    return str(params.get("question") or params.get("text") or "")


def job_view(job: Job) -> dict[str, Any]:
    """The fields one row of the live list shows (JSON for the event stream)."""
    return {
        "id": str(job.id), "task": job.task, "status": job.status, "asked": params_summary(job.params),
        "summary": result_summary(job.result), "error": job.error, "image_sha256": job.image_sha256,
        "batch_id": str(job.batch_id) if job.batch_id else None, "batch_index": job.batch_index,
        "created_at": job.created_at.isoformat(), "updated_at": job.updated_at.isoformat(),
    }
