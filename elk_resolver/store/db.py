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


# SQLSTATEs that say "not now" (PostgreSQL's Appendix A): the same statement can succeed once
# the server, the network or the deployment is back in order, so the work waits and retries
# and the event never goes to the dead-letter topic. Everything else (class 22 data exceptions,
# 23 integrity violations, 54 program limits...) is about the data, and a record PostgreSQL
# refuses for its data is dead-lettered.
TRANSIENT_SQLSTATE_CLASSES = frozenset({
    "08",  # connection exception: the connection failed or was lost
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "58",  # system error: I/O error, a file the server cannot find (its disk or volume)
})
TRANSIENT_SQLSTATES = frozenset({
    "25006",  # read_only_sql_transaction: a replica after a failover, a demoted primary,
    #           default_transaction_read_only = on
    "25P03",  # idle_in_transaction_session_timeout: the server ended the session
    "25P04",  # transaction_timeout (PostgreSQL 17): the server ended the session
    "55P03",  # lock_not_available: someone else's lock (lock_timeout), e.g. maintenance DDL
    "57000",  # operator_intervention
    "57014",  # query_canceled: statement_timeout on a loaded server, or cancelled by an operator
    # The setup, not the data: every statement would fail the same way until an operator
    # fixes the grants, the credentials or the schema; dead-lettering would empty the stream.
    "28000", "28P01",  # invalid authorization / password: the credentials changed
    "3D000",  # invalid_catalog_name: the database is not there (yet)
    "3F000",  # invalid_schema_name
    "42501",  # insufficient_privilege: a grant was revoked
    "42P01", "42703", "42883",  # undefined table, column, function: a migration is missing
})


def sqlstate_is_transient(code: str | None) -> bool:
    """Whether a statement that failed with SQLSTATE ``code`` can succeed if tried again later
    (the server, the network or the deployment recovers) rather than failing the same way for
    the same data forever. Classes 08, 53, 58 and 57P, class 40 except 40002 (a deferred
    constraint violated at commit: the data), 25006 read-only, and the codes of
    :data:`TRANSIENT_SQLSTATES`."""
    if not code or len(code) != 5:
        return False
    if code[:2] in TRANSIENT_SQLSTATE_CLASSES or code.startswith("57P") or code in TRANSIENT_SQLSTATES:
        return True
    return code[:2] == "40" and code != "40002"


def is_transient_db_error(exc: BaseException) -> bool:
    """A failure of the connection, the server or the deployment, not of the data: retrying
    the same work can succeed once the database is back (see :func:`sqlstate_is_transient`)."""
    if isinstance(exc, OSError | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return sqlstate_is_transient(getattr(exc, "sqlstate", None))
    # asyncpg's own "connection is closed" / "connection was closed in the middle of operation";
    # not its subclasses (DataError and friends are about the data or the client, not the server)
    return type(exc) is asyncpg.InterfaceError or isinstance(exc, asyncpg.exceptions.InternalClientError)


_WORDS = {
    "25006": "PostgreSQL accepts no writes (read-only: a replica after a failover, a demoted primary, "
             "or default_transaction_read_only is on)",
    "25P03": "PostgreSQL ended an idle session (idle_in_transaction_session_timeout)",
    "25P04": "PostgreSQL ended a session that ran too long (transaction_timeout)",
    "53100": "PostgreSQL's disk is full",
    "53200": "PostgreSQL is out of memory",
    "53300": "PostgreSQL has no connection to spare (max_connections reached)",
    "55P03": "a table the service writes is locked by another session (lock_timeout)",
    "57014": "PostgreSQL cancelled a statement (statement_timeout, or an operator)",
    "57P01": "PostgreSQL is shutting down (administrator command)",
    "57P02": "PostgreSQL crashed and is restarting",
    "57P03": "PostgreSQL is starting up or shutting down and takes no connections yet",
    "57P04": "the service's database was dropped",
    "3D000": "the service's database does not exist",
    "42501": "the service's database role lacks a privilege (run `elk-resolver roles` as the owner, or fix the grants)",
    "28000": "PostgreSQL refuses the service's credentials",
    "28P01": "PostgreSQL refuses the service's password",
}


def describe_db_failure(exc: BaseException) -> str:
    """What a failure of the database means, in words an operator can act on (for ``/ready``
    and the log), followed by the server's own words where it gave any."""
    detail = " ".join(str(exc).split())[:200]
    code = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    if code in _WORDS:
        words = _WORDS[code]
    elif code in ("3F000", "42P01", "42703", "42883"):
        words = "the schema is not what the service expects (run `elk-resolver migrate`)"
    elif code and code[:2] == "40":
        words = "PostgreSQL rolled back a transaction (deadlock or serialization conflict); retried"
    elif code and code[:2] == "58":
        words = "PostgreSQL cannot read or write its files (I/O error)"
    elif code and code[:2] == "53":
        words = "PostgreSQL is out of a resource"
    elif isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "PostgreSQL did not answer in time (frozen, overloaded or cut off by the network)"
    elif isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and "[Errno 111]" in detail):
        return f"PostgreSQL refuses connections (stopped or restarting): {detail}"
    elif isinstance(exc, OSError | ConnectionError) or (code and code[:2] == "08"):
        words = "the connection to PostgreSQL failed or was lost"
    elif type(exc) is asyncpg.InterfaceError:
        words = "the connection to PostgreSQL was lost"
    elif isinstance(exc, asyncpg.exceptions.InternalClientError):
        words = "a connection to PostgreSQL was left mid-operation by an earlier failure"
    else:
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"{words}: {detail}" if detail else words


def connection_usable(conn: asyncpg.Connection | None) -> bool:
    """False for a pooled connection asyncpg has already given back to the pool (it does so
    when the server closes it): any call on it would fail with "connection has been released
    back to the pool", which hides why it was closed."""
    if conn is None:
        return False
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
