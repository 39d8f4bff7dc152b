"""Model versions in the ledger: a tenant's versions by name, its default per task, and the promotion gate."""
from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, ModelVersion, Tenant, TenantDefaultModel, utcnow
from db.session import is_postgres

PROMOTE_KIND = "model.promote"
FORCED_PROMOTE_KIND = "model.promote.forced"


def get_model_version(session: Session, *, tenant_id: uuid.UUID, name: str) -> ModelVersion | None:
    """The tenant's version of this name, or None (another tenant's version is None too)."""
    return session.scalar(select(ModelVersion).where(ModelVersion.tenant_id == tenant_id, ModelVersion.name == name))


def list_model_versions(session: Session, *, tenant_id: uuid.UUID) -> list[ModelVersion]:
    """The tenant's versions, newest first (their weights are not read)."""
    order = (ModelVersion.created_at.desc(), ModelVersion.id.desc())
    return list(session.scalars(select(ModelVersion).where(ModelVersion.tenant_id == tenant_id).order_by(*order)))


def tenant_default_versions(session: Session, *, tenant_id: uuid.UUID) -> dict[str, ModelVersion]:
    """The version each task of the tenant defaults to, for the tasks that have one."""
    rows = session.execute(
        select(TenantDefaultModel.task, ModelVersion)
        .join(ModelVersion, ModelVersion.id == TenantDefaultModel.model_version_id)
        .where(TenantDefaultModel.tenant_id == tenant_id)
    )
    return {task: version for task, version in rows}


def default_version(session: Session, *, tenant_id: uuid.UUID, task: str) -> ModelVersion | None:
    """The version the tenant's jobs of `task` that name no model run on; None: the base model."""
    return session.scalar(
        select(ModelVersion)
        .join(TenantDefaultModel, ModelVersion.id == TenantDefaultModel.model_version_id)
        .where(TenantDefaultModel.tenant_id == tenant_id, TenantDefaultModel.task == task)
    )


@functools.cache
def _default_version_id_statement():
    return select(TenantDefaultModel.model_version_id).where(
        TenantDefaultModel.tenant_id == bindparam("default_tenant"), TenantDefaultModel.task == bindparam("default_task"))


def default_version_id(session: Session, *, tenant_id: uuid.UUID, task: str) -> uuid.UUID | None:
    """default_version's id alone, by a statement built once: every single submission naming no model asks it."""
    return session.scalar(_default_version_id_statement(), {"default_tenant": tenant_id, "default_task": task})


@dataclass(frozen=True)
class VersionHeader:
    """What a worker checks before it loads a version's weights: its cache key and its base model."""

    id: uuid.UUID
    name: str
    task: str
    base_model: str
    weights_sha256: str


def version_header(session: Session, *, version_id: uuid.UUID) -> VersionHeader | None:
    """A version's name, task, base model and weights' hash, without its weights; None if it is gone."""
    row = session.execute(
        select(ModelVersion.id, ModelVersion.name, ModelVersion.task, ModelVersion.base_model,
               ModelVersion.weights_sha256).where(ModelVersion.id == version_id)
    ).first()
    return VersionHeader(*row) if row else None


def version_parts(session: Session, *, version_id: uuid.UUID) -> tuple[bytes, dict[str, Any]] | None:
    """A version's stored weights (safetensors bytes) and config; None if it is gone."""
    # Named as columns, the deferred weights are read: only here, where a worker loads the version.
    row = session.execute(select(ModelVersion.weights, ModelVersion.config).where(ModelVersion.id == version_id)).first()
    return (row.weights, row.config or {}) if row else None


# --- the promotion gate -----------------------------------------------------------------------------

def eval_metric(evaluation: dict[str, Any] | None, *path: str) -> float | None:
    """The number at evaluation[path...]["metric"], or None when the eval has no such figure."""
    node: Any = evaluation or {}
    for key in (*path, "metric"):
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def gate_refusal(version: ModelVersion, current_default: str) -> str | None:
    """Why the gate refuses to make `version` the default (None: it may): its test metric must beat the
    baseline's on the same split, and that baseline must still be the default it would replace."""
    if version.name == current_default:
        return f"{version.name} is already the default for {version.task}"
    metric, baseline_metric = eval_metric(version.eval, "test"), eval_metric(version.eval, "baseline", "test")
    baseline_info = version.eval.get("baseline") if isinstance(version.eval, dict) else None
    baseline = baseline_info.get("model") if isinstance(baseline_info, dict) else None
    if metric is None or baseline_metric is None or not baseline:
        return f"{version.name} has no test metric and baseline to compare; fine-tune again or force it with a reason"
    if baseline != current_default:
        return (f"{version.name} was compared with {baseline}, but the default for {version.task} is now "
                f"{current_default}; a new fine-tune gives a fresh comparison, or force it with a reason")
    if metric <= baseline_metric:
        return (f"{version.name} scores {metric:.4f} on its test split, not above {baseline}'s {baseline_metric:.4f}; "
                "force it with a reason to promote it anyway")
    return None


@dataclass(frozen=True)
class Promotion:
    """A promotion that was recorded: the new default and the audit event that tells who made it and why."""

    default: TenantDefaultModel
    previous: str
    audit_event: AuditEvent


class GateRefused(Exception):
    """The version does not pass the promotion gate; the message says why."""


def _lock_tenant(session: Session, tenant_id: uuid.UUID) -> None:
    # Promotions of one tenant run one at a time, so each compares against the default it replaces.
    stmt = select(Tenant.id).where(Tenant.id == tenant_id)
    session.execute(stmt.with_for_update() if is_postgres(session) else stmt)


def promote_version(session: Session, *, tenant_id: uuid.UUID, version: ModelVersion, force: bool, actor: str,
                    reason: str | None) -> Promotion:
    """Makes `version` the tenant's default for its task if it passes the gate (or `force`), with its audit event,
    in the caller's transaction; GateRefused when it does not pass."""
    _lock_tenant(session, tenant_id)
    current = session.get(TenantDefaultModel, (tenant_id, version.task), populate_existing=True)
    previous_version = session.get(ModelVersion, current.model_version_id) if current else None
    previous = previous_version.name if previous_version else version.base_model
    refusal = gate_refusal(version, previous)
    if refusal is not None and not (force and previous != version.name):
        raise GateRefused(refusal)
    forced, now = refusal is not None, utcnow()  # forced past the gate; a force the gate did not need is no force
    if current is None:
        current = TenantDefaultModel(tenant_id=tenant_id, task=version.task)
        session.add(current)
    current.model_version_id, current.forced, current.promoted_at = version.id, forced, now
    detail = {"model": version.name, "task": version.task, "previous": previous, "forced": forced, "reason": reason,
              "test_metric": eval_metric(version.eval, "test"),
              "baseline_metric": eval_metric(version.eval, "baseline", "test"), "gate": refusal or "passed"}
    event = AuditEvent(tenant_id=tenant_id, kind=FORCED_PROMOTE_KIND if forced else PROMOTE_KIND,
                       subject_id=version.name, actor=actor, detail=detail, created_at=now)
    session.add(event)
    session.flush()
    return Promotion(default=current, previous=previous, audit_event=event)


DEMOTE_KIND = "model.demote"


def demote_version(session: Session, *, tenant_id: uuid.UUID, version: ModelVersion, actor: str,
                   reason: str | None) -> AuditEvent | None:
    """Ends `version`'s term as the tenant's default for its task (the base model serves it again), with its audit
    event, in the caller's transaction; None when it is not the default."""
    _lock_tenant(session, tenant_id)
    current = session.get(TenantDefaultModel, (tenant_id, version.task), populate_existing=True)
    if current is None or current.model_version_id != version.id:
        return None
    session.delete(current)
    event = AuditEvent(tenant_id=tenant_id, kind=DEMOTE_KIND, subject_id=version.name, actor=actor,
                       detail={"model": version.name, "task": version.task, "now": version.base_model,
                               "was_forced": current.forced, "reason": reason})
    session.add(event)
    session.flush()
    return event
