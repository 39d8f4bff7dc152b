"""/v1/files in the OpenAI Files shape: upload (batch input, fine-tune data), list, read, download, delete."""
from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from db.openai_files import batch_reading_file, delete_file, get_file, insert_file, list_files
from services.config import ServiceSettings
from services.deps import ACCESS_ERRORS, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from services.errors import InputError, found
from services.openai_shapes import BATCH_PREFIX, FILE_PREFIX, file_object, list_object, parse_public_id, public_id
from services.schemas import error_response, example_response

router = APIRouter(prefix="/v1/files", tags=["openai"], responses=ACCESS_ERRORS)

UPLOAD_PURPOSES = ("batch", "fine-tune")
MAX_FILENAME_CHARS = 255
NOT_FOUND = {404: error_response("No such file for this tenant", "file_id", "no file with this id")}
FILE_EXAMPLE = {"id": "file-6f1b7a522f4b4bb29d8a0d6b1f3c9e11", "object": "file", "bytes": 1204,
                "created_at": 1767268800, "filename": "requests.jsonl", "purpose": "batch", "status": "processed",
                "status_details": None, "expires_at": None}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)}}},
    "example": {"purpose": "batch", "file": "(requests.jsonl)"}}}}}


async def _upload_form(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise InputError("body", "send multipart/form-data with a `file` part and a `purpose` field", 415)
    try:
        return await request.form(max_files=1, max_fields=4, max_part_size=1024)
    except HTTPException as exc:
        raise InputError("body", f"multipart body refused: {exc.detail}", 400) from None
    except InputError:
        raise  # the body cap, met while the form was read
    except Exception as exc:  # malformed multipart is the client's fault, never a 5xx
        raise InputError("body", f"multipart body could not be parsed: {exc}", 400) from None


def _filename(upload: UploadFile) -> str:
    name = (upload.filename or "upload").replace("\x00", "")[-MAX_FILENAME_CHARS:]
    return name.encode("utf-8", "replace").decode("utf-8") or "upload"


def _file_bytes(upload: Any, settings: ServiceSettings) -> bytes:
    if not isinstance(upload, UploadFile):
        raise InputError("file", "file is required: a file part", 400)
    data = upload.file.read(settings.max_file_bytes + 1)
    if len(data) > settings.max_file_bytes:
        raise InputError("file", f"file is over the limit of {settings.max_file_bytes} bytes", 413)
    if not data:
        raise InputError("file", "file is empty", 400)
    return data


@router.post("", openapi_extra=UPLOAD_BODY, responses={
    200: example_response("The stored file", FILE_EXAMPLE),
    400: error_response("Unknown purpose", "purpose", "purpose must be one of batch, fine-tune"),
    413: error_response("Too large", "file", "file is over the limit of 50331648 bytes"),
    415: error_response("Not multipart", "body", "send multipart/form-data with a `file` part and a `purpose` field")})
async def upload_file(request: Request, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep) -> dict:
    """Store a file: `purpose` batch (JSONL requests for POST /v1/batches) or fine-tune."""
    form = await _upload_form(request)
    purpose = form.get("purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise InputError("purpose", f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", 400)
    upload = form.get("file")
    return await run_in_threadpool(_store_upload, session, tenant.id, purpose, upload, settings)


def _store_upload(session: Session, tenant_id: uuid.UUID, purpose: str, upload: Any, settings: ServiceSettings) -> dict:
    data = _file_bytes(upload, settings)
    row = insert_file(session, tenant_id=tenant_id, purpose=purpose, filename=_filename(upload), data=data)
    session.commit()
    return file_object(row)


def _after_cursor(session, tenant_id: uuid.UUID, after: str | None):
    if after is None:
        return None
    row = found(get_file(session, tenant_id=tenant_id, file_id=parse_public_id(FILE_PREFIX, after, "after")), "after")
    return row.created_at, row.id


@router.get("", responses={200: example_response("A page of files", list_object([FILE_EXAMPLE], False)),
                           404: error_response("`after` names no file of this tenant", "after", "no after with this id")})
def list_files_route(
    tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    after: Annotated[str | None, Query(max_length=100, description="the last id of the previous page")] = None,
) -> dict:
    """The tenant's files, newest first (order=asc for oldest first), filtered by purpose."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    rows = list_files(session, tenant_id=tenant.id, limit=limit + 1, purpose=purpose, newest_first=order == "desc",
                      after=_after_cursor(session, tenant.id, after))
    return list_object([file_object(row) for row in rows[:limit]], has_more=len(rows) > limit)


def _tenant_file(session, tenant_id: uuid.UUID, file_id: str, *, with_data: bool = False):
    row_id = parse_public_id(FILE_PREFIX, file_id, "file_id")
    return found(get_file(session, tenant_id=tenant_id, file_id=row_id, with_data=with_data), "file_id")


@router.get("/{file_id}", responses={200: example_response("The file", FILE_EXAMPLE), **NOT_FOUND})
def get_file_route(file_id: str, tenant: ReadTenant, session: SessionDep) -> dict:
    """One file's description."""
    return file_object(_tenant_file(session, tenant.id, file_id))


@router.get("/{file_id}/content", response_class=Response, responses={
    200: example_response("The file's bytes: here a batch's output file", '{"id": "batch_req_...", "custom_id": '
                          '"a", "response": {"status_code": 200, ...}, "error": null}\n', "application/octet-stream"),
    **NOT_FOUND})
def get_file_content(file_id: str, tenant: ReadTenant, session: SessionDep) -> Response:
    """The file's bytes as stored (a batch's output and error files are JSONL)."""
    row = _tenant_file(session, tenant.id, file_id, with_data=True)
    media_type = "application/jsonl" if row.filename.endswith(".jsonl") else "application/octet-stream"
    return Response(row.data, media_type=media_type)


@router.delete("/{file_id}", responses={
    200: example_response("Deleted", {"id": FILE_EXAMPLE["id"], "object": "file", "deleted": True}), **NOT_FOUND,
    409: error_response("The input of a batch", "file_id", "file-... is the input of batch_...; it is kept")})
def delete_file_route(file_id: str, tenant: SubmitTenant, session: SessionDep) -> dict:
    """Delete a file; a batch's input file is refused (the batch's record would go with it)."""
    row = _tenant_file(session, tenant.id, file_id)
    if batch_id := batch_reading_file(session, tenant_id=tenant.id, file_id=row.id):
        raise InputError("file_id", f"{file_id} is the input of batch {public_id(BATCH_PREFIX, batch_id)}; it is kept", 409)
    delete_file(session, tenant_id=tenant.id, file_id=row.id)
    session.commit()
    return {"id": file_id, "object": "file", "deleted": True}
