"""schemathesis against the live API (uvicorn) with a valid key: no 5xx, every answer as its OpenAPI documents."""
from __future__ import annotations

import secrets
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.app import create_app
from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
MIN_REQUESTS = 1000
REQUESTS: Counter[str] = Counter()  # per operation, filled by test_api_conforms_to_its_openapi
STATUSES: Counter[int] = Counter()
# The app's own OpenAPI, built here because pytest must know the operations when it collects them (schemathesis'
# lazy from_fixture loader sets a node attribute pytest 9 no longer has); test_served_openapi_is_the_one_fuzzed
# checks that the server's /openapi.json has the same operations and schemas.
OPENAPI = create_app(database_url="sqlite://").openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def fuzzed_api(service_env, tmp_path_factory):
    """An API of its own (jobs stay queued: no worker serves its queues), so fuzzing cannot disturb other tests."""
    env = {**service_env, "LENSQ_QUEUE_PREFIX": "fuzzed", "LENSQ_IMAGE_URL_TIMEOUT_SECONDS": "2",
           # chat completions and moderations wait for their jobs: here none runs, so the waits are kept short
           "LENSQ_OPENAI_WAIT_SECONDS": "0.5", "LENSQ_MODERATION_WAIT_SECONDS": "0.5"}
    port, log_path = free_port(), tmp_path_factory.mktemp("fuzzed-api") / "api.log"
    process = start_process(api_command(port=port), env=env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/healthz", process=process, timeout=60, log_path=log_path)
    yield url
    stop_process(process)


@pytest.fixture(scope="module")
def fuzz_headers(session_factory) -> dict[str, str]:
    """A key with every scope and a rate limit far above what the run sends."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"fuzz-{secrets.token_hex(4)}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="schemathesis",
                                  scopes=("submit", "read", "admin"), rate_limit_per_minute=1_000_000)
    return {"Authorization": f"Bearer {token}"}


def operations(spec: dict) -> dict:
    """Each operation's parameters, request body and responses: what schemathesis generates from and checks."""
    return {(method, path): (op.get("parameters"), op.get("requestBody"), op["responses"])
            for path, methods in spec["paths"].items() for method, op in methods.items()}


def test_served_openapi_is_the_one_fuzzed(fuzzed_api):
    served = httpx.get(f"{fuzzed_api}/openapi.json").json()
    assert operations(served) == operations(OPENAPI)
    assert served["components"] == OPENAPI["components"]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi(case, fuzzed_api, fuzz_headers):
    response = case.call_and_validate(base_url=fuzzed_api, headers=fuzz_headers, checks=CHECKS, timeout=30)
    REQUESTS[f"{case.method} {case.path}"] += 1
    STATUSES[response.status_code] += 1


def test_schemathesis_sent_enough_requests():
    """Runs after the fuzzing above (same module, file order): the run was not a token one."""
    if not REQUESTS:
        pytest.skip("the schemathesis test was not selected in this run")
    print(f"schemathesis: {sum(REQUESTS.values())} requests over {len(REQUESTS)} method+path pairs; "
          f"statuses {dict(sorted(STATUSES.items()))}")
    assert sum(REQUESTS.values()) >= MIN_REQUESTS, dict(REQUESTS)
