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


# --- monitoring: Prometheus, Grafana and the dashboard (plain YAML/JSON reads: no docker-compose needed) --------

DASHBOARD = ROOT / "docs" / "grafana" / "lensq-dashboard.json"


def _compose_yaml() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _mounted(service: dict, target: str) -> Path:
    """The repository file or folder a service mounts at `target` (and that it exists)."""
    [source] = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == target]
    path = (ROOT / source).resolve()
    assert path.exists(), f"{source} is mounted at {target} but is not in the repository"
    return path


def test_compose_runs_prometheus_and_grafana_with_the_dashboard():
    import yaml

    services = _compose_yaml()["services"]
    scrape = yaml.safe_load(_mounted(services["prometheus"], "/etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["lensq-api"]["static_configs"][0]["targets"] == ["api:8000"]
    worker_port = int(services["worker"]["environment"]["LENSQ_METRICS_PORT"])
    assert jobs["lensq-worker"]["dns_sd_configs"][0] == {**jobs["lensq-worker"]["dns_sd_configs"][0],
                                                         "names": ["worker"], "port": worker_port}
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"], "two API processes need the shared folder"
    provisioning = _mounted(services["grafana"], "/etc/grafana/provisioning")
    dashboards = yaml.safe_load((provisioning / "dashboards" / "lensq.yml").read_text())["providers"][0]
    mounted = _mounted(services["grafana"], f"{dashboards['options']['path']}/lensq-dashboard.json")
    assert mounted == DASHBOARD.resolve()
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {target["datasource"]["uid"] for p in panels for target in p["targets"]} == {source["uid"]}


def _exported_sample_names(tmp_path: Path) -> set[str]:
    """Every sample name the code exports: the API's and a worker's own metrics, and the ledger collector's
    (read from a real, empty ledger). A family with no sample yet is named by its type's suffixes."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from db.ledger_metrics import LedgerCollector
    from db.models import Base
    from db.session import get_engine, get_session_factory
    from services.metrics import HTTP_REGISTRY
    from workers.metrics import WORKER_REGISTRY

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Base.metadata.create_all(get_engine(url))
    registry = CollectorRegistry()
    for collector in (HTTP_REGISTRY, WORKER_REGISTRY, LedgerCollector(get_session_factory(url), totals=True,
                                                                      cache_seconds=0, timeout_seconds=5)):
        registry.register(collector)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names |= {family.name + suffix for suffix in suffixes[family.type]} | {s.name for s in family.samples}
    return names


def test_dashboard_queries_name_metrics_the_code_exports(tmp_path):
    import re

    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {name for p in panels for t in p["targets"] for name in re.findall(r"\blensq_[a-z0-9_]+", t["expr"])}
    exported = _exported_sample_names(tmp_path)
    assert queried and queried <= exported, f"the dashboard queries metrics nothing exports: {queried - exported}"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "error code", "latency", "batch size", "queue depth", "route"):
        assert topic in titles, f"no panel about {topic}"
