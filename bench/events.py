"""Deterministic, realistic Logstash error events for the benchmark.

``generate(n, seed)`` returns ``n`` record values as Logstash's kafka output writes them with
``codec => json``: ECS events (nested objects, and flat dotted keys as ECS loggers send them)
and legacy events (``host`` a string, ``path``, free ``level``, the stack trace inside a
multi-line ``message``), from Kubernetes, the JVM, Elasticsearch, Logstash/Kafka and the
network. About ``repeat_share`` of the events repeat an error seen before (its volatile values
-- pods, addresses, counts, times -- differ, so they dedupe by template, not byte for byte);
the others are distinct errors (each names its own class, index or service). Records are
about 650 bytes on average. The same ``(n, seed)`` gives the same bytes.

``pattern_rows(n)`` gives ``n`` error_patterns rows: the document's three first, then the
patterns an operator would add for these errors, then (past 30) vendor-specific patterns
that rarely match, as a large table would hold.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

# Syllables without long hex-letter runs or digits: the template fingerprint keeps these words.
_SYL = (
    "ka", "lo", "mi", "nu", "po", "ri", "su", "to", "vi", "zo", "gar", "hol", "jun", "kel", "lim",
    "mor", "nix", "pul", "qua", "ros", "sil", "tor", "uvo", "wen", "yar", "zil", "bro", "gri",
    "plo", "stu", "tri", "vor", "xan", "hup", "jor", "kri", "lun", "mav", "nor", "pix",
)  # fmt: skip

_NAMESPACES = ("payments", "orders", "search", "checkout", "identity", "logging", "billing", "catalog")
_CONTAINERS = ("app", "worker", "sidecar", "api", "consumer")
_INDEX_PREFIX = ("logs", "metrics", "traces", "audit", "events")
_PORTS = (5432, 9200, 9092, 6379, 8080, 443, 27017, 5672)
_LEVELS_ECS = ("error", "ERROR", "fatal", "critical", "error")
_LEVELS_LEGACY = ("ERROR", "SEVERE", "FATAL", "err", "ERROR")


def word(rng: random.Random, syllables: int = 3) -> str:
    return "".join(rng.choice(_SYL) for _ in range(syllables))


def _ip(rng: random.Random) -> str:
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _pod(rng: random.Random, deployment: str) -> str:
    return f"{deployment}-{rng.randrange(16**9):09x}-{word(rng, 1)}{rng.randrange(10**4)}"


def _jvm_frames(rng: random.Random, pkg: str, cls: str, depth: int) -> list[str]:
    return [
        f"\tat com.acme.{pkg}.{cls}{word(rng, 1).capitalize()}.{word(rng, 2)}({cls}.java:{rng.randrange(20, 900)})"
        for _ in range(depth)
    ]


@dataclass
class ErrorSpec:
    """One distinct error: its family and the names that make it distinct."""

    family: str
    names: dict[str, str]
    deployment: str
    namespace: str
    service: str


# A family renders (rng, spec) -> (message, error_type | None, stack_trace | None).
Family = Callable[[random.Random, ErrorSpec], tuple[str, str | None, str | None]]


def _crashloop(rng, s):
    pod = _pod(rng, s.deployment)
    return (
        f"CrashLoopBackOff: back-off {rng.choice((10, 20, 40, 80, 160, 300))}s restarting failed container "
        f"{s.names['a']} in pod {pod}_{s.namespace}",
        None,
        None,
    )


def _oomkilled(rng, s):
    return (
        f"OOMKilled: container {s.names['a']} in pod {_pod(rng, s.deployment)} exceeded its memory limit "
        f"of {rng.choice((256, 512, 1024, 2048))}Mi",
        None,
        None,
    )


def _image_pull(rng, s):
    return (
        f'Failed to pull image "registry.acme.io/{s.names["a"]}:{rng.randrange(1, 9)}.{rng.randrange(30)}.'
        f'{rng.randrange(10)}": rpc error: code = NotFound desc = manifest unknown for {s.names["b"]} in {s.names["a"]}',
        None,
        None,
    )


def _probe(rng, s):
    return (
        f"Liveness probe failed for container {s.names['a']}: HTTP probe failed with statuscode: "
        f"{rng.choice((500, 503, 504))}",
        None,
        None,
    )


def _java_oom(rng, s):
    cls = s.names["a"].capitalize()
    trace = "\n".join(_jvm_frames(rng, s.names["b"], cls, rng.randrange(3, 6)))
    return (
        f"java.lang.OutOfMemoryError: Java heap space while allocating buffer in {cls}Cache",
        "java.lang.OutOfMemoryError",
        f"java.lang.OutOfMemoryError: Java heap space\n{trace}",
    )


def _npe(rng, s):
    cls = s.names["a"].capitalize()
    trace = "\n".join(_jvm_frames(rng, s.names["b"], cls, rng.randrange(3, 6)))
    msg = f'Cannot invoke "{cls}.get{s.names["b"].capitalize()}()" because "{s.names["c"]}" is null'
    return msg, "java.lang.NullPointerException", f"java.lang.NullPointerException: {msg}\n{trace}"


def _timeout(rng, s):
    cls = s.names["a"].capitalize()
    trace = "\n".join(_jvm_frames(rng, s.names["b"], cls, rng.randrange(2, 5)))
    msg = f"{cls}Client call timed out after {rng.choice((1000, 2000, 5000, 30000))} ms waiting for {s.names['c']}"
    return msg, "java.util.concurrent.TimeoutException", f"java.util.concurrent.TimeoutException: {msg}\n{trace}"


def _es_rejected(rng, s):
    return (
        f"[{s.names['a']}][{rng.randrange(5)}] failed to execute bulk item (index) "
        f"es_rejected_execution_exception: rejected execution of coordinating operation "
        f"[coordinating_and_primary_bytes={rng.randrange(10**8)}, max_coordinating_and_primary_bytes={rng.randrange(10**8, 10**9)}]",
        "es_rejected_execution_exception",
        None,
    )


def _es_breaker(rng, s):
    return (
        f"circuit_breaking_exception: [parent] Data too large, data for [{s.names['a']}] would be "
        f"[{rng.randrange(10**9, 4 * 10**9)}/{rng.randrange(1, 4)}.{rng.randrange(10)}gb], which is larger than the limit",
        "circuit_breaking_exception",
        None,
    )


def _es_readonly(rng, s):
    return (
        f"cluster_block_exception: index [{s.names['a']}-{rng.randrange(2024, 2027)}.{rng.randrange(1, 13):02d}."
        f"{rng.randrange(1, 29):02d}] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)] "
        f"writing {s.names['b']} documents",
        "cluster_block_exception",
        None,
    )


def _es_unassigned(rng, s):
    return (
        f"unavailable_shards_exception: [{s.names['a']}][{rng.randrange(5)}] primary shard is not active "
        f"Timeout: [1m], request: [BulkShardRequest [[{s.names['a']}][{rng.randrange(5)}]] containing "
        f"[{rng.randrange(1, 500)}] requests]",
        "unavailable_shards_exception",
        None,
    )


def _conn_refused(rng, s):
    port = rng.choice(_PORTS)
    return (
        f"Connection refused: {s.names['a']}-{s.names['b']}.{s.namespace}.svc.cluster.local/{_ip(rng)}:{port} "
        f"(port {port}) from {s.names['c']}Pool",
        "java.net.ConnectException",
        None,
    )


def _econnrefused(rng, s):
    return (
        f"connect ECONNREFUSED {_ip(rng)}:{rng.choice(_PORTS)} in {s.names['a']}Handler",
        None,
        None,
    )


def _unknown_host(rng, s):
    return (
        f"UnknownHostException: {s.names['a']}-{rng.randrange(100)}.{s.namespace}.svc: Name or service not known "
        f"(resolver {s.names['b']})",
        "java.net.UnknownHostException",
        None,
    )


def _ssl(rng, s):
    return (
        f"SSLHandshakeException in {s.names['a']}Connector: PKIX path building failed: unable to find valid "
        f"certification path to requested target",
        "javax.net.ssl.SSLHandshakeException",
        None,
    )


def _reset(rng, s):
    return (
        f"Connection reset by peer while reading response from {s.names['a']} after {rng.randrange(1, 60000)} ms",
        "java.io.IOException",
        None,
    )


def _logstash_mapping(rng, s):
    return (
        f'Could not index event to Elasticsearch. status: 400, action: ["index", {{:_index=>"{s.names["a"]}"}}], '
        f'response: {{"type"=>"mapper_parsing_exception", "reason"=>"failed to parse field [{s.names["b"]}] of type [long]"}}',
        "mapper_parsing_exception",
        None,
    )


def _kafka_rebalance(rng, s):
    return (
        f"Commit cannot be completed since the group {s.names['a']}-consumers has already rebalanced and "
        f"assigned the partitions to another member (generation {rng.randrange(1, 900)})",
        "org.apache.kafka.clients.consumer.CommitFailedException",
        None,
    )


FAMILIES: dict[str, tuple[str, Family]] = {
    # name: (domain, renderer)
    "crashloop": ("kubernetes", _crashloop),
    "oomkilled": ("kubernetes", _oomkilled),
    "image_pull": ("kubernetes", _image_pull),
    "probe": ("kubernetes", _probe),
    "java_oom": ("jvm", _java_oom),
    "npe": ("jvm", _npe),
    "timeout": ("jvm", _timeout),
    "es_rejected": ("elasticsearch", _es_rejected),
    "es_breaker": ("elasticsearch", _es_breaker),
    "es_readonly": ("elasticsearch", _es_readonly),
    "es_unassigned": ("elasticsearch", _es_unassigned),
    "conn_refused": ("network", _conn_refused),
    "econnrefused": ("network", _econnrefused),
    "unknown_host": ("network", _unknown_host),
    "ssl": ("network", _ssl),
    "reset": ("network", _reset),
    "logstash_mapping": ("elasticsearch", _logstash_mapping),
    "kafka_rebalance": ("network", _kafka_rebalance),
}


def _new_spec(rng: random.Random) -> ErrorSpec:
    family = rng.choice(tuple(FAMILIES))
    deployment = word(rng, 2)
    return ErrorSpec(
        family=family,
        # four syllables: about 2.5 million combinations, so distinct errors stay distinct
        names={"a": word(rng, 4), "b": word(rng, 3), "c": word(rng, 3)},
        deployment=deployment,
        namespace=rng.choice(_NAMESPACES),
        service=f"{deployment}-svc",
    )


def _ts(base: datetime, i: int) -> str:
    return (base + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ecs_nested(rng, spec, i, base, message, error_type, trace) -> dict:
    event: dict = {
        "@timestamp": _ts(base, i),
        "@version": "1",
        "message": message,
        "log": {"level": rng.choice(_LEVELS_ECS), "logger": f"com.acme.{spec.names['b']}.{spec.names['a']}"},
        "service": {"name": spec.service, "environment": "production"},
        "host": {"name": f"node-{rng.randrange(40)}.prod.acme.internal"},
        "kubernetes": {
            "namespace": spec.namespace,
            "pod": {"name": _pod(rng, spec.deployment)},
            "container": {"name": rng.choice(_CONTAINERS)},
            "deployment": {"name": spec.deployment},
        },
        "event": {"dataset": f"{spec.namespace}.{spec.deployment}", "hash": f"{rng.getrandbits(96):024x}"},
        "ecs": {"version": "8.11.0"},
        "trace": {"id": f"{rng.getrandbits(128):032x}"},
        "agent": {"type": "filebeat", "version": "8.13.4"},
    }
    if error_type or trace:
        event["error"] = {"message": message}
        if error_type:
            event["error"]["type"] = error_type
        if trace:
            event["error"]["stack_trace"] = trace
    return event


def _ecs_flat(rng, spec, i, base, message, error_type, trace) -> dict:
    event = {
        "@timestamp": _ts(base, i),
        "@version": "1",
        "message": message,
        "log.level": rng.choice(_LEVELS_ECS),
        "service.name": spec.service,
        "host.name": f"node-{rng.randrange(40)}.prod.acme.internal",
        "kubernetes.namespace": spec.namespace,
        "kubernetes.pod.name": _pod(rng, spec.deployment),
        "kubernetes.container.name": rng.choice(_CONTAINERS),
        "kubernetes.deployment.name": spec.deployment,
        "process.thread.name": f"worker-{rng.randrange(64)}",
        "ecs.version": "1.6.0",
        "trace.id": f"{rng.getrandbits(128):032x}",
    }
    if error_type:
        event["error.type"] = error_type
    if trace:
        event["error.stack_trace"] = trace
    return event


def _legacy(rng, spec, i, base, message, error_type, trace) -> dict:
    text = message if not trace else f"{message}\n{trace.split(chr(10), 1)[1] if chr(10) in trace else trace}"
    return {
        "@timestamp": _ts(base, i),
        "@version": "1",
        "host": f"vm-{spec.deployment}-{rng.randrange(12)}",
        "path": f"/var/log/{spec.namespace}/{spec.deployment}.log",
        "level": rng.choice(_LEVELS_LEGACY),
        "message": text,
        "type": "app-log",
        "tags": ["beats_input_codec_plain_applied"],
    }


_SHAPES = ((_ecs_nested, 0.5), (_ecs_flat, 0.2), (_legacy, 0.3))


@dataclass
class Dataset:
    records: list[bytes]
    distinct_errors: int
    repeats: int
    shapes: dict[str, int] = field(default_factory=dict)
    families: dict[str, int] = field(default_factory=dict)

    @property
    def repeat_share(self) -> float:
        return self.repeats / len(self.records) if self.records else 0.0

    @property
    def mean_bytes(self) -> float:
        return sum(map(len, self.records)) / len(self.records) if self.records else 0.0


def generate(n: int, seed: int = 6, repeat_share: float = 0.3, *, unique_only: bool = False) -> Dataset:
    """``n`` records; with ``unique_only`` every record is a distinct error (latency runs)."""
    rng = random.Random(seed)
    base = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
    specs: list[ErrorSpec] = []
    records: list[bytes] = []
    repeats = 0
    shapes: dict[str, int] = {}
    families: dict[str, int] = {}
    shape_fns = [s for s, _ in _SHAPES]
    shape_weights = [w for _, w in _SHAPES]
    for i in range(n):
        if specs and not unique_only and rng.random() < repeat_share:
            # repeats favour recent and frequent errors, as real error streams do
            spec = specs[min(len(specs) - 1, int(rng.paretovariate(1.2)) - 1)] if rng.random() < 0.5 else rng.choice(specs)
            repeats += 1
        else:
            spec = _new_spec(rng)
            specs.append(spec)
        shape = _render(rng, spec, i, base, records, shape_fns, shape_weights)
        shapes[shape] = shapes.get(shape, 0) + 1
        families[spec.family] = families.get(spec.family, 0) + 1
    return Dataset(records, len(specs), repeats, shapes, families)


def _render(rng, spec, i, base, records, shape_fns=None, shape_weights=None) -> str:
    """Append the ``i``-th event of ``spec`` to ``records``; its shape's name."""
    message, error_type, trace = FAMILIES[spec.family][1](rng, spec)
    shape = rng.choices(shape_fns or [s for s, _ in _SHAPES], shape_weights or [w for _, w in _SHAPES])[0]
    records.append(orjson.dumps(shape(rng, spec, i, base, message, error_type, trace)))
    return shape.__name__.strip("_")


# The family a playbook acts on at once (a crash loop), in the shape that names the Kubernetes object: an incident's new
# error reaches an execution decision (the storm section's probes).
_DECIDED_FAMILIES = ("crashloop",)


@dataclass
class Storm:
    known: list[bytes]
    """one event of each known error (sent before the storm)"""
    repeats: list[bytes]
    """the storm: events of the known errors only, other values (pods, times...)"""
    new: list[bytes]
    """the first event of each new error, each on a new object (its own deployment)"""


def storm(known: int, repeats: int, new: int, seed: int = 6) -> Storm:
    """An incident: ``repeats`` events of ``known`` errors, and ``new`` errors that appear
    during it, each a Kubernetes error a playbook acts on, on a deployment of its own."""
    rng = random.Random(seed)
    base = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
    specs = [_new_spec(rng) for _ in range(known)]
    out = Storm([], [], [])
    for i, spec in enumerate(specs):
        _render(rng, spec, i, base, out.known)
    for i in range(repeats):
        spec = specs[min(len(specs) - 1, int(rng.paretovariate(1.2)) - 1)] if rng.random() < 0.5 else rng.choice(specs)
        _render(rng, spec, known + i, base, out.repeats)
    taken = {s.deployment for s in specs}
    for i in range(new):
        spec = _new_spec(rng)
        while spec.deployment in taken:  # a new object: no known error's deployment
            spec = _new_spec(rng)
        taken.add(spec.deployment)
        spec.family = rng.choice(_DECIDED_FAMILIES)
        _render(rng, spec, known + repeats + i, base, out.new, [_ecs_nested], [1.0])
    return out


# --- error_patterns --------------------------------------------------------------------

DOCUMENT_PATTERNS = [
    ("Pod CrashLoopBackOff", "CrashLoopBackOff.*pod.*", "kubernetes", 1, True),
    ("Out of Memory", "OutOfMemory|OOMKilled.*", "resource", 2, True),
    ("Connection Refused", "Connection refused.*port.*", "network", 3, True),
]

OPERATOR_PATTERNS = [
    ("Image pull failure", r"Failed to pull image|ErrImagePull|ImagePullBackOff", "kubernetes", 2, False),
    ("Liveness probe failure", r"(Liveness|Readiness) probe failed", "kubernetes", 3, True),
    ("Unschedulable pod", r"\d+/\d+ nodes are available", "kubernetes", 3, False),
    ("Evicted pod", r"The node was low on resource: (memory|ephemeral-storage)", "kubernetes", 3, True),
    ("Java heap space", r"java\.lang\.OutOfMemoryError: Java heap space", "resource", 2, True),
    ("GC overhead", r"GC overhead limit exceeded", "resource", 2, True),
    ("Metaspace", r"OutOfMemoryError: Metaspace", "resource", 2, False),
    ("Null pointer", r"Cannot invoke \".*\" because \".*\" is null|NullPointerException", "application", 5, False),
    ("Call timeout", r"timed out after \d+ ?ms", "timeout", 4, False),
    ("Thread pool exhausted", r"RejectedExecutionException|Thread pool is EXHAUSTED", "resource", 3, False),
    ("ES bulk rejected", r"es_rejected_execution_exception", "elasticsearch", 2, True),
    ("ES circuit breaker", r"circuit_breaking_exception.*Data too large", "elasticsearch", 2, True),
    ("ES read-only index", r"cluster_block_exception.*read-only", "elasticsearch", 1, True),
    ("ES unassigned shards", r"unavailable_shards_exception|primary shard is not active", "elasticsearch", 2, True),
    ("ES disk watermark", r"flood stage disk watermark \[\d+%\] exceeded", "elasticsearch", 1, True),
    ("ES ILM error", r"ILM.*ERROR step|illegal_argument_exception.*rollover", "elasticsearch", 3, True),
    ("Logstash mapping error", r"Could not index event to Elasticsearch.*mapper_parsing_exception", "elasticsearch", 4, False),
    ("Logstash output unreachable", r"Elasticsearch Unreachable|Attempted to resurrect connection", "network", 2, True),
    ("Kafka rebalance", r"group .* has already rebalanced", "kafka", 4, False),
    ("Kafka not leader", r"NOT_LEADER_(FOR|OR)_PARTITION|NotLeaderOrFollowerException", "kafka", 3, False),
    ("Node connection refused", r"connect ECONNREFUSED \d+\.\d+\.\d+\.\d+:\d+", "network", 3, True),
    ("DNS failure", r"UnknownHostException|Name or service not known|NXDOMAIN", "network", 3, False),
    ("TLS handshake", r"SSLHandshakeException|PKIX path building failed|certificate verify failed", "security", 3, False),
    ("Connection reset", r"Connection reset by peer", "network", 4, False),
    ("Socket timeout", r"SocketTimeoutException|Read timed out", "network", 4, False),
    ("Too many open files", r"Too many open files", "resource", 2, True),
    ("Disk full", r"No space left on device", "resource", 1, True),
]


def pattern_rows(n: int, seed: int = 6) -> list[dict]:
    """``n`` error_patterns rows (ids 1..n), realistic first, then rarely matching ones."""
    rows = []
    for name, regex, category, priority, auto in DOCUMENT_PATTERNS + OPERATOR_PATTERNS:
        if len(rows) == n:
            return rows
        rows.append(
            {"id": len(rows) + 1, "pattern_name": name, "pattern_regex": regex, "error_category": category,
             "priority": priority, "auto_resolve": auto}
        )  # fmt: skip
    rng = random.Random(seed)
    kinds = (
        lambda w: rf"{w.capitalize()}Exception: .*code=\d+",
        lambda w: rf"ERR_{w.upper()}_\d{{3}}",
        lambda w: rf"\[{w}\] (failed|aborted) after \d+ retries",
        lambda w: rf"{w}\.(sock|pid) (missing|stale)",
        lambda w: rf"(?i)vendor {w} fault [A-F0-9]{{4}}",
    )
    while len(rows) < n:
        w = word(rng, 3)
        rows.append(
            {"id": len(rows) + 1, "pattern_name": f"vendor {w}", "pattern_regex": rng.choice(kinds)(w),
             "error_category": "vendor", "priority": rng.randrange(3, 9), "auto_resolve": False}
        )  # fmt: skip
    return rows
