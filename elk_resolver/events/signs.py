"""What the objects of an incident may share, read from one event: the node or host it came
from and the dependency its message names (``db.payments.svc:5432``, ``10.0.3.7:5432``).

Ingest stores the dependency with each analysis event it publishes (``analysis_triggers``), the
analysis stage puts both in a request's ``signs``, and the execute stage reads them from the
database to tell a dependency outage (many services naming one unreachable host: never restart
the clients) and a node going bad (many workloads failing only on one node: one held incident)
from objects that each need their own action.
"""

from __future__ import annotations

import re

__all__ = ["dependency_of"]

# a host with at least one dot (a service's DNS name, an FQDN, an IPv4 address) and a port
_DEPENDENCY = re.compile(
    r"\b(?P<host>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)+)(?::(?P<port>[0-9]{2,5}))\b"
)


# ``file.go:1298``, ``Foo.java:42``: a source line in a log prefix or a stack frame, not a host
_SOURCE_FILES = frozenset({"go", "java", "py", "js", "ts", "rb", "c", "cc", "cpp", "h", "hpp", "rs", "kt", "scala",
                           "cs", "php", "pl", "swift", "ex", "exs", "erl", "clj", "groovy", "lua"})  # fmt: skip


def dependency_of(message: str) -> str | None:
    """The first ``host:port`` the message names (lower case), else None. A source file and
    line (``pod_workers.go:1298``, ``Foo.java:42``) is not a host."""
    for m in _DEPENDENCY.finditer(message.lower()) if message else ():
        if m.group("host").rsplit(".", 1)[-1] not in _SOURCE_FILES:
            return m.group(0)
    return None
