"""How every Kafka client of the service connects: bootstrap servers, TLS and SASL, built
from settings in one place.

Every ``AIOKafkaConsumer``, ``AIOKafkaProducer`` and ``AIOKafkaAdminClient`` the service
creates takes ``**client_options(settings)`` (or the options handed down from it), and every
FastStream ``KafkaBroker`` takes ``**broker_options(settings)``: the stages, topic creation,
replay, backfill, the lag and topic watches, the monitor, the CLI and the benchmark. A client
built without them would connect in plain text where the broker wants TLS, or unauthenticated
where ACLs need a principal; ``tests/test_kafka_security.py`` fails on a construction that
takes no options.

Mechanisms: PLAIN, SCRAM-SHA-256/512 (user and password) and OAUTHBEARER (an access token
read from a file on every new connection, so whatever refreshes the file, a sidecar or the
platform's projected token, refreshes the client). GSSAPI is left out: it needs Kerberos
libraries the image does not carry.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from elk_resolver.settings import Settings

KafkaOptions = dict[str, Any]
"""Keyword arguments for any aiokafka client: ``bootstrap_servers`` and the security ones."""


class TokenFileProvider(AbstractTokenProvider):
    """OAUTHBEARER: the token in ``path``, read for every connection (a connection sends it
    once, when it authenticates)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    async def token(self) -> str:
        token = self.path.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"the OAUTHBEARER token file {self.path} is empty")
        return token


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    password = settings.kafka_ssl_key_password
    return _cached_ssl_context(
        str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password.get_secret_value() if password is not None else None,
        settings.kafka_ssl_check_hostname,
    )


@functools.lru_cache(maxsize=8)
def _cached_ssl_context(
    cafile: str | None, certfile: str | None, keyfile: str | None, password: str | None, check_hostname: bool
) -> ssl.SSLContext:
    # one context per configuration: loading a CA bundle for each of the dozens of clients a
    # process opens (probes reconnect) would only cost time; a context is safe to share
    if cafile is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
        if certfile:
            context.load_cert_chain(certfile, keyfile, password)
    else:
        context = create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile, password=password)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def security_options(settings: Settings) -> KafkaOptions:
    """The TLS and SASL keyword arguments of an aiokafka client (none for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: KafkaOptions = {"security_protocol": protocol}
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    mechanism = settings.kafka_sasl_mechanism
    if protocol.startswith("SASL_") and mechanism is not None:
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = TokenFileProvider(settings.kafka_sasl_oauth_token_file)
        else:
            options["sasl_plain_username"] = settings.kafka_sasl_username
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def client_options(settings: Settings, *, bootstrap_servers: str | None = None) -> KafkaOptions:
    """``bootstrap_servers`` (the settings', unless given) and the security options: spread
    into every aiokafka client, ``AIOKafkaConsumer(topic, **client_options(settings), ...)``."""
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    if not servers:
        raise ValueError("no Kafka bootstrap servers: set ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS")
    return {"bootstrap_servers": servers, **security_options(settings)}


def broker_options(settings: Settings, *, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """The same for a FastStream ``KafkaBroker``, which takes its security as an object (it
    also describes it in the AsyncAPI document): ``KafkaBroker(**broker_options(settings))``."""
    from faststream.security import (
        BaseSecurity,
        SASLOAuthBearer,
        SASLPlaintext,
        SASLScram256,
        SASLScram512,
    )

    servers = bootstrap_servers or settings.kafka_bootstrap_servers or "localhost:9092"
    options: dict[str, Any] = {"bootstrap_servers": servers}
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return options
    context = _ssl_context(settings)
    use_ssl = context is not None
    mechanism = settings.kafka_sasl_mechanism
    if not protocol.startswith("SASL_"):
        options["security"] = BaseSecurity(ssl_context=context, use_ssl=True)
    elif mechanism == "OAUTHBEARER":
        options["security"] = SASLOAuthBearer(ssl_context=context, use_ssl=use_ssl)
        options["sasl_oauth_token_provider"] = TokenFileProvider(settings.kafka_sasl_oauth_token_file)
    else:
        kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[mechanism]
        options["security"] = kind(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=use_ssl,
        )
    return options
