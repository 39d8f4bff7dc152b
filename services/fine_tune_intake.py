"""Turns a checked create request into a stored fine-tuning job: reads its files, checks and carves the data, and
stores job, images, examples and first events in one transaction."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from db.fine_tuning_jobs import (
    NewEvent,
    NewFineTuningJob,
    count_active_fine_tunes,
    create_fine_tuning_job,
    known_image_hashes,
)
from db.models import FineTuningJob
from db.openai_files import get_file
from db.queries import lock_tenant_jobs
from services.config import ServiceSettings
from services.deps import CurrentTenant
from services.errors import InputError, found
from services.fine_tune_data import ParsedFile, check_references, parse_file, raise_line_errors
from services.fine_tune_request import FineTuneRequest, resolve_hyperparameters
from services.fine_tune_splits import (
    SplitPlan,
    carve_splits,
    check_leakage,
    check_sizes,
    duplicate_warnings,
    label_warnings,
)
from services.openai_shapes import FILE_PREFIX, parse_public_id, public_id
from services.rate_limits import QUOTA_RETRY_AFTER_SECONDS
from workers.celery_app import SETTINGS as WORKER_SETTINGS, queue_for_task

FTJOB_PREFIX = "ftjob-"
TRAIN_QUEUE_TASK = "train"


def _file_data(session: Session, tenant_id: uuid.UUID, file_id: str, field: str) -> tuple[uuid.UUID, bytes]:
    row = found(get_file(session, tenant_id=tenant_id, file_id=parse_public_id(FILE_PREFIX, file_id, field),
                         with_data=True), field)
    if row.purpose != "fine-tune":
        raise InputError(field, f"the file's purpose is {row.purpose!r}; upload it with purpose fine-tune", 400)
    return row.id, row.data


def _checked_file(session: Session, tenant_id: uuid.UUID, data: bytes, field: str, request: FineTuneRequest,
                  settings: ServiceSettings) -> ParsedFile:
    parsed = parse_file(data, file_field=field, task=request.task, labels=request.labels, settings=settings)
    referenced = [line.image_sha256 for line in parsed.lines if not line.uploaded]
    check_references(parsed, known_image_hashes(session, tenant_id=tenant_id, hashes=referenced))
    raise_line_errors(parsed, settings)
    return parsed


def _report(request: FineTuneRequest, plan: SplitPlan, files: list[ParsedFile],
            settings: ServiceSettings) -> dict[str, Any]:
    return {
        "files": {parsed.field: {"lines": parsed.line_count, "examples": len(parsed.lines)} for parsed in files},
        "splits": plan.sizes(),
        "label_counts": plan.label_counts() if request.labels else None,
        "labels": list(request.labels) or None,
        "carving": {"test_fraction": settings.fine_tune_test_fraction,
                    "validation_fraction": None if len(files) > 1 else settings.fine_tune_validation_fraction,
                    "kept_together": "examples with the same image and text"},
        "warnings": plan.warnings,
    }


def _events(job_id: uuid.UUID, report: dict[str, Any]) -> list[NewEvent]:
    sizes = report["splits"]
    validated = NewEvent(f"Validated files: {sum(sizes.values())} examples (train {sizes['train']}, validation "
                         f"{sizes['validation']}, test {sizes['test']}), {len(report['warnings'])} warning(s)",
                         data={key: report[key] for key in ("splits", "label_counts", "warnings")})
    return [NewEvent(f"Created fine-tuning job: {public_id(FTJOB_PREFIX, job_id)}"), validated,
            *[NewEvent(warning["message"], level="warn", data=warning) for warning in report["warnings"]]]


def store_fine_tuning_job(session: Session, tenant: CurrentTenant, settings: ServiceSettings,
                          request: FineTuneRequest) -> FineTuningJob:
    """Checks the request's files (a 400 naming the file and its bad lines), carves the splits, stores it all and
    commits; the caller rings the train queue after."""
    training_id, training_data = _file_data(session, tenant.id, request.training_file, "training_file")
    validation_id, validation_data = (None, None) if request.validation_file is None else _file_data(
        session, tenant.id, request.validation_file, "validation_file")
    session.rollback()  # the files are read; checking their lines may take a while
    training = _checked_file(session, tenant.id, training_data, "training_file", request, settings)
    validation = None if validation_data is None else _checked_file(
        session, tenant.id, validation_data, "validation_file", request, settings)
    if validation is not None:
        check_leakage(training, validation, settings)
    plan = carve_splits(request.task, training, validation, settings)
    check_sizes(plan, training, validation, settings)
    files = [training] + ([validation] if validation is not None else [])
    plan.warnings = [w for parsed in files for w in duplicate_warnings(parsed, settings)]
    plan.warnings += label_warnings(plan, request.labels, settings) if request.labels else []
    report = _report(request, plan, files, settings)
    job_id = uuid.uuid4()
    new = NewFineTuningJob(
        id=job_id, base_model=request.model, task=request.task,
        queue=queue_for_task(TRAIN_QUEUE_TASK, WORKER_SETTINGS), training_file_id=training_id,
        validation_file_id=validation_id, suffix=request.suffix, metadata=request.metadata, data_report=report,
        hyperparameters=resolve_hyperparameters(request.hyperparameters, train_examples=plan.sizes()["train"],
                                                labels=request.labels, task=request.task, settings=settings),
        max_attempts=settings.max_attempts, examples=plan.examples,
        images=[image for parsed in files for image in parsed.images.values()], events=_events(job_id, report))
    check_fine_tune_quota(session, tenant.id, settings.fine_tune_max_active_per_tenant)
    job = create_fine_tuning_job(session, tenant_id=tenant.id, new=new)
    session.commit()
    return job


def check_fine_tune_quota(session: Session, tenant_id: uuid.UUID, limit: int) -> None:
    """A 429 when the tenant already has `limit` fine-tunes waiting or training; checked under the tenant's lock, so
    concurrent requests in any API process cannot overshoot (the insert that follows is in the same transaction)."""
    lock_tenant_jobs(session, tenant_id=tenant_id)
    active = count_active_fine_tunes(session, tenant_id=tenant_id)
    if active >= limit:
        raise InputError("fine_tuning_jobs", f"this tenant has {active} fine-tuning jobs queued or running and may "
                         f"have {limit}; retry once one has finished", 429,
                         {"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})
