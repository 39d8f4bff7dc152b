"""Fixtures of the worker tests that run the worker's own functions in this process."""
from __future__ import annotations

import pytest


@pytest.fixture
def ledger_env(database_url, monkeypatch):
    """This process's own ledger calls (session_scope without a URL) go to the test database."""
    monkeypatch.setenv("LENSQ_DATABASE_URL", database_url)
