"""The asyncpg pool and the named SQL statements kept in ``schema/queries``.

Queries follow the aiosql convention: ``-- name: upsert-error-logs`` starts a statement, the
next comment line describes it. They are loaded once, at start, into :data:`Queries`.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache
from importlib import resources

import asyncpg
import orjson

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_-]+)\s*$", re.MULTILINE)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """orjson for json/jsonb both ways: faster than the stdlib and handles datetimes."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


# The document's columns are TIMESTAMP without time zone with DEFAULT NOW(): a session in
# UTC makes NOW() and the naive UTC datetimes the service passes agree on every server.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "elk-resolver"}


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs) -> asyncpg.Pool:
    server_settings = {**SERVER_SETTINGS, **kwargs.pop("server_settings", {})}
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        server_settings=server_settings,
        **kwargs,
    )


class Queries(dict[str, str]):
    """Statement name (dashes become underscores) -> SQL text; attribute access for brevity."""

    def __getattr__(self, name: str) -> str:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in schema/queries") from None


def parse_queries(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[match[1].replace("-", "_")] = "\n".join(lines).strip().rstrip(";")
    return found


@cache
def queries() -> Queries:
    loaded = Queries()
    for entry in sorted(resources.files("schema").joinpath("queries").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse_queries(entry.read_text(encoding="utf-8")).items():
                if name in loaded:
                    raise RuntimeError(f"query {name!r} is defined twice in schema/queries")
                loaded[name] = sql
    return loaded


def is_transient_db_error(exc: BaseException) -> bool:
    """A failure of the connection or the server, not of the data: retrying the same work can
    succeed once the database is back."""
    if isinstance(exc, OSError | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError  # 08: connection exceptions
        | asyncpg.exceptions.OperatorInterventionError  # 57: admin shutdown, cannot connect now
        | asyncpg.exceptions.InsufficientResourcesError  # 53: too many connections, disk full
        | asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock, serialization failure
    ):
        return True
    # asyncpg's own "connection is closed" / "connection was closed in the middle of operation";
    # not its subclasses (DataError and friends are about the data or the client, not the server)
    return type(exc) is asyncpg.InterfaceError or isinstance(exc, asyncpg.exceptions.InternalClientError)
