"""With its database unreachable the API answers 503 JSON with Retry-After (never 500), and /readyz says why."""
from __future__ import annotations

import httpx
import pytest

from image_factory import data_url, shape_png
from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready


@pytest.fixture
def api_without_database(service_env, tmp_path):
    """The API pointed at a port where no Postgres listens (connection refused on every query)."""
    env = {**service_env, "LENSQ_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"}
    port = free_port()
    process = start_process(api_command(port=port), env=env, log_path=tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/healthz", process=process, timeout=60, log_path=tmp_path / "api.log")
    yield url
    stop_process(process)


@pytest.mark.timeout(120)
def test_every_route_answers_503_with_retry_after(api_without_database):
    headers = {"Authorization": "Bearer lq_whatever"}
    with httpx.Client(base_url=api_without_database, headers=headers, timeout=30) as http:
        responses = [
            http.get("/v1/jobs"),
            http.get("/v1/jobs/3b241101-e2bb-4255-8caf-4136c566a962"),
            http.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(1))}),
            http.post("/v1/batches", json={"task": "caption", "items": [{"image": data_url(shape_png(2))}]}),
        ]
        ready = http.get("/readyz")
        alive = http.get("/healthz")
    for response in responses:
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"]["field"] == "database"
    assert ready.status_code == 503 and ready.json()["database"].startswith("error: OperationalError")
    assert int(ready.headers["Retry-After"]) > 0
    assert alive.status_code == 200, "the process itself is alive: liveness does not depend on the database"
