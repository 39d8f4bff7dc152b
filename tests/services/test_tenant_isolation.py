"""Tenant isolation proven from the route table, and no body or query setting a tenant, a status or a priority."""
from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable

import httpx
import pytest

from db.models import KEY_SCOPES
from image_factory import data_url, shape_png
from model_version_rows import seed_version
from moderation_rows import seed_decision
from route_table import api_routes, path_parameters
from services.app import create_app

ALL_SCOPES = {"scopes": list(KEY_SCOPES)}


def make_admin(session_factory) -> dict:
    """A new tenant and a key with every scope: its headers, tenant id and key id."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}")
        key, token = create_api_key(session, tenant_id=tenant.id, name="owner", scopes=KEY_SCOPES)
        return {"headers": {"Authorization": f"Bearer {token}"}, "tenant_id": tenant.id, "key_id": key.id}


# How to create, as the owner, each tenant-owned resource a path can name; a new one must be added here.
def _create_job(http: httpx.Client) -> str:
    return http.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(11))}).json()["id"]


def _create_batch(http: httpx.Client) -> str:
    body = {"task": "caption", "items": [{"image": data_url(shape_png(12))}]}
    return http.post("/v1/batches", json=body).json()["id"]


def _create_key(http: httpx.Client) -> str:
    return http.post("/v1/keys", json={"name": "victim", **ALL_SCOPES}).json()["id"]


def _create_file(http: httpx.Client) -> str:
    return http.post("/v1/files", files={"file": ("r.jsonl", b"{}\n")}, data={"purpose": "batch"}).json()["id"]


def _create_fine_tuning_job(http: httpx.Client) -> str:
    lines = [{"image": data_url(shape_png(index)), "text": f"post {index}",
              "label": ("negative", "positive")[index % 2]} for index in range(24)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file_id = http.post("/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}).json()["id"]
    body = {"model": "lensq-tiny", "task": "sentiment", "training_file": file_id}
    return http.post("/v1/fine_tuning/jobs", json=body).json()["id"]


# batch_id also reaches /v1/batches/batch_{batch_id} (OpenAI batches): a LensQ batch's id is no OpenAI batch there.
CREATORS: dict[str, Callable[[httpx.Client], str]] = {"job_id": _create_job, "batch_id": _create_batch,
                                                      "key_id": _create_key, "file_id": _create_file,
                                                      "fine_tuning_job_id": _create_fine_tuning_job}
# Resources the API makes only from a worker's answers (moderation decisions): seeded as rows for the owner.
SEEDERS: dict[str, Callable[..., str]] = {
    "decision_id": lambda session_factory, tenant_id: str(seed_decision(session_factory, tenant_id)),
    # a fine-tuned version, named in paths by its name (ft:lensq-tiny:<tenant>:...)
    "model": lambda session_factory, tenant_id: seed_version(session_factory, tenant_id),
}


def routes_with_resources() -> list:
    """Every API route whose path names a resource, each checked to be one the test can create."""
    routes = [route for route in api_routes(create_app(database_url="sqlite://")) if path_parameters(route)]
    for route in routes:
        unknown = set(path_parameters(route)) - set(CREATORS) - set(SEEDERS)
        assert not unknown, (f"{route.path} names {sorted(unknown)}: add a creator to CREATORS so the isolation test "
                             "covers it")
    return routes


def test_the_route_table_has_resource_routes():
    paths = {route.path for route in routes_with_resources()}
    assert {"/v1/jobs/{job_id}", "/v1/batches/{batch_id}", "/v1/keys/{key_id}/revoke"} <= paths


def test_another_tenant_gets_404_on_every_resource_route(unserved_api, session_factory):
    owner, stranger = make_admin(session_factory), make_admin(session_factory)
    with httpx.Client(base_url=unserved_api.url, headers=owner["headers"], timeout=60) as http:
        ids = {name: create(http) for name, create in CREATORS.items()}
    ids |= {name: seed(session_factory, owner["tenant_id"]) for name, seed in SEEDERS.items()}
    checked = 0
    with httpx.Client(base_url=unserved_api.url, headers=stranger["headers"], timeout=60) as http:
        for route in routes_with_resources():
            path = route.path_format.format(**{name: ids[name] for name in path_parameters(route)})
            for method in sorted(route.methods):
                response = http.request(method, path)
                assert response.status_code == 404, (method, path, response.status_code, response.text)
                assert response.json()["error"]["field"] in path_parameters(route), (method, path, response.text)
                assert not any(value in response.text for value in ids.values()), (method, path, response.text)
                assert str(owner["tenant_id"]) not in response.text
                checked += 1
    assert checked >= 6  # jobs/{id}, its cancel, batches/{id}, its results, keys/{id}, its revoke
    with httpx.Client(base_url=unserved_api.url, headers=owner["headers"], timeout=60) as http:
        assert http.get(f"/v1/jobs/{ids['job_id']}").json()["status"] == "queued"  # not cancelled by the stranger
        assert http.get(f"/v1/keys/{ids['key_id']}").json()["revoked_at"] is None  # nor revoked


def test_lists_show_only_the_callers_own(unserved_api, session_factory):
    owner, stranger = make_admin(session_factory), make_admin(session_factory)
    with httpx.Client(base_url=unserved_api.url, headers=owner["headers"], timeout=60) as http:
        batch_id = _create_batch(http)
        _create_key(http)
    with httpx.Client(base_url=unserved_api.url, headers=stranger["headers"], timeout=60) as http:
        params = {"batch_id": batch_id, "tenant_id": str(owner["tenant_id"])}
        assert http.get("/v1/jobs", params=params).json()["data"] == []
        assert [key["id"] for key in http.get("/v1/keys").json()["data"]] == [str(stranger["key_id"])]
        assert http.get("/v1/tenant").json()["id"] == str(stranger["tenant_id"])


JOB = {"task": "caption", "image": data_url(shape_png(13))}


@pytest.mark.parametrize("extra, field", [
    ({"tenant_id": "00000000-0000-0000-0000-000000000001"}, "tenant_id"),
    ({"status": "succeeded"}, "status"),
    ({"result": {"caption": "forged"}}, "result"),
    ({"id": "00000000-0000-0000-0000-000000000002"}, "id"),
    ({"attempts": 0, "max_attempts": 1000}, "attempts"),
    ({"priority": 101}, "priority"),
    ({"priority": -101}, "priority"),
    ({"priority": 10**30}, "priority"),
])
def test_a_job_body_cannot_set_tenant_status_or_priority_out_of_range(unserved_api, tenant, extra, field):
    with unserved_api.client(tenant) as http:
        response = http.post("/v1/jobs", json={**JOB, **extra})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
        assert http.get("/v1/jobs").json()["data"] == []


def test_forms_batches_and_queries_cannot_set_them_either(unserved_api, tenant, make_tenant):
    other = make_tenant()
    with unserved_api.client(tenant) as http:
        form = http.post("/v1/jobs", data={"task": "caption", "tenant_id": str(other.id)},
                         files={"image": ("a.png", shape_png(14), "image/png")})
        assert form.status_code == 422 and form.json()["error"]["field"] == "tenant_id"
        batch = http.post("/v1/batches", json={"task": "caption", "tenant_id": str(other.id), "items": [JOB]})
        assert batch.status_code == 422 and batch.json()["error"]["field"] == "tenant_id"
        item = http.post("/v1/batches", json={"items": [{**JOB, "status": "succeeded"}]})
        assert item.status_code == 422 and item.json()["error"]["field"] == "items[0].status"
        assert http.post("/v1/batches", json={"priority": 500, "items": [JOB]}).status_code == 422
        # Query parameters a route does not declare are ignored: the job is the caller's, queued, at priority 0.
        job = http.post("/v1/jobs", json=JOB, params={"tenant_id": str(other.id), "status": "succeeded",
                                                       "priority": "100"}).json()
        assert (job["status"], job["priority"]) == ("queued", 0)
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 200
    with unserved_api.client(other) as http:
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 404


@pytest.mark.parametrize("path, method, body, field", [
    ("/v1/keys", "POST", {"tenant_id": str(uuid.uuid4())}, "tenant_id"),
    ("/v1/keys", "POST", {"revoked_at": None}, "revoked_at"),
    ("/v1/keys", "POST", {"key_hash": "0" * 64}, "key_hash"),
    ("/v1/tenant", "PATCH", {"id": str(uuid.uuid4())}, "id"),
    ("/v1/tenant", "PATCH", {"name": "someone-else"}, "name"),
    ("/v1/tenant", "PATCH", {"max_active_jobs": 0}, "max_active_jobs"),
])
def test_admin_bodies_cannot_reach_past_their_tenant(unserved_api, session_factory, path, method, body, field):
    admin = make_admin(session_factory)
    with httpx.Client(base_url=unserved_api.url, headers=admin["headers"], timeout=60) as http:
        response = http.request(method, path, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
        assert len(http.get("/v1/keys").json()["data"]) == 1
