"""The intake routes' key cache: when a busy key's entry lapses, its requests in flight share one ledger read."""
from __future__ import annotations

import asyncio

from starlette.requests import Request

from sql_statements import statements_sent


def test_requests_of_one_key_arriving_together_read_the_ledger_once(database_url, redis_url, tenant):
    from services.app import create_app
    from services.config import ServiceSettings
    from services.deps import get_intake_tenant

    settings = ServiceSettings(rate_limit_redis_url=redis_url)
    app = create_app(settings, database_url)
    def intake_request() -> Request:
        return Request({"type": "http", "method": "POST", "path": "/v1/jobs", "query_string": b"", "app": app,
                        "headers": [(b"authorization", f"Bearer {tenant.token}".encode())]})

    async def burst(count: int) -> list:
        return await asyncio.gather(*(get_intake_tenant(intake_request(), settings, None) for _ in range(count)))

    async def two_bursts(key_reads: list[str]) -> tuple[list, int, list]:  # one event loop, as in an API process
        first = await burst(20)
        reads = len(key_reads)
        app.state.key_cache.entries.clear()  # the entry lapses, as it does every KEY_CACHE_SECONDS
        return first, reads, await burst(20)

    with statements_sent(lambda statement: "FROM api_keys" in statement and "key_hash" in statement) as key_reads:
        first, after_first, second = asyncio.run(two_bursts(key_reads))
    assert {current.id for current in first + second} == {tenant.id}
    assert after_first == 1  # 20 requests, one read of the key
    assert len(key_reads) == 2  # and one more once the entry lapsed
    assert not app.state.key_cache.lookups  # nothing left in flight
