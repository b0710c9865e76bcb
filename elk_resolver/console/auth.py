"""Who is asking, and whether a form really comes from the console.

A person is one of (first that applies):
1. the user named by ``console_user_header`` (groups in ``console_groups_header``), believed
   only when the request comes straight from an address in ``console_trusted_proxies`` (an
   authenticating proxy such as oauth2-proxy in front of the console);
2. ``Authorization: Bearer TOKEN`` whose SHA-256 is a value of ``console_tokens``;
3. the console's own session cookie, set by ``/login`` against ``console_users`` (scrypt hashes
   from ``elk-resolver console hash-password``).
Nobody else may change anything. Reading is open from loopback; from anywhere else it needs a
person too.

Every form carries a CSRF token: HMAC(console_secret, seed) where the seed is a random value in
an HttpOnly, SameSite=Strict cookie; a POST whose token does not match, whose ``Origin`` is
another site or whose ``Sec-Fetch-Site`` says cross-site changes nothing. Cookies are
``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the console is reached over TLS
(directly, or ``X-Forwarded-Proto: https`` from a trusted proxy).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from elk_resolver.operations.people import Person

if TYPE_CHECKING:
    from aiohttp import web

    from elk_resolver.settings import Settings

log = logging.getLogger("elk_resolver.console")

SESSION_COOKIE = "elk_console_session"
SEED_COOKIE = "elk_console_csrf"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash``, what ``console_users`` holds."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


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

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        if settings.console_secret:
            return cls(settings, settings.console_secret.encode())
        if settings.console_users:
            log.warning("console_secret is not set: sessions last until this process stops and are not shared "
                        "by other copies")
        return cls(settings, secrets.token_bytes(32))

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}:{text}".encode(), hashlib.sha256).digest())

    # -- identity ---------------------------------------------------------------------------
    def from_proxy(self, request: web.Request) -> bool:
        return _in(request.remote, self.settings.console_trusted_proxies)

    def person(self, request: web.Request) -> Person | None:
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
        return self._session(request.cookies.get(SESSION_COOKIE))

    def may_read(self, request: web.Request, person: Person | None) -> bool:
        return person is not None or is_loopback(request.remote)

    # -- sessions -----------------------------------------------------------------------------
    def login(self, name: str, password: str) -> Person | None:
        stored = self.settings.console_users.get(name)
        if stored is None:
            check_password(password, hash_password("timing"))  # the same work for unknown names
            return None
        if not check_password(password, stored):
            return None
        return Person(name[:50], frozenset(self.settings.console_groups.get(name, [])), "login")

    def session_value(self, person: Person) -> str:
        body = _b64(orjson.dumps({"u": person.name, "g": sorted(person.groups),
                                  "exp": int(time.time() + self.settings.console_session_s)}))
        return f"{body}.{self._mac('session', body)}"

    def _session(self, value: str | None) -> Person | None:
        if not value or "." not in value:
            return None
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = orjson.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if data.get("exp", 0) < time.time() or data.get("u") not in self.settings.console_users:
            return None
        return Person(str(data["u"]), frozenset(data.get("g") or ()), "login")

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
