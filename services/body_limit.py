"""Refuses request bodies over a byte cap before the app reads them: by Content-Length, and by counting bytes."""
from __future__ import annotations

import json
from dataclasses import dataclass

from services.errors import InputError, error_body


class BodyTooLarge(InputError):
    """A body that went past its cap while it was being read."""

    def __init__(self, cap: int):
        super().__init__("body", f"request body is over the limit of {cap} bytes", 413)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def _send_too_large(send, cap: int) -> None:
    body = json.dumps(error_body("body", f"request body is over the limit of {cap} bytes")).encode()
    # Connection: close, because the rest of the body is never read.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _BodyCount:
    cap: int
    received: int = 0
    exceeded: bool = False
    started: bool = False
    replaced: bool = False


class BodyLimitMiddleware:
    """Pure ASGI, before the routes: a body over `max_bytes` (or its path's own cap) gets a 413 and is not read on."""

    def __init__(self, app, *, max_bytes: int, max_bytes_by_path: dict[str, int] | None = None):
        self.app, self.max_bytes, self.max_bytes_by_path = app, max_bytes, max_bytes_by_path or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        count = _BodyCount(cap=self.max_bytes_by_path.get(scope["path"].rstrip("/"), self.max_bytes))
        declared = _content_length(scope)
        if declared is not None and declared > count.cap:
            await _send_too_large(send, count.cap)
            return
        try:
            await self.app(scope, self._counting(receive, count), self._answering(send, count))
        except Exception:
            if not count.exceeded:
                raise
            # The app failed on a body we cut off: the 413 is the answer, not a 500.
        if count.exceeded and not count.started:
            await _send_too_large(send, count.cap)

    @staticmethod
    def _counting(receive, count: _BodyCount):
        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                count.received += len(message.get("body", b""))
                if count.received > count.cap:
                    count.exceeded = True
            if count.exceeded:
                raise BodyTooLarge(count.cap)
            return message

        return counting_receive

    @staticmethod
    def _answering(send, count: _BodyCount):
        async def answering_send(message: dict) -> None:
            if count.replaced:
                return
            if message["type"] == "http.response.start" and count.exceeded:
                # Whatever the app made of the cut-off body (a parse error, a 400), the answer is our 413.
                count.started = count.replaced = True
                await _send_too_large(send, count.cap)
                return
            if message["type"] == "http.response.start":
                count.started = True
            await send(message)

        return answering_send
