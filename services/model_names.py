"""Resolves the `model` a request names (a base model or one of the tenant's versions) to the version a job runs on."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from db.model_versions import default_version_id, get_model_version
from db.models import ModelVersion
from services.config import ServiceSettings
from services.errors import InputError

# Fine-tuned versions are named ft:<base model>:<tenant>:<suffix>:<job>; OpenAI's own fine-tunes look the same.
VERSION_PREFIX = "ft:"
MAX_MODEL_CHARS = 200  # model_versions.name


def check_model_name(value: Any, field: str = "model") -> str | None:
    """The model a job names, if it names one: a string of 1 to 200 printable characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, "model must be a non-empty string: a base model or one of your fine-tuned versions")
    if len(value) > MAX_MODEL_CHARS or not value.isprintable():
        raise InputError(field, f"model must be 1 to {MAX_MODEL_CHARS} printable characters")
    return value


def chat_model_name(value: Any, settings: ServiceSettings) -> str | None:
    """The model a chat request names for its job: a version or a base model; any other name (OpenAI clients must
    send one) names nothing, so the tenant's default applies as for a job that names no model."""
    if isinstance(value, str) and (value.startswith(VERSION_PREFIX) or value in settings.fine_tune_base_models):
        return value
    return None


class ModelResolver:
    """Looks up the versions one request's jobs name, each name and each task's default once."""

    def __init__(self, session: Session, *, tenant_id: uuid.UUID, settings: ServiceSettings):
        self.session, self.tenant_id, self.settings = session, tenant_id, settings
        self._defaults: dict[str, uuid.UUID | None] = {}
        self._named: dict[str, ModelVersion | None] = {}

    def version_id(self, *, task: str, model: str | None, field: str = "model") -> uuid.UUID | None:
        """The version a job of `task` runs on: the one it names, the tenant's default for the task when it names
        none, None for the base model; a 404 naming `field` for a name the tenant has no version of, a 400 for a
        version of another task."""
        if model is None:
            if task not in self._defaults:
                self._defaults[task] = default_version_id(self.session, tenant_id=self.tenant_id, task=task)
            return self._defaults[task]
        if model in self.settings.fine_tune_base_models:
            return None
        if model not in self._named:
            self._named[model] = get_model_version(self.session, tenant_id=self.tenant_id, name=model)
        version = self._named[model]
        if version is None:  # another tenant's version is answered as missing, and its name is not echoed
            raise InputError(field, "no model with this name: name a base model (GET /v1/models) or one of your "
                                    "fine-tuned versions", 404)
        if version.task != task:
            raise InputError(field, f"this model is a {version.task} version; it cannot run a {task} job", 400)
        return version.id
