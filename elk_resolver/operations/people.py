"""Who decides: a :class:`Person`, and :func:`may_decide`, the approver allowlist
(``console_approvers``: user names or ``group:NAME``; empty lets any authenticated person
decide). The decider's name is what the execution records carry (``executed_by``,
``decision_log.decided_by``).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elk_resolver.settings import Settings


class Refused(Exception):
    """The operation was not carried out: not allowed, or not possible (the text says why)."""


@dataclass(frozen=True)
class Person:
    name: str
    groups: frozenset[str] = frozenset()
    via: str = "cli"  # cli, login, token, proxy

    def __str__(self) -> str:
        return self.name


def may_decide(settings: Settings, person: Person | None) -> bool:
    if person is None or not person.name:
        return False
    allowed = set(settings.console_approvers)
    if not allowed:
        return True
    return person.name in allowed or any(f"group:{g}" in allowed for g in person.groups)


def require(settings: Settings, person: Person | None, what: str) -> Person:
    if person is None or not person.name:
        raise Refused(f"{what} needs an authenticated person")
    if not may_decide(settings, person):
        raise Refused(f"{person.name} is not on the approver list (console_approvers), so may not {what}")
    return person


def cli_person(settings: Settings, explicit: str | None = None) -> tuple[Person | None, str]:
    """Who the CLI decides as, and where that name came from (said back to the user)."""
    if explicit and explicit.strip():
        return Person(explicit.strip()[:50]), "--by"
    if settings.operator:
        return Person(settings.operator.strip()[:50]), "ELK_RESOLVER_OPERATOR"
    for var in ("USER", "LOGNAME"):
        if os.environ.get(var):
            return Person(os.environ[var][:50]), f"${var}"
    try:
        return Person(getpass.getuser()[:50]), "the login name"
    except (KeyError, OSError):
        return None, ""
