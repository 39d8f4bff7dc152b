"""Every entry of tests/data/bad/manifest.json through the real API: its exact status and error field, never a 5xx."""
from __future__ import annotations

import hashlib
import io
import struct
import uuid

import pytest
from PIL import Image
from sqlalchemy import func, select

from bad_corpus import CORPUS, MANIFEST, path_for, request_kwargs
from db.models import Image as ImageRow
from db.models import Job

ENTRIES = {entry["name"]: entry for entry in MANIFEST}


@pytest.fixture
def client(unserved_api, tenant):
    with unserved_api.client(tenant) as http:
        yield http


def test_the_corpus_is_big_enough_and_small():
    assert len(MANIFEST) >= 40
    assert sum(path.stat().st_size for path in CORPUS.iterdir()) < 2_000_000
    named = {name for entry in MANIFEST for name in [entry.get("file"), *entry.get("files", []),
                                                     *entry.get("field_files", {}).values()] if name}
    assert named <= {path.name for path in CORPUS.iterdir()}, "every file the manifest names exists"


def _jobs_of(session_factory, tenant_id) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id))


def _png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order; fails on any byte after IEND."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    kinds, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        kinds.append(kind)
        at += 12 + length
        if kind == b"IEND":
            assert at == len(data), "bytes after IEND"
    return kinds


# Markers with no length field: SOI, EOI, and the restart markers RST0-7.
STANDALONE_MARKERS = {0xD8, 0xD9, *range(0xD0, 0xD8)}


def _jpeg_segments(data: bytes) -> list[int]:
    """The marker codes of a JPEG's segments, in order; fails on any byte after EOI."""
    assert data.startswith(b"\xff\xd8")
    markers, at = [0xD8], 2
    while True:
        assert data[at] == 0xFF, f"a segment starts at byte {at}"
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xD9:
            assert at + 2 == len(data), "bytes after EOI"
            return markers
        at += 2 if marker in STANDALONE_MARKERS else 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor RSTn
            while not (data[at] == 0xFF and data[at + 1] != 0x00 and data[at + 1] not in range(0xD0, 0xD8)):
                at += 1


def _uploaded_name(entry: dict) -> str:
    return entry.get("file") or entry["files"][0]


def assert_stored_canonically(session_factory, job_id: str, entry: dict) -> None:
    """The stored copy is clean: a JPEG for a JPEG upload, else a PNG; right mode and size, no metadata, no
    trailing archive, named by its sha256."""
    with session_factory() as session:
        job = session.get(Job, uuid.UUID(job_id))
        row = session.get(ImageRow, (job.tenant_id, job.image_sha256))
        params = job.params
    assert row.sha256 == hashlib.sha256(row.data).hexdigest()
    if _uploaded_name(entry).endswith(".jpg"):
        # SOI, APP0 (JFIF), DQT, SOF0, DHT, SOS, EOI only: no APP1 (EXIF), APP2 (ICC) or COM segment
        assert row.format == "JPEG" and set(_jpeg_segments(row.data)) <= {0xD8, 0xE0, 0xDB, 0xC0, 0xC4, 0xDA, 0xD9}
    else:
        assert row.format == "PNG"
        assert set(_png_chunks(row.data)) <= {b"IHDR", b"IDAT", b"IEND"}, "no text, EXIF, ICC or palette chunks"
    assert b"PK\x03\x04" not in row.data
    stored = Image.open(io.BytesIO(row.data))
    assert (row.width, row.height) == stored.size and getattr(stored, "n_frames", 1) == 1
    if "stored" in entry:
        assert stored.mode == entry["stored"]["mode"] and list(stored.size) == entry["stored"]["size"]
    if "params" in entry:
        assert params == entry["params"]


@pytest.mark.parametrize("name", list(ENTRIES))
def test_corpus_entry_gets_its_exact_answer(client, tenant, session_factory, name):
    entry = ENTRIES[name]
    response = client.post(path_for(entry), **request_kwargs(entry))

    assert response.status_code < 500, response.text
    assert response.status_code == entry["status"], response.text
    if entry["status"] == 202:
        assert_stored_canonically(session_factory, response.json()["id"], entry)
        return
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["field"] == entry["field"] and error["message"], error
    assert _jobs_of(session_factory, tenant.id) == 0


def test_the_same_picture_re_encoded_is_stored_once(client):
    """The content address is of the canonical bytes: a PNG and the same PNG with a ZIP appended dedupe."""
    clean = client.post("/v1/jobs", **request_kwargs({**ENTRIES["polyglot-png-zip"], "file": "good.png"}))
    polyglot = client.post("/v1/jobs", **request_kwargs(ENTRIES["polyglot-png-zip"]))
    assert clean.status_code == polyglot.status_code == 202
    assert clean.json()["image_sha256"] == polyglot.json()["image_sha256"]
