"""A corpus of realistic secrets (issue 21), each in every place an event can hold one (the
message, a nested field, a key, a JSON document kept as a string, a URL, a stack trace),
through the real pipeline on the embedded broker and PostgreSQL, in live mode with approvals
and notifications: none of them reaches a table, a topic the service writes, a console page
or a notification.

The secrets are made fresh from their published shapes (random bodies), so a test passing
cannot come from a rule that learned one example by heart."""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from elk_resolver.kafka.security import client_options
from elk_resolver.service import create_app
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.notify_stub import NotifyStub
from tests.support.polling import wait_for
from tests.test_execute_stream import configure

ALNUM = string.ascii_letters + string.digits


def _pw(rng: random.Random, n: int = 14) -> str:
    """A password-like value with upper, lower and digits (searchable, needs no escaping)."""
    return rng.choice(string.ascii_uppercase) + rng.choice(string.digits) + "".join(rng.choices(ALNUM, k=n - 2))


def _luhn(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits + "0")):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _hex32(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789abcdef", k=32))


def _jwt(rng: random.Random) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps({"sub": _pw(rng), "n": rng.random()})).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.{_pw(rng, 30)}"


def _aws_key_id(rng: random.Random) -> str:
    return "AKIA" + "".join(rng.choices(string.ascii_uppercase + "234567", k=16))


def _card(rng: random.Random) -> str:
    return _luhn("4" + "".join(rng.choices(string.digits, k=14)))


def _alone(_secret: str) -> list[str]:
    return []


# name: (log text around the secret, how the secret is made, what else must not survive)
SHAPES: dict[str, tuple[Callable[[str], str], Callable[[random.Random], str], Callable[[str], list[str]]]] = {
    "openai_project": (lambda k: f"openai 401 invalid key {k}", lambda r: "sk-proj-" + _pw(r, 48), _alone),
    "openai_legacy": (lambda k: f"llm call with {k} failed", lambda r: "sk-" + _pw(r, 48), _alone),
    "github": (lambda k: f"git clone with token {k} denied", lambda r: "ghp_" + _pw(r, 36), _alone),
    "slack": (lambda k: f"slack post {k} invalid_auth",
              lambda r: f"xoxb-{r.randrange(10**11)}-{r.randrange(10**11)}-{_pw(r, 24)}", _alone),
    "stripe": (lambda k: f"charge failed api key={k}", lambda r: "sk_live_" + _pw(r, 24), _alone),
    "google": (lambda k: f"maps quota exceeded for {k}", lambda r: "AIza" + _pw(r, 35), _alone),
    "gitlab": (lambda k: f"gitlab push with {k} rejected", lambda r: "glpat-" + _pw(r, 20), _alone),
    "npm": (lambda k: f"npm publish token {k} revoked", lambda r: "npm_" + _pw(r, 36), _alone),
    "aws_key_id": (lambda k: f"s3 access denied for {k}", _aws_key_id, _alone),
    "aws_secret_bare": (lambda k: f"signing with {k} failed", lambda r: _pw(r, 34) + "/" + _pw(r, 5), _alone),
    "aws_secret_named": (lambda k: f"aws_secret_access_key={k} rejected", lambda r: _pw(r, 40), _alone),
    "vault": (lambda k: f"vault token {k} expired", lambda r: "hvs." + _pw(r, 90), _alone),
    "jwt": (lambda k: f"token {k} expired", _jwt, lambda k: k.split(".")[1:]),
    "pem": (lambda k: f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{k}\n-----END RSA PRIVATE KEY-----",
            lambda r: _pw(r, 64), _alone),
    "url_password": (lambda k: f"connect postgres://app:{k}@db:5432/orders refused", _pw, _alone),
    "password_kv": (lambda k: f"login failed password={k} user=app", _pw, _alone),
    "json_escaped": (lambda k: f'body {{\\"password\\": \\"{k}\\", \\"user\\": \\"app\\"}}', _pw, _alone),
    "azure_sas": (lambda k: f"GET https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig={k}%3D 403",
                  lambda r: _pw(r, 43), _alone),
    "query_key": (lambda k: f"GET https://api.example.com/v1/geo?q=x&key={k} 429", lambda r: _pw(r, 39), _alone),
    "mysql_p": (lambda k: f"backup: mysqldump -h db -u root -p{k} orders", _pw, _alone),
    "sshpass": (lambda k: f"deploy: sshpass -p {k} ssh app@host uptime", _pw, _alone),
    "docker_auth": (lambda k: f'config {{\\"auths\\":{{\\"reg.io\\":{{\\"auth\\":\\"{_b64("deploy:" + k)}\\"}}}}}}',
                    _pw, lambda k: [_b64("deploy:" + k)]),
    "b64_password": (lambda k: f"header {_b64('user=app password=' + k)} sent", _pw,
                     lambda k: [_b64("user=app password=" + k)]),
    "passwort": (lambda k: f"anmeldung passwort={k} fehlgeschlagen", _pw, _alone),
    "contrasena": (lambda k: f"acceso contraseña: {k} denegado", _pw, _alone),
    "parol": (lambda k: f"вход пароль={k} отклонён", _pw, _alone),
    "fullwidth_key": (lambda k: f"auth ｐａｓｓｗｏｒｄ＝{k} denied", _pw, _alone),
    "zero_width_key": (lambda k: f"auth pass\u200bword={k} denied", _pw, _alone),
    "spaced_api_key": (lambda k: f"using api key {k} now", _hex32, _alone),
    "bearer": (lambda k: f"upstream sent Authorization: Bearer {k}", lambda r: _pw(r, 32), _alone),
    "basic": (lambda k: f"proxy got Basic {_b64('admin:' + k)} back", _pw, lambda k: [_b64("admin:" + k)]),
    "card": (lambda k: f"payment card {k} declined", _card, _alone),
    "cli_flag": (lambda k: f"exec psql --password {k} --host db", _pw, _alone),
    "curl_user": (lambda k: f"curl -u admin:{k} https://es:9200/_cluster/health", _pw, _alone),
    "k8s_env": (lambda k: f'env [{{"name":"DB_PASSWORD","value":"{k}"}}]', _pw, _alone),
}
PER_SHAPE = 3  # 36 shapes x 3 = 108 secrets, each in every place
PLACES = ("message", "nested", "key", "escaped", "url", "stack")


def corpus(seed: int = 21) -> list[tuple[str, str, list[str]]]:
    rng = random.Random(seed)
    out = []
    for name, (text, make, derived) in SHAPES.items():
        for _ in range(PER_SHAPE):
            secret = make(rng)
            out.append((name, text(secret), [secret, *derived(secret)]))
    return out


def event(i: int, text: str, where: str) -> dict:
    pod = f"ledger{i % 4}-7d9f8b6c5-{'bcdfg'[i % 5]}{'hjklm'[i % 5]}x2k"
    base = {
        "@timestamp": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(timespec="milliseconds"),
        "message": f"CrashLoopBackOff: back-off restarting failed container in pod {pod}",
        "log": {"level": "error"}, "service": {"name": "kubelet"}, "event": {"hash": f"corpus-{i}-{where}"},
        "kubernetes": {"namespace": "payments", "pod": {"name": pod}, "deployment": {"name": f"ledger{i % 4}"}},
    }  # fmt: skip
    if where == "message":
        base["message"] += f" {text}"
    elif where == "nested":
        base["labels"] = {"app": "ledger", "debug": [{"note": text}]}
    elif where == "key":
        base["labels"] = {text: "value", "app": "ledger"}
    elif where == "escaped":  # a JSON document kept as a string, as Logstash keeps event.original
        base["event"]["original"] = orjson.dumps({"msg": text, "level": "error"}).decode()
    elif where == "url":
        base["url"] = {"full": f"https://api.example.com/v1/x?note={text}"}
    else:
        base["error"] = {"type": "java.lang.IllegalStateException",
                         "stack_trace": f"java.lang.IllegalStateException: {text}\n\tat a.B.c(B.java:42)"}
    return base


def _needles(secrets: list[str]) -> set[str]:
    """Each secret as it may stand in stored or published text (JSON-escaped too)."""
    out = set()
    for s in secrets:
        out.add(s)
        out.add(orjson.dumps(s).decode()[1:-1])
    return out


def leaks(blob: str, needles: set[str]) -> list[str]:
    return sorted(n for n in needles if n in blob)


async def database_text(pool) -> str:
    """Every row of every table, as text."""
    tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    parts = []
    for row in tables:
        for r in await pool.fetch(f'SELECT t::text AS v FROM "{row["tablename"]}" t'):
            parts.append(r["v"])
    return "\n".join(parts)


async def topic_text(settings, topics: list[str]) -> str:
    consumer = AIOKafkaConsumer(*topics, **client_options(settings), auto_offset_reset="earliest", group_id=None,
                                max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    parts: list[str] = []
    try:
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    parts.append((r.value or b"").decode("utf-8", "replace"))
                    parts += [(v or b"").decode("utf-8", "replace") for _, v in (r.headers or ())]
    finally:
        await consumer.stop()
    return "\n".join(parts)


async def console_text(base: str, pool) -> str:
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM error_logs ORDER BY id")]
    approvals = [r["id"] for r in await pool.fetch("SELECT id FROM approvals ORDER BY id")]
    paths = ["/", "/errors", "/errors?page=2", "/approvals", "/approvals?status=all", "/runs",
             *(f"/errors/{i}" for i in ids), *(f"/approvals/{i}" for i in approvals)]
    parts = []
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(base + path) as r:
                assert r.status == 200, (path, r.status)
                parts.append(await r.text())
    return "\n".join(parts)


def test_the_corpus_is_large_and_varied():
    items = corpus()
    assert len(items) >= 100 and len({name for name, _, _ in items}) == len(SHAPES)
    assert len({s for _, _, secrets in items for s in secrets}) >= 100


async def test_no_secret_of_the_corpus_reaches_a_table_a_topic_the_console_or_a_notification(settings, pool, tmp_path):
    items = corpus()
    needles = _needles([s for _, _, secrets in items for s in secrets])
    fake = write_fake_kubectl(tmp_path)
    # the CrashLoopBackOff pattern needs a person: every error and object waits for approval,
    # and each wait is announced on the webhook and an apprise channel
    await pool.execute("UPDATE error_patterns SET auto_resolve = false WHERE id = 1")
    async with NotifyStub() as hooks:
        live = configure(settings, fake, http_port=0, notify_webhook_url=hooks.url + "/hook",
                         notify_webhook_secret="x", notify_urls=[hooks.apprise_json("/chat")],
                         notify_interval_s=0.1, console_url="https://console.example")
        app = create_app(live, stages=("ingest", "analyze", "execute"))
        async with app:
            producer = AIOKafkaProducer(**client_options(live), max_request_size=8 << 20)
            await producer.start()
            try:
                sent = [await producer.send(live.topic_raw, orjson.dumps(event(i, text, where)), key=b"kubelet")
                        for i, (_, text, _) in enumerate(items) for where in PLACES]
                for future in sent:
                    await future
            finally:
                await producer.stop()
            total = len(items) * len(PLACES)
            await wait_for(lambda: pool.fetchval("SELECT count(*) = $1 FROM error_occurrences", total), timeout=120,
                           what=f"the {total} events stored")
            await wait_for(lambda: pool.fetchval("SELECT count(*) > 0 FROM approvals"), timeout=60,
                           what="approvals waiting")
            await wait_for(lambda: hooks.received("/hook") and hooks.received("/chat"), timeout=60,
                           what="notifications sent")
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM notifications WHERE sent_at IS NULL"),
                           timeout=60, what="every notification sent")
            pages = await console_text(f"http://127.0.0.1:{app.http_port}", pool)
        stored = await database_text(pool)
        published = await topic_text(live, [t for t in live.topics() if t != live.topic_raw])
        sent_out = "\n".join(r.body.decode("utf-8", "replace") for path in ("/hook", "/chat")
                             for r in hooks.received(path))
    assert "***" in stored and "***" in published and "***" in sent_out
    assert "CrashLoopBackOff" in pages and "CrashLoopBackOff" in sent_out  # the places were read at all
    for where, blob in (("PostgreSQL", stored), ("topics", published), ("console", pages),
                        ("notifications", sent_out)):
        assert leaks(blob, needles) == [], f"secrets reached {where}"
