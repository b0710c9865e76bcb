"""Who is asking, and whether a form really comes from the console.

A person is one of (first that applies):
1. the user named by ``console_user_header`` (groups in ``console_groups_header``), believed
   only when the request comes straight from an address in ``console_trusted_proxies`` (an
   authenticating proxy such as oauth2-proxy in front of the console);
2. ``Authorization: Bearer TOKEN`` whose SHA-256 is a value of ``console_tokens``;
3. the console's own session, set by ``/login`` against ``console_users`` (scrypt hashes from
   ``elk-resolver console hash-password``): the cookie holds a random token, the session is a
   row of ``console_sessions`` (migration 0081) that signing out, or an approver on
   ``/sessions``, ends for every copy at once.
Nobody else may change anything. Reading is open from loopback; from anywhere else it needs a
person too.

Signing in (issue 21): scrypt runs in a thread, at most ``LOGIN_THREADS`` at once (the event
loop every stage shares never waits on it), and costs the same for a name that does not exist;
after ``THROTTLE_FREE`` failures for a name or an address, each further attempt waits a delay
that doubles with every failure (up to ``THROTTLE_MAX_S``), the right password included, and
is refused without running scrypt. ``next`` after signing in is followed only when it is a
strict relative path (:func:`safe_next`).

Every form carries a CSRF token: HMAC(console_secret, seed) where the seed is a random value in
an HttpOnly, SameSite=Strict cookie; a POST whose token does not match, whose ``Origin`` is
another site or whose ``Sec-Fetch-Site`` says cross-site changes nothing. Cookies are
``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the console is reached over TLS
(directly, or ``X-Forwarded-Proto: https`` from a trusted proxy).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from elk_resolver.operations.people import Person
from elk_resolver.store.db import queries

if TYPE_CHECKING:
    from aiohttp import web

    from elk_resolver.settings import Settings

log = logging.getLogger("elk_resolver.console")

SESSION_COOKIE = "elk_console_session"
SEED_COOKIE = "elk_console_csrf"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
LOGIN_THREADS = 2  # scrypt runs at most this many at once (each ~16 MB and ~50 ms of a core)
LOGIN_WAITING_MAX = 32  # more sign-ins waiting for a thread than this are answered 503 at once
THROTTLE_FREE = 3  # failures for a name or an address before the delay starts
THROTTLE_BASE_S = 1.0  # the first delay; it doubles with every further failure
THROTTLE_MAX_S = 300.0
THROTTLE_KEYS = 10_000  # names and addresses remembered (the oldest are forgotten first)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash``, what ``console_users`` holds."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _check_or_dummy(password: str, stored: str | None) -> bool:
    dummy = _unknown_user_hash()  # made by the process's first sign-in, whoever signs in
    if stored is None:
        check_password(password, dummy)
        return False
    return check_password(password, stored)


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _unknown_user_hash() -> str:
    """A hash with the same cost parameters, checked when the name does not exist: one scrypt,
    as for a name that does (a fresh hash_password as well would be two, and tell the names)."""
    return hash_password(secrets.token_urlsafe(16))


def _unsafe_chars(text: str) -> bool:
    return "\\" in text or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: ``target`` when it is a strict relative path on this
    site, else ``/``. Browsers drop tabs and newlines from URLs and read ``\\`` as ``/``, so
    ``/\t/evil.example`` and ``/\\evil.example`` would leave the site as ``//evil.example``:
    the target may hold no whitespace, control character or backslash at all, and its path may
    not start with ``//`` or hold one of those in any percent-decoding."""
    if not target or not target.startswith("/") or _unsafe_chars(target):
        return "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    readings = [path]
    for _ in range(3):
        decoded = unquote(readings[-1])
        if decoded == readings[-1]:
            break
        readings.append(decoded)
    else:
        return "/"  # still encoded after three decodings
    for text in readings:
        if text.startswith("//") or _unsafe_chars(text):
            return "/"
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return "/"
    return target


@dataclass
class Throttle:
    """Failed sign-ins per key (a name, an address): after ``free`` failures, the next attempt
    is allowed only ``base * 2**(failures - free)`` seconds (at most ``cap``) after the last
    failure. Per process, bounded; a success clears the key."""

    free: int = THROTTLE_FREE
    base: float = THROTTLE_BASE_S
    cap: float = THROTTLE_MAX_S
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)

    def wait_s(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        failures, last = self._failures.get(key, (0, 0.0))
        if failures < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (failures - self.free))
        return max(0.0, last + delay - self.clock())

    def failed(self, key: str) -> None:
        failures, _ = self._failures.pop(key, (0, 0.0))
        self._failures[key] = (failures + 1, self.clock())
        while len(self._failures) > THROTTLE_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class TooManyAttempts(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many failed sign-ins: try again in {max(1, round(wait_s))} s")
        self.wait_s = wait_s


class LoginBusy(Exception):
    """More sign-ins are waiting for a scrypt thread than LOGIN_WAITING_MAX."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _in(address: str | None, networks: list[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
class Gate:
    settings: Settings
    secret: bytes
    pool: Callable[[], Any] = lambda: None  # the asyncpg pool sessions are kept in
    throttle: Throttle = field(default_factory=Throttle)
    _slots: asyncio.Semaphore | None = None
    _waiting: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, pool: Callable[[], Any] = lambda: None) -> Gate:
        if not settings.console_secret and settings.console_users:
            log.warning("console_secret is not set: CSRF tokens are not shared by other copies")
        secret = settings.console_secret.encode() if settings.console_secret else secrets.token_bytes(32)
        return cls(settings, secret, pool)

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}:{text}".encode(), hashlib.sha256).digest())

    # -- identity ---------------------------------------------------------------------------
    def from_proxy(self, request: web.Request) -> bool:
        return _in(request.remote, self.settings.console_trusted_proxies)

    async def person(self, request: web.Request) -> Person | None:
        s = self.settings
        user = request.headers.get(s.console_user_header)
        if user and self.from_proxy(request):
            groups = request.headers.get(s.console_groups_header, "")
            return Person(user.strip()[:50], frozenset(g.strip() for g in groups.split(",") if g.strip()), "proxy")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer ") and s.console_tokens:
            digest = token_hash(auth[7:].strip())
            for name, stored in s.console_tokens.items():
                if hmac.compare_digest(digest, stored.lower()):
                    return Person(name[:50], frozenset(s.console_groups.get(name, [])), "token")
            return None
        return await self._session(request.cookies.get(SESSION_COOKIE))

    def may_read(self, request: web.Request, person: Person | None) -> bool:
        return person is not None or is_loopback(request.remote)

    # -- signing in -----------------------------------------------------------------------------
    async def login(self, name: str, password: str, address: str | None) -> Person | None:
        """The person, or None for a wrong name or password. Raises :class:`TooManyAttempts`
        while the name or the address must wait, :class:`LoginBusy` when too many wait."""
        keys = (f"user:{name[:100]}", f"address:{address or '?'}")
        wait = max(self.throttle.wait_s(key) for key in keys)
        if wait > 0:
            raise TooManyAttempts(wait)
        stored = self.settings.console_users.get(name)
        ok = await self._scrypt(password, stored)
        if not ok or stored is None:
            for key in keys:
                self.throttle.failed(key)
            log.warning("console sign-in failed for %r from %s", name[:50], address)
            return None
        for key in keys:
            self.throttle.succeeded(key)
        return Person(name[:50], frozenset(self.settings.console_groups.get(name, [])), "login")

    async def _scrypt(self, password: str, stored: str | None) -> bool:
        """check_password in a thread, at most LOGIN_THREADS at once; a name that does not exist
        costs one scrypt too."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(LOGIN_THREADS)
        if self._waiting >= LOGIN_WAITING_MAX:
            raise LoginBusy
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(_check_or_dummy, password, stored)
        finally:
            self._waiting -= 1

    # -- sessions -------------------------------------------------------------------------------
    async def start_session(self, person: Person, request: web.Request) -> str:
        """A new session row; the token for the cookie."""
        token = secrets.token_urlsafe(32)
        await self._db().fetchval(
            queries().console_session_start, token_hash(token), person.name, sorted(person.groups),
            request.remote, request.headers.get("User-Agent", ""), self.settings.console_session_s)
        return token

    async def end_session(self, token: str | None, by: str) -> None:
        if token:
            await self._db().execute(queries().console_session_end, token_hash(token), by[:50])

    async def active_sessions(self) -> list[Any]:
        return await self._db().fetch(queries().console_sessions_active)

    async def end_session_by_id(self, session_id: int, by: str) -> str | None:
        return await self._db().fetchval(queries().console_session_end_by_id, session_id, by[:50])

    def _db(self) -> Any:
        pool = self.pool()
        if pool is None:
            raise RuntimeError("the console's sessions need the database pool")
        return pool

    async def _session(self, token: str | None) -> Person | None:
        if not token or len(token) > 100:
            return None
        pool = self.pool()
        if pool is None:
            return None
        row = await pool.fetchrow(queries().console_session_find, token_hash(token))
        if row is None or row["user_name"] not in self.settings.console_users:
            return None
        return Person(row["user_name"], frozenset(row["groups"] or ()), "login")

    # -- CSRF ---------------------------------------------------------------------------------
    def seed(self, request: web.Request) -> tuple[str, bool]:
        """The CSRF seed of this browser, and whether it is new (to be set as a cookie)."""
        current = request.cookies.get(SEED_COOKIE)
        if current and len(current) >= 20:
            return current, False
        return secrets.token_urlsafe(24), True

    def csrf_token(self, seed: str) -> str:
        return self._mac("csrf", seed)

    def same_site_post(self, request: web.Request, form_token: str | None) -> str | None:
        """None when the POST may proceed, else why not."""
        if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
            return "cross-site request"
        origin = request.headers.get("Origin")
        if origin and origin != "null":
            expected = f"{self.scheme(request)}://{request.host}"
            if origin.rstrip("/") != expected:
                return f"request from another origin ({origin})"
        elif origin == "null":
            return "request from an opaque origin"
        seed = request.cookies.get(SEED_COOKIE)
        if not seed or not form_token or not hmac.compare_digest(form_token, self.csrf_token(seed)):
            return "missing or wrong CSRF token (reload the page and try again)"
        return None

    def scheme(self, request: web.Request) -> str:
        forwarded = request.headers.get("X-Forwarded-Proto")
        if forwarded and self.from_proxy(request):
            return forwarded.split(",")[0].strip()
        return request.scheme

    def cookie_options(self, request: web.Request) -> dict:
        return {"httponly": True, "samesite": "Strict", "secure": self.scheme(request) == "https", "path": "/"}
