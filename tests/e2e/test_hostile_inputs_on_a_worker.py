"""The hostile but valid corpus entries (CMYK, 16-bit, animated, polyglots, prompt injection) succeed on a worker."""
from __future__ import annotations

import uuid

import pytest

from bad_corpus import MANIFEST, request_kwargs
from image_factory import broken_huffman_table_jpeg, data_url
from polling import wait_for_final

ACCEPTED = ("cmyk-jpeg", "gray16-png", "rgb48-png", "animated-gif", "exif-rotated", "polyglot-jpeg-zip",
            "prompt-injection-question", "prompt-injection-text")


def _entries() -> list[dict]:
    by_name = {entry["name"]: entry for entry in MANIFEST}
    return [by_name[name] for name in ACCEPTED]


@pytest.mark.timeout(300)
def test_accepted_hostile_inputs_succeed_on_a_worker(api, tenant, worker_pool, session_factory):
    [worker] = worker_pool.ensure(1)[:1]
    ids = []
    with api.client(tenant) as http:
        for entry in _entries():
            response = http.post("/v1/jobs", **request_kwargs(entry))
            assert response.status_code == 202, (entry["name"], response.text)
            ids.append(uuid.UUID(response.json()["id"]))

    jobs = wait_for_final(session_factory, ids, timeout=240)
    for entry, job_id in zip(_entries(), ids):
        job = jobs[job_id]
        assert (job.status, job.error) == ("succeeded", None), (entry["name"], job.error)
        assert job.result, entry["name"]
    assert worker.process.poll() is None, "the worker is still alive"


@pytest.mark.timeout(300)
def test_a_jpeg_only_a_decoder_finds_broken_fails_its_job_with_the_decoders_reason(api, tenant, worker_pool,
                                                                                    session_factory):
    """The API reads a plain JPEG's segments and header, not its pixels (services.input_checks._plain_jpeg_facts):
    a broken Huffman table is taken, and the worker, which decodes the image anyway, fails the job as bad input."""
    worker_pool.ensure(1)
    with api.client(tenant) as http:
        response = http.post("/v1/jobs", json={"task": "caption",
                                               "image": data_url(broken_huffman_table_jpeg(), "image/jpeg")})
    assert response.status_code == 202, response.text
    job_id = uuid.UUID(response.json()["id"])
    job = wait_for_final(session_factory, [job_id], timeout=240)[job_id]
    assert (job.status, job.error_code, job.result) == ("failed", "input", None)
    assert job.error.startswith("image: image could not be decoded")
