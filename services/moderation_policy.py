"""Checks a moderation policy a tenant admin sends: categories scored by zero-shot prompts or by sentiment."""
from __future__ import annotations

import re
from typing import Any

from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import check_labels

SOURCES = ("classify", "sentiment")
CATEGORY_NAME = re.compile(r"^[a-z0-9][a-z0-9_/\-]{0,63}$")
MAX_CATEGORIES = 20
MAX_DESCRIPTION_CHARS = 500
CLASSIFY_FIELDS = ("source", "labels", "against", "threshold", "description")
SENTIMENT_FIELDS = ("source", "threshold", "description")


def _refuse(field: str, message: str) -> InputError:
    return InputError(field, message, 422)


def _check_threshold(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise _refuse(field, "threshold must be a number in (0, 1]: a score at or above it flags the category")
    return float(value)


def _check_prompts(category: dict[str, Any], field: str, settings: ServiceSettings) -> dict[str, list[str]]:
    """labels and against: each a list of prompts; together one classify job, so distinct and within its limits."""
    prompts = {}
    for name in ("labels", "against"):
        value = category.get(name)
        if not isinstance(value, list) or not value:
            raise _refuse(f"{field}.{name}", f"{name} must be a non-empty list of prompts")
        prompts[name] = value
    combined = check_labels(prompts["labels"] + prompts["against"], settings, f"{field}.labels+against")
    split = len(prompts["labels"])
    return {"labels": combined[:split], "against": combined[split:]}


def _check_category(name: Any, category: Any, field: str, settings: ServiceSettings) -> dict[str, Any]:
    if not isinstance(name, str) or not CATEGORY_NAME.match(name):
        raise _refuse(field, "a category name is 1-64 characters: lower-case letters, digits, _ / -")
    if not isinstance(category, dict):
        raise _refuse(field, "a category must be an object")
    source = category.get("source", "classify")
    if source not in SOURCES:
        raise _refuse(f"{field}.source", f"source must be one of {', '.join(SOURCES)}")
    allowed = CLASSIFY_FIELDS if source == "classify" else SENTIMENT_FIELDS
    for key in category:
        if key not in allowed:
            raise _refuse(f"{field}.{key}", f"unknown field for a {source} category; allowed: {', '.join(allowed)}")
    checked: dict[str, Any] = {"source": source, "threshold": _check_threshold(category.get("threshold"),
                                                                               f"{field}.threshold")}
    description = category.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise _refuse(f"{field}.description", f"description must be a string of at most {MAX_DESCRIPTION_CHARS}")
        checked["description"] = description
    if source == "classify":
        checked.update(_check_prompts(category, field, settings))
    return checked


def check_policy(body: Any, settings: ServiceSettings) -> dict[str, dict[str, Any]]:
    """The categories of a policy body {"categories": {name: {...}}}; a 422 naming the first bad field."""
    if not isinstance(body, dict) or set(body) - {"categories"}:
        raise _refuse("body", 'the body must be {"categories": {name: {...}}}')
    categories = body.get("categories")
    if not isinstance(categories, dict) or not 1 <= len(categories) <= MAX_CATEGORIES:
        raise _refuse("categories", f"categories must map 1 to {MAX_CATEGORIES} names to categories")
    return {name: _check_category(name, category, f"categories.{name}", settings)
            for name, category in categories.items()}
