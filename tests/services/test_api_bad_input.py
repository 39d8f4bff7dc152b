"""Bad input of many kinds: each a 4xx JSON error naming the field, never a 5xx, never a stored job."""
from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from db.models import Job
from image_factory import data_url, decompression_bomb_png, ico_bytes, shape_png, svg_bytes, truncated_jpeg

GOOD = data_url(shape_png(0))
MAX_IMAGE_BYTES = 2_000_000  # the test API's LENSQ_MAX_IMAGE_BYTES

JSON_CASES = {
    "not an image": ({"task": "caption", "image": data_url(b"hello, I am plain text" * 10)}, 422, "image"),
    "truncated JPEG": ({"task": "caption", "image": data_url(truncated_jpeg(), "image/jpeg")}, 422, "image"),
    "zero bytes": ({"task": "caption", "image": "data:image/png;base64,"}, 422, "image"),
    "decompression bomb": ({"task": "caption", "image": data_url(decompression_bomb_png())}, 422, "image"),
    "over the byte limit": ({"task": "caption", "image": data_url(b"\x89PNG" + b"\0" * MAX_IMAGE_BYTES)}, 413, "image"),
    "unsupported format (ICO)": ({"task": "caption", "image": data_url(ico_bytes())}, 415, "image"),
    "SVG": ({"task": "caption", "image": data_url(svg_bytes(), "image/svg+xml")}, 415, "image"),
    "broken base64": ({"task": "caption", "image": "data:image/png;base64,iVBORw0KG*&^%"}, 422, "image"),
    "not a data URL": ({"task": "caption", "image": "https://example.com/cat.png"}, 422, "image"),
    "data URL not base64": ({"task": "caption", "image": "data:image/png,rawbytes"}, 422, "image"),
    "image missing": ({"task": "caption"}, 422, "image"),
    "VQA without a question": ({"task": "vqa", "image": GOOD}, 422, "question"),
    "VQA with a blank question": ({"task": "vqa", "image": GOOD, "question": "   "}, 422, "question"),
    "question too long": ({"task": "vqa", "image": GOOD, "question": "why? " * 200}, 422, "question"),
    "classify without labels": ({"task": "classify", "image": GOOD}, 422, "labels"),
    "classify with one label": ({"task": "classify", "image": GOOD, "labels": ["cat"]}, 422, "labels"),
    "classify with 51 labels": ({"task": "classify", "image": GOOD, "labels": [f"l{i}" for i in range(51)]}, 422,
                                "labels"),
    "labels not a list": ({"task": "classify", "image": GOOD, "labels": "cat,dog"}, 422, "labels"),
    "an empty label": ({"task": "classify", "image": GOOD, "labels": ["cat", ""]}, 422, "labels[1]"),
    "a repeated label": ({"task": "classify", "image": GOOD, "labels": ["cat", "dog", "cat"]}, 422, "labels[2]"),
    "oversized text": ({"task": "sentiment", "image": GOOD, "text": "so good " * 1000}, 422, "text"),
    "text not a string": ({"task": "sentiment", "image": GOOD, "text": 5}, 422, "text"),
    "unknown task": ({"task": "segment", "image": GOOD}, 422, "task"),
    "no task": ({"image": GOOD}, 422, "task"),
    "a field of another task": ({"task": "caption", "image": GOOD, "question": "what?"}, 422, "question"),
    "an unknown field": ({"task": "caption", "image": GOOD, "colour": "red"}, 422, "colour"),
    "priority out of range": ({"task": "caption", "image": GOOD, "priority": 10_000}, 422, "priority"),
    "priority not an integer": ({"task": "caption", "image": GOOD, "priority": "high"}, 422, "priority"),
}


@pytest.fixture
def client(unserved_api, tenant):
    with unserved_api.client(tenant) as http:
        yield http


def _assert_refused(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["field"] == field and error["message"]


def _jobs_of(session_factory, tenant) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id))


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_json_job_is_refused_naming_the_field(client, tenant, session_factory, case):
    body, status, field = JSON_CASES[case]
    _assert_refused(client.post("/v1/jobs", json=body), status, field)
    assert _jobs_of(session_factory, tenant) == 0


MULTIPART_CASES = {
    "not an image": ({"image": ("a.png", b"GIF89a-not-really", "image/gif")}, {"task": "caption"}, 422, "image"),
    "truncated JPEG": ({"image": ("a.jpg", truncated_jpeg(), "image/jpeg")}, {"task": "caption"}, 422, "image"),
    "zero bytes": ({"image": ("a.png", b"", "image/png")}, {"task": "caption"}, 422, "image"),
    "SVG": ({"image": ("a.svg", svg_bytes(), "image/svg+xml")}, {"task": "caption"}, 415, "image"),
    "over the byte limit": ({"image": ("a.png", b"\0" * (MAX_IMAGE_BYTES + 1), "image/png")}, {"task": "caption"}, 413,
                            "image"),
    "no image part": ({"other": ("a.txt", b"x", "text/plain")}, {"task": "caption"}, 422, "other"),
    "labels not JSON": ({"image": ("a.png", shape_png(0), "image/png")}, {"task": "classify", "labels": "[cat"}, 422,
                        "labels"),
}


@pytest.mark.parametrize("case", list(MULTIPART_CASES))
def test_bad_multipart_job_is_refused_naming_the_field(client, tenant, session_factory, case):
    files, data, status, field = MULTIPART_CASES[case]
    _assert_refused(client.post("/v1/jobs", files=files, data=data), status, field)
    assert _jobs_of(session_factory, tenant) == 0


def test_bad_bodies_and_headers(client, tenant, session_factory):
    _assert_refused(client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
                    422, "body")
    _assert_refused(client.post("/v1/jobs", json=["a", "list"]), 422, "body")
    _assert_refused(client.post("/v1/jobs", content=b"task=caption", headers={"content-type": "text/plain"}),
                    415, "body")
    _assert_refused(client.post("/v1/jobs", json={"task": "caption", "image": GOOD},
                                headers={"Idempotency-Key": "k" * 201}), 422, "Idempotency-Key")
    _assert_refused(client.get("/v1/jobs", params={"cursor": "garbage"}), 422, "cursor")
    _assert_refused(client.get("/v1/jobs", params={"status": "done"}), 422, "status")
    _assert_refused(client.get("/v1/jobs", params={"limit": 0}), 422, "limit")
    _assert_refused(client.get("/v1/jobs/not-a-uuid"), 422, "job_id")
    _assert_refused(client.get("/v1/jobs/3b241101-e2bb-4255-8caf-4136c566a962"), 404, "job_id")
    _assert_refused(client.post("/v1/batches", files={"file": ("b.jsonl", b'{"image": 1}\n{oops', "text/plain")},
                                data={"task": "caption"}), 422, "file")
    assert _jobs_of(session_factory, tenant) == 0


def test_valid_formats_are_accepted(client):
    from PIL import Image

    from image_factory import encode

    image = Image.new("RGB", (20, 10), (1, 2, 3))
    for fmt, extra in [("JPEG", {}), ("GIF", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {}), ("PNG", {})]:
        response = client.post("/v1/jobs", json={"task": "caption", "image": data_url(encode(image, fmt, **extra))})
        assert response.status_code == 202, (fmt, response.text)
    grey16 = Image.new("I;16", (8, 8), 40000)
    assert client.post("/v1/jobs", json={"task": "caption", "image": data_url(encode(grey16, "PNG"))}).status_code == 202
    raw = base64.b64encode(shape_png(0)).decode()
    wrapped = "data:image/png;base64," + "\n".join(raw[i:i + 60] for i in range(0, len(raw), 60))
    assert client.post("/v1/jobs", json={"task": "caption", "image": wrapped}).status_code == 202
