"""Seeds model version rows as a finished fine-tune writes them, for tests of the versions' API and workers."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from db.models import ModelVersion, Tenant


def version_eval(metric: float, baseline_metric: float, baseline: str = "lensq-tiny", n: int = 24) -> dict[str, Any]:
    """An eval in the shape the fine-tuning worker writes (only the figures the gate and the lists read)."""
    return {"test": {"metric": metric, "macro_f1": metric, "n": n},
            "baseline": {"model": baseline, "test": {"metric": baseline_metric, "macro_f1": baseline_metric, "n": n}},
            "validation_curve": [{"step": 10, "metric": metric}], "best_step": 10, "steps": 20,
            "splits": {"train": 80, "validation": 12, "test": n}, "command": "seeded by a test"}


def seed_version(session_factory, tenant_id: uuid.UUID, *, task: str = "sentiment", suffix: str = "custom",
                 evaluation: dict[str, Any] | None = None, weights: bytes = b"", config: dict[str, Any] | None = None,
                 base_model: str = "lensq-tiny", version_id: uuid.UUID | None = None) -> str:
    """A model version row named as the fine-tuning API names them (ft:<base>:<tenant>:<suffix>:<8 hex>)."""
    version_id = version_id or uuid.uuid4()
    with session_factory.begin() as session:
        tenant_name = session.get(Tenant, tenant_id).name
        name = f"ft:{base_model}:{tenant_name}:{suffix}:{secrets.token_hex(4)}"
        session.add(ModelVersion(
            id=version_id, tenant_id=tenant_id, name=name, base_model=base_model, task=task, weights=weights,
            weights_sha256=hashlib.sha256(weights).hexdigest(), config=config or {"method": "seeded"},
            eval=version_eval(0.9, 0.5) if evaluation is None else evaluation,
        ))
    return name
