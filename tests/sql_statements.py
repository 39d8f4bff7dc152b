"""Which SQL statements this process sends while a block runs: for tests of how many round trips a path costs."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy import Engine, event


@contextlib.contextmanager
def statements_sent(matching: Callable[[str], bool] = lambda statement: True) -> Iterator[list[str]]:
    """The statements, among those `matching` accepts, that any engine of this process sends inside the block."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if matching(statement):
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)
