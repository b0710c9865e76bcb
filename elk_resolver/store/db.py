"""The asyncpg pool and the named SQL statements kept in ``schema/queries``.

Queries follow the aiosql convention: ``-- name: upsert-error-logs`` starts a statement, the
next comment line describes it. They are loaded once, at start, into :data:`Queries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from functools import cache
from importlib import resources

import asyncpg
import orjson

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_-]+)\s*$", re.MULTILINE)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


log = logging.getLogger(__name__)

# A statement that has not answered in this long is treated as a connection failure (retried
# with backoff): a frozen or half-dead server must not hang a stage silently.
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_IDLE_S = 30
"""TCP keepalives, both ways: the client's socket probes after this many idle seconds (and
every 10 s after, 3 misses close it), and the server is asked to do the same, so a
connection whose peer vanished (host down, network cut) fails instead of waiting forever."""


def _keepalive(conn: asyncpg.Connection, idle_s: int) -> None:
    transport = getattr(conn, "_transport", None)  # asyncpg exposes no socket option
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


async def init_connection(conn: asyncpg.Connection) -> None:
    """orjson for json/jsonb both ways: faster than the stdlib and handles datetimes."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


# The document's columns are TIMESTAMP without time zone with DEFAULT NOW(): a session in
# UTC makes NOW() and the naive UTC datetimes the service passes agree on every server.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "elk-resolver"}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = COMMAND_TIMEOUT_S,
    keepalive_idle_s: int = KEEPALIVE_IDLE_S,
    **kwargs,
) -> asyncpg.Pool:
    """The pool every part of the service uses: orjson codecs, UTC sessions, a command
    timeout (``command_timeout``, seconds, per statement), a connect timeout and TCP
    keepalives."""
    server_settings = {
        **SERVER_SETTINGS,
        "tcp_keepalives_idle": str(keepalive_idle_s),
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
        **kwargs.pop("server_settings", {}),
    }
    kwargs.setdefault("timeout", CONNECT_TIMEOUT_S)

    async def init(conn: asyncpg.Connection) -> None:
        _keepalive(conn, keepalive_idle_s)
        await init_connection(conn)

    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        server_settings=server_settings,
        command_timeout=command_timeout,
        **kwargs,
    )


def pool_options(settings) -> dict:
    """The pool's timeouts from settings (``db_command_timeout_s``, ``db_connect_timeout_s``)."""
    return {
        "command_timeout": settings.db_command_timeout_s,
        "timeout": settings.db_connect_timeout_s,
        "keepalive_idle_s": settings.db_keepalive_idle_s,
    }


async def close_pool(pool: asyncpg.Pool, timeout: float) -> None:
    """Close gracefully within ``timeout``, else terminate: a frozen server must not hold a
    shutdown (its connections' statements were abandoned and are redelivered anyway)."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("database pool did not close in %.0fs (%s); terminating its connections", timeout, exc)
        pool.terminate()


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
