"""Kafka TLS and SASL (issue 21): every client the service creates connects with the
configured security, and the whole pipeline runs through a broker that accepts nothing else.

The broker is the embedded Tansu behind ``tests/support/kafka_front.py``, which terminates TLS
(client certificates required) and SASL (PLAIN, SCRAM-SHA-256/512 checked against a
password, OAUTHBEARER) and advertises its own address, so every connection any client opens,
bootstrap or not, goes through it and is counted.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from pydantic import ValidationError

from elk_resolver.kafka.embedded import EmbeddedKafka
from elk_resolver.kafka.offsets import start_or_close
from elk_resolver.kafka.security import broker_options, client_options
from elk_resolver.kafka.topics import ensure_topics
from elk_resolver.operations.replay import replay
from elk_resolver.settings import make_settings
from streams.app import create_app
from tests.support.kafka_front import KafkaFront, free_port, make_certificates, server_context
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
USERS = {"elk-resolver": "s3cret-Pw"}
TOKEN = "eyJ.test-access-token.sig"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@contextlib.asynccontextmanager
async def secured_broker(certs, *, sasl: bool, require_client_cert: bool = True) -> AsyncIterator[KafkaFront]:
    """A Tansu of its own (it advertises the front's address) behind a TLS (and SASL) front."""
    port = free_port()
    broker = EmbeddedKafka(advertised=f"127.0.0.1:{port}")
    broker.start()
    try:
        front = KafkaFront(("127.0.0.1", broker.port), port=port,
                           tls=server_context(certs, require_client_cert=require_client_cert),
                           users=USERS if sasl else None, tokens={TOKEN} if sasl else None)
        async with front:
            yield front
    finally:
        broker.stop()


def secured_settings(front: KafkaFront, certs, mechanism: str | None = None, **overrides):
    security = {
        "kafka_bootstrap_servers": front.address,
        "kafka_security_protocol": "SASL_SSL" if mechanism else "SSL",
        "kafka_ssl_cafile": certs.ca,
        "kafka_ssl_certfile": certs.client_cert,
        "kafka_ssl_keyfile": certs.client_key,
    }
    if mechanism == "OAUTHBEARER":
        security |= {"kafka_sasl_mechanism": mechanism, "kafka_sasl_oauth_token_file": overrides.pop("token_file")}
    elif mechanism:
        security |= {"kafka_sasl_mechanism": mechanism, "kafka_sasl_username": "elk-resolver",
                     "kafka_sasl_password": USERS["elk-resolver"]}
    return make_settings(**security, **overrides)


async def round_trip(settings, topic: str) -> int:
    """Produce one record with the factory's options, read it back; the records read."""
    producer = AIOKafkaProducer(**client_options(settings))
    await start_or_close(producer)  # a refused login must not leave an unclosed producer behind
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **client_options(settings), auto_offset_reset="earliest", group_id=None)
    await start_or_close(consumer)
    try:
        batches = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    return sum(len(records) for records in batches.values())


# --- every construction takes the options ----------------------------------------------------

CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "KafkaBroker"}


def _constructions():
    for base in ("elk_resolver", "streams", "handlers", "bench"):
        for path in sorted((ROOT / base).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name in CLIENTS:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def test_every_kafka_client_the_service_builds_takes_the_security_options():
    """A client built from ``bootstrap_servers`` alone connects in plain text and unauthenticated
    whatever the settings say (every one of them did before issue 21)."""
    found = list(_constructions())
    assert len(found) >= 15, [where for where, _ in found]
    bare = [where for where, node in found if not any(k.arg is None for k in node.keywords)]
    assert bare == [], f"Kafka clients built without **client_options/**broker_options: {bare}"
    spelled = [where for where, node in found if any(k.arg == "bootstrap_servers" for k in node.keywords)]
    assert spelled == [], f"bootstrap_servers given beside the factory's options: {spelled}"


# --- settings are refused at start when they cannot work ------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u"},
     "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u",
      "kafka_sasl_password": ""}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"}, "kafka_sasl_oauth_token_file"),
    ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
    ({"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
     "kafka_security_protocol is PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "not a readable file"),
    ({"kafka_ssl_cafile": "CA"}, "kafka_security_protocol is PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "KEY"}, "needs kafka_ssl_certfile"),
    ({"kafka_security_protocol": "SSL", "kafka_bootstrap_servers": None}, "embedded broker speaks plain text"),
])
def test_kafka_security_settings_that_cannot_work_are_refused_at_start(overrides, message, certs):
    paths = {"CA": certs.ca, "KEY": certs.client_key}
    values = {"kafka_bootstrap_servers": "kafka:9093", **{k: paths.get(v, v) for k, v in overrides.items()}}
    with pytest.raises(ValidationError, match=message):
        make_settings(**values)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", None])
def test_the_faststream_broker_gets_the_same_security_as_the_aiokafka_clients(mechanism, certs, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    front = KafkaFront(("127.0.0.1", 1))
    settings = secured_settings(front, certs, mechanism, **({"token_file": token} if mechanism == "OAUTHBEARER" else {}))
    aiokafka = client_options(settings)
    faststream = broker_options(settings)
    parsed = parse_security(faststream["security"])
    provider = faststream.get("sasl_oauth_token_provider")
    assert {**parsed, **({"sasl_oauth_token_provider": provider} if provider else {}),
            "bootstrap_servers": faststream["bootstrap_servers"]}.keys() == aiokafka.keys()
    for key, value in aiokafka.items():
        if key == "sasl_oauth_token_provider":
            assert type(value) is type(provider) and value.path == provider.path
        elif key != "bootstrap_servers":
            assert parsed[key] == value, key
    assert aiokafka["ssl_context"].verify_mode == ssl.CERT_REQUIRED and aiokafka["ssl_context"].check_hostname


# --- the real broker, through the front -------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])
async def test_each_sasl_mechanism_authenticates_every_connection(mechanism, certs, tmp_path, unique):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    async with secured_broker(certs, sasl=True) as front:
        settings = secured_settings(front, certs, mechanism, **({"token_file": token} if mechanism == "OAUTHBEARER" else {}))
        assert await round_trip(settings, f"t-{unique}") == 1
        broker = KafkaBroker(**broker_options(settings))
        async with broker:
            await broker.publish(b"via faststream", f"t-{unique}")
        assert front.refused == []
        assert front.authenticated and {m for _, m in front.authenticated} == {mechanism}
        assert len(front.authenticated) == front.connections


async def test_a_wrong_password_a_missing_certificate_or_an_unknown_ca_gets_nothing(certs, unique):
    async with secured_broker(certs, sasl=True) as front:
        wrong = make_settings(**{**secured_settings(front, certs, "SCRAM-SHA-512").model_dump(), "kafka_sasl_password": "nope"})
        with pytest.raises(KafkaError):
            await round_trip(wrong, f"t-{unique}")
        assert front.refused and all("login failed" in r for r in front.refused)
        no_cert = make_settings(**{**wrong.model_dump(), "kafka_sasl_password": USERS["elk-resolver"],
                                   "kafka_ssl_certfile": None, "kafka_ssl_keyfile": None})
        with pytest.raises(KafkaError):
            await round_trip(no_cert, f"t-{unique}")
        other_ca = make_settings(**{**wrong.model_dump(), "kafka_sasl_password": USERS["elk-resolver"],
                                    "kafka_ssl_cafile": certs.other_ca})
        with pytest.raises(KafkaError):
            await round_trip(other_ca, f"t-{unique}")
        assert front.authenticated == []


async def test_the_oauth_token_file_is_read_again_for_each_connection(certs, tmp_path, unique):
    token = tmp_path / "token"
    token.write_text("expired-token")
    async with secured_broker(certs, sasl=True) as front:
        settings = secured_settings(front, certs, "OAUTHBEARER", token_file=token)
        with pytest.raises(KafkaError):
            await round_trip(settings, f"t-{unique}")
        token.write_text(TOKEN)  # refreshed by whatever keeps it, the service is not restarted
        assert await round_trip(settings, f"t-{unique}") == 1


# --- the whole service, end to end, over TLS and over SASL_SSL ---------------------------------------


def _crashloop(i: int) -> bytes:
    pod = f"ledger-7d9f8b6c5-x2k4{'qrstv'[i]}"
    return orjson.dumps({
        "@timestamp": (datetime.now(UTC) - timedelta(seconds=5 - i)).isoformat(timespec="milliseconds"),
        "message": f"CrashLoopBackOff: back-off 10s restarting failed container=ledger pod={pod}_payments",
        "log": {"level": "error"}, "service": {"name": "kubelet"}, "event": {"hash": f"tls-e2e-{i}"},
        "kubernetes": {"namespace": "payments", "pod": {"name": pod}, "deployment": {"name": "ledger"}},
    })  # fmt: skip


@pytest.mark.parametrize("mechanism", [None, "SCRAM-SHA-512"], ids=["SSL", "SASL_SSL-SCRAM-SHA-512"])
async def test_the_pipeline_runs_end_to_end_through_a_broker_that_wants_tls_and_sasl(
    mechanism, certs, database_url, pool, unique
):
    """An event in on raw, stored, analysed, decided (dry run), its outcome on the results
    topic, the monitor's lag check, then a replay: every connection of every client through TLS
    with the client certificate (and SASL), none refused."""
    async with secured_broker(certs, sasl=mechanism is not None) as front:
        settings = secured_settings(
            front, certs, mechanism, database_url=database_url, kubectl_namespaces=["payments"],
            monitor_interval_s=0.5, lag_interval_s=0.5, topic_partitions=2,
        ).isolated(f"sec-{unique}")
        await ensure_topics(client_options(settings), settings.topics(), partitions=2)
        app = create_app(settings, stages=("ingest", "analyze", "execute", "monitor"), serve_http=False)
        await app.start()
        try:
            await wait_for(lambda: all(getattr(s, "ready", False) for s in app.stages.values()), timeout=60,
                           what="every stage holding its partitions over TLS")
            producer = AIOKafkaProducer(**client_options(settings))
            await producer.start()
            try:
                for i in range(3):
                    await producer.send_and_wait(settings.topic_raw, _crashloop(i), key=b"kubelet")
            finally:
                await producer.stop()
            stored = await wait_for(lambda: pool.fetchrow(
                "SELECT id, hash_signature, occurrence_count FROM error_logs WHERE occurrence_count >= 3"),
                timeout=60, what="the events stored")
            decision = await wait_for(lambda: pool.fetchrow(
                "SELECT decision, reason FROM decision_log WHERE hash_signature = $1 LIMIT 1",
                stored["hash_signature"]), timeout=60, what="the execute stage's decision")
            results = await read_all(settings, settings.topic_results)
            kafka_row = await wait_for(lambda: pool.fetchrow(
                "SELECT status FROM system_status WHERE component_name = 'kafka'"), timeout=30,
                what="the monitor's kafka check")
        finally:
            await app.stop()
        replayed = await replay(settings, pool, since=datetime.now(UTC) - timedelta(hours=1))
        report = {
            "protocol": settings.kafka_security_protocol, "mechanism": mechanism,
            "stored": dict(stored), "decision": dict(decision), "results": len(results),
            "monitor": kafka_row["status"], "replayed": {"records": replayed.records, "new_occurrences": replayed.new_occurrences},
            "connections": front.connections, "tls_client_certificates": sorted(set(front.tls_peers)),
            "sasl_logins": len(front.authenticated), "refused": front.refused,
        }
        print("secured pipeline:", orjson.dumps(report, default=str).decode())
        assert decision["decision"] in ("dry_run", "pending_approval"), decision
        assert any(r.get("hash_signature") == stored["hash_signature"] for r in results)
        assert kafka_row["status"] in ("healthy", "warning"), kafka_row
        assert replayed.records == 3 and replayed.new_occurrences == 0  # read back over TLS, nothing counted twice
        assert front.refused == []
        assert front.connections >= 8 and set(front.tls_peers) == {"elk-resolver"}
        assert len(front.tls_peers) == front.connections  # every connection showed the client certificate
        if mechanism:
            assert len(front.authenticated) == front.connections
            assert {m for _, m in front.authenticated} == {mechanism}


async def read_all(settings, topic: str) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, **client_options(settings), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        out: list[dict] = []
        deadline = asyncio.get_running_loop().time() + 30
        while not out and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [orjson.loads(r.value) for r in records]
        return out
    finally:
        await consumer.stop()
