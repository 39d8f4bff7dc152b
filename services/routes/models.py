"""/v1/models: the base models and the tenant's fine-tuned versions, and the gate that promotes a version."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from db.model_versions import (
    GateRefused,
    demote_version,
    eval_metric,
    get_model_version,
    list_model_versions,
    promote_version,
    tenant_default_versions,
)
from db.models import ModelVersion
from db.queries import get_api_key
from services.deps import ACCESS_ERRORS, BODY_ERRORS, AdminTenant, CurrentTenant, ReadTenant, SessionDep, SettingsDep
from services.errors import InputError
from services.model_names import MAX_MODEL_CHARS
from services.openai_shapes import unix_time
from services.schemas import error_response, example_response

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ACCESS_ERRORS)

OWNER_OF_BASE_MODELS = "lensq"
VERSION_NAME = "ft:lensq-tiny:acme:posts:1f3a9c1e"
NOT_FOUND = {404: error_response("No such model for this tenant", "model", "no model with this name")}


class ModelPublic(BaseModel):
    """A model in OpenAI's shape (`id` is its name), with what LensQ knows of it."""

    id: str = Field(description="The name to send as `model` on jobs, batches and chat completions.")
    object: Literal["model"] = "model"
    created: int | None = Field(description="Unix time it was made (null for a base model).")
    owned_by: str
    task: str | None = Field(description="The task a fine-tuned version runs; null for a base model (all tasks).")
    base_model: str | None = Field(description="The base model a version was tuned from; null for a base model.")
    created_at: datetime | None
    is_default: bool = Field(description="Whether the tenant's jobs of its task that name no model run on it.")
    eval: dict[str, Any] | None = Field(
        description="In lists, a summary (test metric, baseline and its metric, best step, steps); on GET "
                    "/v1/models/{model}, the version's whole evaluation.")
    config: dict[str, Any] | None = Field(None, description="What rebuilds the version (on GET /v1/models/{model}).")


class ModelsPublic(BaseModel):
    """The base models and the tenant's versions, newest version first."""

    object: Literal["list"] = "list"
    data: list[ModelPublic]


class PromoteCreate(BaseModel):
    """A request to make a version the default for its task."""

    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="Promote even though the gate refuses; needs a reason, kept in the audit "
                                           "trail (kind model.promote.forced when the gate did refuse).")
    reason: str | None = Field(None, min_length=1, max_length=2000, description="Why (required with force).")

    @field_validator("reason")
    @classmethod
    def storable_text(cls, value: str | None) -> str | None:
        if value is not None and ("\x00" in value or not value.strip()):
            raise ValueError("must be text without NUL characters, not only spaces")
        if value is not None:
            value.encode("utf-8")  # a lone surrogate is a ValueError: pydantic reports it on the field
        return value


class PromotionPublic(BaseModel):
    """A recorded promotion: the version now the default, the one it replaced, and the audit event."""

    model: ModelPublic
    task: str
    previous: str = Field(description="The default it replaced: a version's name, or the base model.")
    forced: bool
    promoted_at: datetime
    audit_event_id: str


MODEL_EXAMPLE = {
    "id": VERSION_NAME, "object": "model", "created": 1767268800, "owned_by": "acme", "task": "sentiment",
    "base_model": "lensq-tiny", "created_at": "2026-01-01T12:00:00Z", "is_default": False,
    "eval": {"metric": 0.91, "baseline_model": "lensq-tiny", "baseline_metric": 0.62, "best_step": 40, "steps": 60,
             "test_n": 48},
}
PROMOTE_BODY = Body(openapi_examples={
    "gate": {"summary": "Promote if it beats the current default", "value": {}},
    "force": {"summary": "Promote past the gate", "value": {"force": True, "reason": "the old default mislabels X"}},
})


def _eval_summary(version: ModelVersion) -> dict[str, Any]:
    evaluation = version.eval or {}
    baseline = evaluation.get("baseline") if isinstance(evaluation.get("baseline"), dict) else {}
    test = evaluation.get("test") if isinstance(evaluation.get("test"), dict) else {}
    return {"metric": eval_metric(evaluation, "test"), "baseline_model": baseline.get("model"),
            "baseline_metric": eval_metric(evaluation, "baseline", "test"), "best_step": evaluation.get("best_step"),
            "steps": evaluation.get("steps"), "test_n": test.get("n")}


def version_object(version: ModelVersion, tenant_name: str, *, is_default: bool, full: bool = False) -> ModelPublic:
    """A version as a model object: its eval summarised, or (full) its whole eval and its config."""
    return ModelPublic(
        id=version.name, created=unix_time(version.created_at), owned_by=tenant_name, task=version.task,
        base_model=version.base_model, created_at=version.created_at, is_default=is_default,
        eval=(version.eval or {}) if full else _eval_summary(version), config=(version.config or {}) if full else None,
    )


def base_object(name: str) -> ModelPublic:
    """A base model as a model object: it runs every task; a tenant's default version, where promoted, wins."""
    return ModelPublic(id=name, created=None, owned_by=OWNER_OF_BASE_MODELS, task=None, base_model=None,
                       created_at=None, is_default=False, eval=None)


def _tenant_version(session: Session, tenant: CurrentTenant, model: str) -> ModelVersion:
    # A name no version can have (too long, control characters, NUL) is missing too, never a database error.
    valid = len(model) <= MAX_MODEL_CHARS and model.isprintable()
    version = get_model_version(session, tenant_id=tenant.id, name=model) if valid else None
    if version is None:  # another tenant's version is answered as missing, and the name is not echoed
        raise InputError("model", "no model with this name", 404)
    return version


def _is_default(session: Session, tenant: CurrentTenant, version: ModelVersion) -> bool:
    default = tenant_default_versions(session, tenant_id=tenant.id).get(version.task)
    return default is not None and default.id == version.id


@router.get("", response_model=ModelsPublic, responses={
    200: example_response("The base models and your versions", {"object": "list", "data": [MODEL_EXAMPLE]})})
def list_models(tenant: ReadTenant, session: SessionDep, settings: SettingsDep) -> ModelsPublic:
    """The base models this service serves, then your fine-tuned versions (newest first) with their test scores."""
    defaults = {version.id for version in tenant_default_versions(session, tenant_id=tenant.id).values()}
    versions = [version_object(v, tenant.name, is_default=v.id in defaults)
                for v in list_model_versions(session, tenant_id=tenant.id)]
    return ModelsPublic(data=[base_object(name) for name in settings.fine_tune_base_models] + versions)


@router.get("/{model}", response_model=ModelPublic, responses={
    200: example_response("The model", {**MODEL_EXAMPLE, "eval": {"test": {"metric": 0.91, "macro_f1": 0.91, "n": 48},
                                                                   "baseline": {"model": "lensq-tiny",
                                                                                "test": {"metric": 0.62}}},
                                        "config": {"method": "head"}}),
    **NOT_FOUND})
def get_model(model: str, tenant: ReadTenant, session: SessionDep, settings: SettingsDep) -> ModelPublic:
    """A base model, or one of your versions with its config and whole evaluation (test report, baseline, curve)."""
    if model in settings.fine_tune_base_models:
        return base_object(model)
    version = _tenant_version(session, tenant, model)
    return version_object(version, tenant.name, is_default=_is_default(session, tenant, version), full=True)


def _record_promotion(session: Session, tenant: CurrentTenant, version: ModelVersion,
                      body: PromoteCreate) -> PromotionPublic:
    key = get_api_key(session, tenant_id=tenant.id, key_id=tenant.key_id)
    try:
        promotion = promote_version(session, tenant_id=tenant.id, version=version, force=body.force,
                                    actor=key.prefix, reason=body.reason)
    except GateRefused as refused:
        session.rollback()
        raise InputError("model", str(refused), 409) from None
    session.commit()
    return PromotionPublic(model=version_object(version, tenant.name, is_default=True), task=version.task,
                           previous=promotion.previous, forced=promotion.default.forced,
                           promoted_at=promotion.default.promoted_at, audit_event_id=str(promotion.audit_event.id))


@router.post("/{model}/promote", response_model=PromotionPublic, responses={
    200: example_response("Promoted, and recorded in the audit trail", {
        "model": {**MODEL_EXAMPLE, "is_default": True}, "task": "sentiment", "previous": "lensq-tiny",
        "forced": False, "promoted_at": "2026-01-01T12:05:00Z",
        "audit_event_id": "5a0f3c2e-8d7b-4e21-b0a3-2f6c1d9e8b47"}),
    400: error_response("Forced without a reason, or a base model", "reason", "force needs a reason"),
    409: error_response("The gate refuses", "model", "ft:... scores 0.6100 on its test split, not above "
                        "lensq-tiny's 0.6200; force it with a reason to promote it anyway"),
    **NOT_FOUND, **BODY_ERRORS})
def promote_model(model: str, tenant: AdminTenant, session: SessionDep, settings: SettingsDep,
                  body: Annotated[PromoteCreate | None, PROMOTE_BODY] = None) -> PromotionPublic:
    """Make a version the default for its task: only if its test metric beats the current default's on the same
    test split (the baseline it was evaluated against must still be the default), or with `force` and a reason."""
    if model in settings.fine_tune_base_models:
        raise InputError("model", "a base model is not promoted: it serves every task that has no default version",
                         400)
    version = _tenant_version(session, tenant, model)  # first: another tenant's name is a 404 whatever the body
    body = body or PromoteCreate()
    if body.force and not body.reason:
        raise InputError("reason", "force needs a reason: it is kept in the audit trail", 400)
    return _record_promotion(session, tenant, version, body)


class DemotionPublic(BaseModel):
    """A recorded demotion: the version no longer the default, what serves its task now, and the audit event."""

    model: ModelPublic
    task: str
    now: str = Field(description="What the task's jobs that name no model run on now: the base model.")
    audit_event_id: str


def _checked_reason(reason: str | None) -> str | None:
    if reason is not None and (not reason.strip() or not reason.isprintable()):
        raise InputError("reason", "reason must be printable text, not only spaces")
    return reason


@router.delete("/{model}/default", response_model=DemotionPublic, responses={
    200: example_response("Demoted, and recorded in the audit trail", {
        "model": MODEL_EXAMPLE, "task": "sentiment", "now": "lensq-tiny",
        "audit_event_id": "5a0f3c2e-8d7b-4e21-b0a3-2f6c1d9e8b47"}),
    409: error_response("Not the default", "model", "this model is not the default for sentiment"),
    **NOT_FOUND})
def demote_model(model: str, tenant: AdminTenant, session: SessionDep,
                 reason: Annotated[str | None, Query(min_length=1, max_length=2000)] = None) -> DemotionPublic:
    """Stop using a version as the default for its task: its jobs that name no model run on the base model again."""
    version = _tenant_version(session, tenant, model)  # first: another tenant's name is a 404 whatever the query
    key = get_api_key(session, tenant_id=tenant.id, key_id=tenant.key_id)
    event = demote_version(session, tenant_id=tenant.id, version=version, actor=key.prefix,
                           reason=_checked_reason(reason))
    if event is None:
        session.rollback()
        raise InputError("model", f"this model is not the default for {version.task}", 409)
    session.commit()
    return DemotionPublic(model=version_object(version, tenant.name, is_default=False), task=version.task,
                          now=version.base_model, audit_event_id=str(event.id))
