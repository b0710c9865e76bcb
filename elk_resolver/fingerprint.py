"""Error fingerprint: SHA-256 over the error type and a template of the message."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

VERSIONS = ("exact", "template")
DEFAULT_VERSION = "template"
SEPARATOR = "\x1f"
P = "<*>"

_TLD = r"(?:com|net|org|edu|gov|mil|int|io|co|uk|de|jp|cn|hk|fr|ru|br|in|au|ca|us|eu|info|biz|local|internal|lan|localdomain)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_UNIT = r"(?:[KMGTP]i?B|B|bytes|ms|us|ns|sec|secs|s|min|h)"

# (gate, pattern, replacement): the pattern runs only when the gate substring is in the message.
_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("://", re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s\"'<>]+"), P),
    ("@", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), P),
    (":", re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), P),
    (":", re.compile(rf"\b(?:{_DAY},?\s+)?{_MONTH}\s+\d{{1,2}}(?:,?\s+\d{{4}})?\s+\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:\s+[A-Z]{{3,4}})?(?:\s+\d{{4}})?\b"), P),
    (".", re.compile(rf"(?<![\w.-])[A-Za-z][\w-]*(?:\.[\w-]+)*\.{_TLD}\b(?::\d+)?"), P),
    ("=", re.compile(r"""(=\s*)(?:"[^"]*"|'[^']*')"""), r"\1" + P),
    ("/", re.compile(r"(?<![\w./])(?:\.{1,2}|~)?/[\w.\-/%?&=+]+"), P),
    ("/", re.compile(r"(?<![^\s(\[{=,:])[\w.-]*\w/[\w.][^\s\"'()\[\]{},;]*"), P),
    ("", re.compile(rf"[<>~]?(?<![\w-])(?=(?:[\w-]|[.:](?=[\w-]))*\d)[\w-]+(?:[.:][\w-]+)*(?:\s?{_UNIT}\b)?"), P),
    ("()", re.compile(r"\(\)"), "(" + P + ")"),
    ("<*> (<*>)", re.compile(r"<\*> \(<\*>\)"), P),
    ("<*>", re.compile(r"<\*>(?:(?:[.:,_/-]{1,2}|, )<\*>)+"), P),
]


def normalize(message: str) -> str:
    for gate, pattern, placeholder in _RULES:
        if gate in message:
            message = pattern.sub(placeholder, message)
    return message


@dataclass(frozen=True, slots=True)
class Fingerprint:
    hash: str
    template: str
    version: str


def fingerprint(error_type: str, message: str, version: str = DEFAULT_VERSION) -> Fingerprint:
    if version == "exact":
        template = message
    elif version == "template":
        template = normalize(message)
    else:
        raise ValueError(f"unknown fingerprint version {version!r}; expected one of {VERSIONS}")
    digest = hashlib.sha256(f"{error_type}{SEPARATOR}{template}".encode()).hexdigest()
    return Fingerprint(hash=digest, template=template, version=version)
