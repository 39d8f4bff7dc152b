"""A minimal HTTP/1.1 load client: pre-encoded POSTs over keep-alive asyncio connections.

httpx spends about as much CPU per request as the API it measures; on a machine whose cores the API shares with
its client, that would cap the figure at the client's speed. This client parses only what it checks (the status
line and Content-Length), so nearly all the CPU per request is the API's."""
from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit


def request_bytes(host: str, path: str, token: str, body: bytes, idempotency_key: str | None = None) -> bytes:
    key = f"Idempotency-Key: {idempotency_key}\r\n" if idempotency_key else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n{key}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response's status and body (the API always sends Content-Length)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status, length = int(status_line.split()[1]), 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def post_all(url: str, path: str, token: str, bodies: list[bytes], concurrency: int,
                   keyed: bool = False) -> float:
    """POSTs every body from `concurrency` keep-alive connections (`keyed`: each with an Idempotency-Key of its own);
    returns requests per second. A response other than 2xx raises."""
    parts = urlsplit(url)
    requests = [request_bytes(parts.netloc, path, token, body, uuid.uuid4().hex if keyed else None)
                for body in bodies]
    pending = iter(requests)  # shared by the connections: each takes the next request when its last is answered

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for request in pending:
                writer.write(request)
                status, body = await read_response(reader)
                if not 200 <= status < 300:
                    raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started)
