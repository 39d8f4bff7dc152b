"""Reading a Prometheus endpoint in tests: scrape it and add up samples with prometheus_client's own parser."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str, headers: dict[str, str] | None = None) -> list[Sample]:
    """Every sample the endpoint exposes now (fails the test on a non-200 answer)."""
    response = httpx.get(url, headers=headers or {}, timeout=30)
    assert response.status_code == 200, response.text
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def label_values(samples: list[Sample], label: str) -> set[str]:
    """Every value the label takes across the samples."""
    return {s.labels[label] for s in samples if label in s.labels}
