"""Health and readiness, OpenAPI examples on every route, the torch-free API and CLI, `lensq keys`."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx

from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready


def test_healthz_and_readyz(unserved_api):
    with unserved_api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(service_env, tmp_path):
    port = free_port()
    env = {**service_env, "LENSQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    process = start_process(api_command(port=port), env=env, log_path=tmp_path / "api.log")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=process, timeout=60, log_path=tmp_path / "api.log")
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        assert response.status_code == 503
        assert response.json()["database"] == "ok" and response.json()["broker"].startswith("error")
    finally:
        stop_process(process)


def test_every_route_has_examples(unserved_api):
    spec = httpx.get(f"{unserved_api.url}/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
            assert any("example" in media or "examples" in media for media in success["content"].values()), (method, path)
            body = operation.get("requestBody")
            if body:
                for media_type, media in body["content"].items():
                    assert "example" in media or "examples" in media, (method, path, media_type)


def test_api_and_cli_never_import_torch():
    code = ("import sys, services.app, services.cli, services.demo, services.batch_command, workers.celery_app; "
            "services.app.create_app(database_url='sqlite://'); "
            "assert 'torch' not in sys.modules and 'multimodal' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _lensq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_keys_create_list_revoke(unserved_api, service_env):
    created = _lensq("keys", "create", "--tenant", "cli-tenant", "--name", "laptop", env=service_env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    with httpx.Client(base_url=unserved_api.url, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get("/v1/jobs").status_code == 200
        listed = _lensq("keys", "list", "--tenant", "cli-tenant", env=service_env)
        assert token[:11] in listed.stdout and token not in listed.stdout and "live" in listed.stdout
        assert _lensq("keys", "revoke", token[:11], env=service_env).returncode == 0
        assert http.get("/v1/jobs").status_code == 401
    assert "revoked" in _lensq("keys", "list", "--tenant", "cli-tenant", env=service_env).stdout


def test_migrate_command_on_a_fresh_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _lensq("migrate", "--database-url", url, env={})
    assert result.returncode == 0 and "migrated" in result.stdout, result.stderr


def _imports_of(package: str) -> set[str]:
    import ast
    from pathlib import Path

    names = set()
    for path in (Path(__file__).resolve().parents[2] / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def _ours(names: set[str]) -> set[str]:
    return {name for name in names if name.split(".")[0] in ("services", "workers", "multimodal", "db")}


def test_import_rule_between_packages():
    """services may use db and the torch-free Celery app only; db uses nothing of ours; workers never services."""
    from_services = {n for n in _ours(_imports_of("services")) if not n.startswith(("services", "db"))}
    assert from_services <= {"workers.celery_app"}
    assert {n.split(".")[0] for n in _ours(_imports_of("db"))} <= {"db"}
    assert not any(n.startswith("services") for n in _ours(_imports_of("workers")))


def test_the_served_app_freezes_its_start_up_objects():
    """Serving starts by taking the start-up objects out of the garbage collector's view (gc.freeze), so a full
    collection no longer walks them while it holds the event loop."""
    import gc

    from fastapi.testclient import TestClient

    from services.app import create_app

    app = create_app(database_url="sqlite://")
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 100_000
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        gc.unfreeze()
