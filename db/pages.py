"""Cursor pages of a tenant's rows, newest first by (created_at, id): the shape every list endpoint reads."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, tuple_


def newest_first(stmt: Select, model, after: tuple[datetime, uuid.UUID] | None) -> Select:
    """`stmt` ordered newest first by (model.created_at, model.id), past the `after` cursor (the last row of the
    previous page); (created_at, id) is unique, so pages neither skip nor repeat a row."""
    if after is not None:
        stmt = stmt.where(tuple_(model.created_at, model.id) < tuple_(*after))
    return stmt.order_by(model.created_at.desc(), model.id.desc())
