"""Bearer keys: 401 without a good one, keys stored hashed, and tenants never see each other's work."""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select, text

from db.models import ApiKey
from db.queries import revoke_api_key
from image_factory import data_url, shape_png


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer lq_not-a-key"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer"}])
def test_missing_or_bad_key_is_401(unserved_api, headers):
    with unserved_api.client() as http:
        for method, path in [("post", "/v1/jobs"), ("get", "/v1/jobs"), ("post", "/v1/batches")]:
            response = getattr(http, method)(path, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["field"] == "Authorization"
            assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(unserved_api, tenant, session_factory):
    with session_factory.begin() as session:
        prefix = session.scalar(select(ApiKey.prefix).where(ApiKey.tenant_id == tenant.id))
        assert revoke_api_key(session, prefix_or_id=prefix) == 1
    with unserved_api.client(tenant) as http:
        assert http.get("/v1/jobs").status_code == 401


def test_keys_are_stored_as_sha256_only(tenant, session_factory):
    with session_factory() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant.id))
        dump = session.execute(text("SELECT * FROM api_keys")).all()
    assert key.key_hash == hashlib.sha256(tenant.token.encode()).hexdigest()
    assert tenant.token not in repr(dump)
    assert tenant.token.startswith(key.prefix) and len(key.prefix) < len(tenant.token) // 3


def test_other_tenants_get_404_for_jobs_batches_results_and_cancel(unserved_api, make_tenant):
    owner, stranger = make_tenant(), make_tenant()
    with unserved_api.client(owner) as http:
        job = http.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(0))}).json()
        batch = http.post("/v1/batches", json={"task": "caption", "items": [{"image": data_url(shape_png(1))}]}).json()
    with unserved_api.client(stranger) as http:
        for method, path, field in [("get", f"/v1/jobs/{job['id']}", "job_id"),
                                    ("post", f"/v1/jobs/{job['id']}/cancel", "job_id"),
                                    ("get", f"/v1/batches/{batch['id']}", "batch_id"),
                                    ("get", f"/v1/batches/{batch['id']}/results", "batch_id")]:
            response = getattr(http, method)(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["field"] == field
        assert http.get("/v1/jobs").json()["data"] == []
        assert http.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["data"] == []
    with unserved_api.client(owner) as http:
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
