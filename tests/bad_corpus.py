"""The hostile-input corpus in tests/data/bad: its manifest, and the request each entry describes."""
from __future__ import annotations

import base64
import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "bad"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
PATHS = {"batch-json": "/v1/batches", "batch-jsonl": "/v1/batches"}


def _read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _image(entry: dict, name: str) -> bytes:
    return _read(name) + bytes(entry.get("image_padding", 0))


def _json_body(entry: dict) -> dict:
    body = dict(entry.get("fields", {}))
    body.update({name: _read(file).decode() for name, file in entry.get("field_files", {}).items()})
    if "file" in entry:
        payload = base64.b64encode(_image(entry, entry["file"])).decode()
        body["image"] = f"data:{entry['media_type']};base64,{payload}"
    return body


def _multipart(entry: dict) -> dict:
    data = dict(entry.get("fields", {}))
    data.update({name: _read(file) for name, file in entry.get("field_files", {}).items()})
    files = [("image", (name, _image(entry, name), "image/jpeg")) for name in entry.get("files", [])]
    return {"data": data, "files": files}


def _chunks(body: bytes):
    for start in range(0, len(body), 65536):
        yield body[start:start + 65536]


def request_kwargs(entry: dict) -> dict:
    """What httpx sends for a manifest entry."""
    submit = entry["submit"]
    if submit in ("json", "batch-json"):
        body = json.dumps(_json_body(entry)).encode()
        content = _chunks(body) if entry.get("transfer") == "chunked" else body
        return {"content": content, "headers": {"content-type": "application/json"}}
    if submit == "multipart":
        return _multipart(entry)
    if submit == "batch-jsonl":
        return {"data": entry.get("fields", {}), "files": {"file": ("items.jsonl", _read(entry["file"]), "text/plain")}}
    return {"content": _read(entry["file"]), "headers": {"content-type": entry["content_type"]}}


def path_for(entry: dict) -> str:
    """Where a manifest entry is posted."""
    return PATHS.get(entry["submit"], "/v1/jobs")
