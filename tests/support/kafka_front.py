"""A TLS- and SASL-terminating front for the embedded Tansu broker, so the service's Kafka
security is tested against a real broker.

The Tansu build the tests run cannot do either itself (shared notes): with ``--cert`` an
aiokafka SSL client hangs, and with ``--authentication`` its in-memory store keeps no SCRAM
credential (``tansu user create`` answers success, every SCRAM login then fails) and it offers
no PLAIN. So the front does what a Kafka listener with ``ssl.client.auth=required`` and
``sasl.enabled.mechanisms`` does at the start of a connection, then pipes bytes to Tansu,
which advertises the front's address (``EmbeddedKafka(advertised=...)``) so every client,
after its bootstrap, connects through it again:

* TLS with the test CA's server certificate (for 127.0.0.1); with ``require_client_cert`` a
  client without a certificate from that CA is turned away in the handshake;
* SASL: ApiVersions is answered by Tansu; SaslHandshake and SaslAuthenticate (v0/v1) by the
  front, for PLAIN, SCRAM-SHA-256/512 (RFC 5802, checked against the password) and
  OAUTHBEARER (a token from ``tokens``). Any other request before authentication closes the
  connection and is recorded in ``refused``, as is a wrong password.

Certificates come from ``openssl`` (argument lists, no shell): the ``cryptography`` package is
not installed here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting it must refuse the broker


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, EC keys."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN=elk-test-{name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "elk-resolver", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                        d / "other-ca.pem")


def server_context(certs: Certificates, *, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    if require_client_cert:
        context.load_verify_locations(certs.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the Kafka protocol, just the start of a connection ---------------------------------------


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _header(frame: bytes) -> tuple[int, int, int, int]:
    """(api_key, api_version, correlation_id, offset of the body): request header v1."""
    api_key, version, correlation = struct.unpack_from(">hhi", frame, 0)
    client_id_len = struct.unpack_from(">h", frame, 8)[0]
    return api_key, version, correlation, 10 + max(client_id_len, 0)


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _handshake_response(correlation: int, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ihi", correlation, error, len(mechanisms)) + b"".join(_string(m) for m in mechanisms)
    return _frame(body)


def _authenticate_response(correlation: int, version: int, error: int, message: str | None, data: bytes) -> bytes:
    body = struct.pack(">ih", correlation, error) + _string(message) + struct.pack(">i", len(data)) + data
    if version >= 1:
        body += struct.pack(">q", 0)
    return _frame(body)


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802, no channel binding)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = _HASHES[mechanism]
        self.users = users
        self.user: str | None = None
        self.expected: tuple[bytes, bytes, str] | None = None  # stored key, server key, auth message prefix

    def first(self, message: str) -> bytes | None:
        if not message.startswith("n,,"):
            return None
        bare = message[3:]
        attrs = dict(part.split("=", 1) for part in bare.split(","))
        self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        password = self.users.get(self.user)
        if password is None:
            return None
        salt, iterations = os.urandom(16), 4096
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        self.expected = (self.hash(client_key).digest(), server_key, f"{bare},{server_first}")
        return server_first.encode()

    def final(self, message: str) -> bytes | None:
        if self.expected is None:
            return None
        stored_key, server_key, prefix = self.expected
        without_proof, _, proof = message.rpartition(",p=")
        auth_message = f"{prefix},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if not hmac.compare_digest(self.hash(client_key).digest(), stored_key):
            return None
        return b"v=" + base64.b64encode(hmac.new(server_key, auth_message, self.hash).digest())


# --- the front ----------------------------------------------------------------------------------


@dataclass
class KafkaFront:
    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    tls: ssl.SSLContext | None = None
    users: dict[str, str] | None = None  # SASL PLAIN/SCRAM; None: no SASL
    tokens: set[str] | None = None  # OAUTHBEARER tokens accepted
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
    authenticated: list[tuple[str, str]] = field(default_factory=list)  # (principal, mechanism)
    tls_peers: list[str] = field(default_factory=list)  # client certificate subjects
    refused: list[str] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def sasl(self) -> bool:
        return self.users is not None or self.tokens is not None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> KafkaFront:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        up_writer = None
        try:
            peer = writer.get_extra_info("peercert")
            if peer:
                self.tls_peers.append(dict(x[0] for x in peer["subject"]).get("commonName", "?"))
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            if self.sasl and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation, body = _header(frame)
            if api_key == API_VERSIONS:
                up_writer.write(_frame(frame))
                await up_writer.drain()
                writer.write(_frame(await _read_frame(up_reader)))
                await writer.drain()
                continue
            if api_key == SASL_HANDSHAKE:
                n = struct.unpack_from(">h", frame, body)[0]
                mechanism = frame[body + 2: body + 2 + n].decode()
                offered = [m for m in self.mechanisms if m != "OAUTHBEARER" or self.tokens is not None]
                ok = mechanism in offered
                writer.write(_handshake_response(correlation, 0 if ok else UNSUPPORTED_SASL_MECHANISM, offered))
                await writer.drain()
                if not ok:
                    self.refused.append(f"mechanism {mechanism}")
                    return False
                scram = _Scram(mechanism, self.users or {}) if mechanism in _HASHES else None
                continue
            if api_key == SASL_AUTHENTICATE and mechanism is not None:
                n = struct.unpack_from(">i", frame, body)[0]
                data = frame[body + 4: body + 4 + n].decode("utf-8", "replace")
                answer, principal = self._step(mechanism, scram, data)
                if answer is None:
                    writer.write(_authenticate_response(correlation, version, SASL_AUTHENTICATION_FAILED,
                                                        "authentication failed", b""))
                    await writer.drain()
                    self.refused.append(f"{mechanism} login failed")
                    return False
                writer.write(_authenticate_response(correlation, version, 0, None, answer))
                await writer.drain()
                if principal is not None:
                    self.authenticated.append((principal, mechanism))
                    return True
                continue
            self.refused.append(f"api {api_key} before authentication")
            return False

    def _step(self, mechanism: str, scram: _Scram | None, data: str) -> tuple[bytes | None, str | None]:
        """(answer, principal once authenticated); answer None: refused."""
        if mechanism == "PLAIN":
            _, user, password = (data.split("\0") + ["", "", ""])[:3]
            ok = self.users is not None and self.users.get(user) == password
            return (b"", user) if ok else (None, None)
        if mechanism == "OAUTHBEARER":
            fields = dict(p.split("=", 1) for p in data.split("\x01") if "=" in p and not p.startswith("n,"))
            token = fields.get("auth", "").removeprefix("Bearer ")
            return (b"", f"token:{token[:8]}") if self.tokens and token in self.tokens else (None, None)
        if scram is not None:
            if scram.expected is None:
                return scram.first(data), None
            answer = scram.final(data)
            return (answer, scram.user) if answer is not None else (None, None)
        return None, None
