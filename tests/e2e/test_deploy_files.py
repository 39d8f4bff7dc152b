"""docker-compose.yml is valid and has the production shape (no engine here: `docker-compose config` only)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make test` installs Debian's docker-compose package)")
    return binary


def test_compose_file_validates(compose):
    result = subprocess.run([compose, "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_has_the_agreed_services(compose):
    result = subprocess.run([compose, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True)
    import yaml

    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "flower"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["restart"] == "no"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "container_name" not in services["worker"] and "ports" not in services["worker"], "worker must scale"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert json.dumps(services["worker"]["command"]).count("worker") == 1
