"""Key scopes on every route, a tenant admin's key and tenant routes, revocation at once, `lensq keys --scopes`."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid

import httpx
import pytest
from sqlalchemy import select, text

from db.models import KEY_SCOPES, ApiKey
from image_factory import data_url, shape_png
from route_table import api_routes, declared_scopes, path_parameters
from services.app import create_app


def make_key(session_factory, *, scopes=KEY_SCOPES, tenant_name: str | None = None, rate: int | None = None) -> dict:
    """A key with these scopes, for a new tenant unless one is named; its headers, tenant id and key id."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=tenant_name or f"tenant-{secrets.token_hex(4)}")
        key, token = create_api_key(session, tenant_id=tenant.id, name="test", scopes=scopes,
                                    rate_limit_per_minute=rate)
        return {"headers": {"Authorization": f"Bearer {token}"}, "tenant_id": tenant.id, "tenant_name": tenant.name,
                "key_id": key.id, "token": token}


def v1_routes() -> list:
    return [route for route in api_routes(create_app(database_url="sqlite://")) if route.path.startswith("/v1/")]


def test_every_v1_route_declares_exactly_one_scope():
    routes = v1_routes()
    assert len(routes) >= len(EXPECTED_SCOPES)
    for route in routes:
        assert len(declared_scopes(route)) == 1, (route.path, route.methods, declared_scopes(route))


EXPECTED_SCOPES = {
    ("POST", "/v1/jobs"): "submit", ("GET", "/v1/jobs"): "read", ("GET", "/v1/jobs/{job_id}"): "read",
    ("POST", "/v1/jobs/{job_id}/cancel"): "submit", ("POST", "/v1/batches"): "submit",
    ("GET", "/v1/batches/{batch_id}"): "read", ("GET", "/v1/batches/{batch_id}/results"): "read",
    ("POST", "/v1/keys"): "admin", ("GET", "/v1/keys"): "admin", ("GET", "/v1/keys/{key_id}"): "admin",
    ("POST", "/v1/keys/{key_id}/revoke"): "admin", ("GET", "/v1/tenant"): "admin", ("PATCH", "/v1/tenant"): "admin",
    ("GET", "/v1/webhooks/deliveries"): "read", ("POST", "/v1/tenant/webhook-secret"): "admin",
    # the OpenAI-compatible surface
    ("POST", "/v1/chat/completions"): "submit", ("POST", "/v1/moderations"): "submit",
    ("GET", "/v1/moderation/policy"): "read", ("PUT", "/v1/moderation/policy"): "admin",
    ("POST", "/v1/files"): "submit", ("GET", "/v1/files"): "read", ("GET", "/v1/files/{file_id}"): "read",
    ("GET", "/v1/files/{file_id}/content"): "read", ("DELETE", "/v1/files/{file_id}"): "submit",
    ("GET", "/v1/batches"): "read", ("GET", "/v1/batches/batch_{batch_id}"): "read",
    ("POST", "/v1/batches/batch_{batch_id}/cancel"): "submit",
    # the reviewer's side of moderation, and the audit trail
    ("GET", "/v1/moderation/decisions"): "read", ("POST", "/v1/moderation/decisions/{decision_id}/review"): "admin",
    ("GET", "/v1/audit/events"): "admin",
    # fine-tuned model versions and the promotion gate
    ("GET", "/v1/models"): "read", ("GET", "/v1/models/{model}"): "read",
    ("POST", "/v1/models/{model}/promote"): "admin", ("DELETE", "/v1/models/{model}/default"): "admin",
    # fine-tuning jobs (OpenAI's shape)
    ("POST", "/v1/fine_tuning/jobs"): "submit", ("GET", "/v1/fine_tuning/jobs"): "read",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): "read",
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"): "submit",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"): "read",
}


def test_routes_need_the_scopes_agreed():
    found = {(method, route.path): declared_scopes(route)[0] for route in v1_routes() for method in route.methods}
    assert found == EXPECTED_SCOPES


def test_a_key_without_the_scope_gets_403_naming_authorization(unserved_api, session_factory):
    keys = {scope: make_key(session_factory, scopes=[s for s in KEY_SCOPES if s != scope]) for scope in KEY_SCOPES}
    with unserved_api.client() as http:
        for route in v1_routes():
            path = route.path_format.format(**{name: uuid.uuid4() for name in path_parameters(route)})
            for method in route.methods:
                lacking = keys[declared_scopes(route)[0]]
                response = http.request(method, path, headers=lacking["headers"], json={})
                assert response.status_code == 403, (method, route.path, response.text)
                assert response.json()["error"]["field"] == "Authorization"


def test_submit_and_read_scopes_split_the_job_routes(unserved_api, session_factory):
    tenant_name = f"tenant-{secrets.token_hex(4)}"
    submitter = make_key(session_factory, scopes=["submit"], tenant_name=tenant_name)
    reader = make_key(session_factory, scopes=["read"], tenant_name=tenant_name)
    with unserved_api.client() as http:
        job = http.post("/v1/jobs", headers=submitter["headers"],
                        json={"task": "caption", "image": data_url(shape_png(3))})
        assert job.status_code == 202
        assert http.get(f"/v1/jobs/{job.json()['id']}", headers=submitter["headers"]).status_code == 403
        assert http.get(f"/v1/jobs/{job.json()['id']}", headers=reader["headers"]).json()["status"] == "queued"
        assert http.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=reader["headers"]).status_code == 403
        assert http.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=submitter["headers"]).status_code == 200


def test_admin_creates_lists_and_revokes_keys(unserved_api, session_factory):
    admin = make_key(session_factory, scopes=["admin"])
    with unserved_api.client() as http:
        created = http.post("/v1/keys", headers=admin["headers"],
                            json={"name": "reader", "scopes": ["read"], "rate_limit_per_minute": 100})
        assert created.status_code == 201, created.text
        new = created.json()
        assert new["scopes"] == ["read"] and new["rate_limit_per_minute"] == 100
        assert new["token"].startswith(new["prefix"]) and len(new["token"]) > 40
        reader = {"Authorization": f"Bearer {new['token']}"}
        assert http.get("/v1/jobs", headers=reader).status_code == 200
        assert http.post("/v1/jobs", headers=reader, json={}).status_code == 403

        listed = http.get("/v1/keys", headers=admin["headers"])
        assert {key["id"] for key in listed.json()["data"]} == {str(admin["key_id"]), new["id"]}
        assert new["token"] not in listed.text and "hash" not in listed.text
        assert "token" not in http.get(f"/v1/keys/{new['id']}", headers=admin["headers"]).json()

        revoked = http.post(f"/v1/keys/{new['id']}/revoke", headers=admin["headers"])
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        response = http.get("/v1/jobs", headers=reader)  # at once: every request checks the ledger
        assert response.status_code == 401 and response.json()["error"]["field"] == "Authorization"


def test_admin_key_refusals(unserved_api, session_factory):
    admin = make_key(session_factory, scopes=["admin"])
    with unserved_api.client(timeout=30) as http:
        for body, field in [({"scopes": ["root"]}, "scopes[0]"), ({"scopes": []}, "scopes"),
                            ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
                            ({"rate_limit_per_minute": 10**7}, "rate_limit_per_minute"),
                            ({"name": "a\x00b"}, "name")]:
            response = http.post("/v1/keys", headers=admin["headers"], json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"]["field"] == field
        assert http.post(f"/v1/keys/{uuid.uuid4()}/revoke", headers=admin["headers"]).status_code == 404


def test_admin_sets_the_tenant_switch_and_quota(unserved_api, session_factory):
    admin = make_key(session_factory, scopes=["admin"])
    with unserved_api.client() as http:
        before = http.get("/v1/tenant", headers=admin["headers"]).json()
        assert before["allow_image_urls"] is False and before["max_active_jobs"] is None
        assert before["name"] == admin["tenant_name"] and before["active_jobs"] == 0
        after = http.patch("/v1/tenant", headers=admin["headers"],
                           json={"allow_image_urls": True, "max_active_jobs": 7})
        assert after.status_code == 200, after.text
        assert after.json()["allow_image_urls"] is True and after.json()["active_jobs_limit"] == 7
        unchanged = http.patch("/v1/tenant", headers=admin["headers"], json={})
        assert unchanged.json()["max_active_jobs"] == 7 and unchanged.json()["allow_image_urls"] is True
        reset = http.patch("/v1/tenant", headers=admin["headers"], json={"max_active_jobs": None}).json()
        assert reset["max_active_jobs"] is None and reset["active_jobs_limit"] > 7
        too_high = http.patch("/v1/tenant", headers=admin["headers"], json={"max_active_jobs": 10**9})
        assert too_high.status_code == 422 and too_high.json()["error"]["field"] == "max_active_jobs"


def test_keys_are_random_and_stored_only_as_hashes(session_factory):
    tokens = [make_key(session_factory)["token"] for _ in range(3)]
    assert len(set(tokens)) == 3 and len({token[3:11] for token in tokens}) == 3
    with session_factory() as session:
        dump = repr(session.execute(text("SELECT * FROM api_keys")).all())
        scopes = session.scalars(select(ApiKey.scopes).where(ApiKey.prefix == tokens[0][:11])).one()
    assert not any(token in dump for token in tokens)
    assert scopes == "submit read admin"


def _lensq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_cli_creates_keys_with_scopes(unserved_api, service_env):
    tenant = f"cli-{secrets.token_hex(4)}"
    created = _lensq("keys", "create", "--tenant", tenant, "--scopes", "read,admin", "--rate-limit-per-minute", "50",
                     env=service_env)
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    with httpx.Client(base_url=unserved_api.url, headers=headers) as http:
        assert http.get("/v1/keys").json()["data"][0]["scopes"] == ["read", "admin"]
        assert http.post("/v1/jobs", json={}).status_code == 403
    listed = _lensq("keys", "list", "--tenant", tenant, env=service_env)
    assert "read admin" in listed.stdout and "50/min" in listed.stdout
    bad = _lensq("keys", "create", "--tenant", tenant, "--scopes", "root", env=service_env)
    assert bad.returncode != 0 and "root" in bad.stderr


@pytest.mark.parametrize("scopes", [[], ["root"], ["read", "sudo"]])
def test_unknown_scopes_are_refused_by_the_ledger(session_factory, scopes):
    with pytest.raises(ValueError):
        make_key(session_factory, scopes=scopes)
