"""Every setting of the service, read from ``ELK_RESOLVER_*`` variables and ``.env``.

Build it with :func:`make_settings` in the app factory or the CLI, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ExecutionMode = Literal["dry-run", "live", "off"]
FingerprintVersion = Literal["exact", "template"]
Stage = Literal["ingest", "analyze", "execute", "monitor"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

CsvList = Annotated[list[str], NoDecode]
# JSON objects from the environment: decoded by _json_object (one line naming the setting when
# the text is not JSON) rather than by pydantic-settings, which stops at the first one with a
# traceback
JsonObject = Annotated[dict, NoDecode]


# --- the names a setting may use ------------------------------------------------------------
# The policy (elk_resolver.actions.policy) builds on these; they live here so that settings can
# refuse an unknown name at start and still depend on nothing else of the service.

# kubectl verbs a remediation may use (the policy lists each one's flags)
KUBECTL_VERBS: tuple[str, ...] = ("rollout restart", "rollout undo", "scale", "delete pod")

# kubectl's spellings of the kinds a remediation may act on, and their API groups
_KIND_ALIASES = {
    "deployment": "deployment", "deployments": "deployment", "deploy": "deployment",
    "statefulset": "statefulset", "statefulsets": "statefulset", "sts": "statefulset",
    "daemonset": "daemonset", "daemonsets": "daemonset", "ds": "daemonset",
    "replicaset": "replicaset", "replicasets": "replicaset", "rs": "replicaset",
    "pod": "pod", "pods": "pod", "po": "pod",
}  # fmt: skip
_KIND_GROUPS = {"deployment": "apps", "statefulset": "apps", "daemonset": "apps", "replicaset": "apps", "pod": ""}


def kind_of(text: str) -> str | None:
    """The canonical kind for kubectl's spellings (``deploy``, ``Deployments``,
    ``deployment.apps``), or None for a kind this policy does not know."""
    name, dot, group = text.lower().partition(".")
    kind = _KIND_ALIASES.get(name)
    if kind is None or (dot and group != _KIND_GROUPS[kind]):
        return None
    return kind


# action -> whether it needs an index. Write actions, so opt-in: ExecutionPolicy's
# elasticsearch_actions (setting elasticsearch_actions) lists the ones that may run; an
# Elasticsearch URL configured for the monitor or backfill enables none of them.
ES_ACTIONS: dict[str, bool] = {
    # PUT /{index}/_settings {"index.blocks.read_only_allow_delete": null}
    "clear_read_only_block": True,
    # POST /_cluster/reroute?retry_failed=true
    "cluster_reroute_retry_failed": False,
    # POST /{index}/_ilm/retry
    "ilm_retry": True,
}


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return orjson.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _json_object(value: object) -> object:
    if isinstance(value, str | bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError('not JSON: write a JSON object, e.g. {"scale": ["deployment"]}') from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object ({...})")
    return value


def _split_patterns(value: object) -> object:
    """Regexes contain commas, so a list of them is JSON or one per line, never comma-separated."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return orjson.loads(value)
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ELK_RESOLVER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- where things are -------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset starts the embedded Tansu broker"
    )
    database_url: str | None = Field(
        None, description="postgresql:// DSN; unset starts the embedded PostgreSQL"
    )
    # Kafka TLS and SASL, for every client the service creates (elk_resolver.kafka.security)
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)"
    )
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle the broker's certificate is checked against; unset: the system's")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for brokers that require one (mTLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="the client certificate's private key (PEM)")
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = Field(True, description="the broker's certificate must name the host connected to")
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (needs a SASL_* protocol)"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_oauth_token_file: Path | None = Field(
        None, description="OAUTHBEARER: a file holding the access token, read again for every connection (a sidecar or the platform refreshes it)"
    )
    elasticsearch_url: str | None = Field(None, description="Elasticsearch for ES commands, monitor, backfill")
    elasticsearch_api_key: str | None = None
    elasticsearch_username: str | None = None
    elasticsearch_password: str | None = None
    logstash_url: str | None = Field(None, description="Logstash node API, e.g. http://logstash:9600")
    kibana_url: str | None = Field(None, description="Kibana base URL, e.g. http://kibana:5601")
    state_dir: Path = Field(Path(".state"), description="embedded services keep their data here")

    # --- topics -----------------------------------------------------------------------
    topic_raw: str = "elk.errors.raw"
    topic_analysis: str = "elk.errors.analysis"
    topic_execution: str = "elk.errors.execution"
    topic_results: str = "elk.errors.results"
    topic_dlq: str = "elk.errors.dlq"
    topic_approvals: str = "elk.errors.approvals"
    internal_topic_key: str | None = Field(
        None, description="optional: sign every record on the analysis and execution topics with HMAC-SHA256 under"
        " this key (the same on every copy) and refuse unsigned ones (elk_resolver/kafka/signing.py)"
    )
    topic_partitions: int = Field(8, ge=1, le=10_000, description="partition count used when creating topics")
    topic_replication_factor: int = Field(1, ge=1, le=16)

    # --- consumers --------------------------------------------------------------------
    group_ingest: str = "elk-resolver-ingest"
    group_analyze: str = "elk-resolver-analyze"
    group_execute: str = "elk-resolver-execute"
    # Kafka's own bounds: a broker accepts session timeouts of 6 s..30 min by default
    # (group.min/max.session.timeout.ms), and a heartbeat must come well inside the session
    session_timeout_ms: int = Field(8000, ge=1000, le=1_800_000)
    heartbeat_interval_ms: int = Field(2000, ge=100, le=600_000, description="below a third of session_timeout_ms")
    batch_max_records: int = Field(1000, ge=1, le=100_000)
    batch_timeout_ms: int = Field(50, ge=0, le=60_000)
    max_record_bytes: int = Field(1_048_576, ge=1024, le=64 << 20, description="larger records go to the DLQ")
    retry_backoff_initial_s: float = Field(0.5, gt=0, le=60)
    retry_backoff_max_s: float = Field(10.0, gt=0, le=3600)
    allow_fewer_partitions: bool = Field(
        False, description="run on a topic with fewer partitions than topic_partitions (it cannot be changed back)"
    )

    # --- ingest -----------------------------------------------------------------------
    fingerprint_version: FingerprintVersion = "template"
    elasticsearch_id_field: str = "event.hash"
    elasticsearch_id_header: str = "event_id"
    patterns_refresh_s: float = Field(2.0, gt=0, le=3600, description="error_patterns reload interval")
    merge_pass_every_s: float = Field(
        30.0, ge=0, le=86_400, description="learned-merge pass interval; the passes run in a process of its own beside each ingest copy (0: never; one pass at a time over every copy)"
    )
    gin_cleanup_every_s: float = Field(
        0.5, ge=0, le=3600, description="interval of the GIN pending-list pass beside ingest's writes (0: PostgreSQL's own, inline)"
    )
    mask_extra_patterns: CsvList = Field(
        default_factory=list, description="extra secret regexes: a JSON array, or one per line"
    )
    retention_days: int = Field(
        90, ge=7, le=36_500,
        description="days of occurrences kept; an event whose own time is older than this (less two days) when "
        "the broker receives it is stored at the time the broker received it",
    )

    # --- analysis ---------------------------------------------------------------------
    playbooks_dir: Path | None = Field(None, description="extra or overriding playbook JSON files")
    llm_enabled: bool = False
    llm_base_url: str | None = Field(None, description="OpenAI-compatible API base, e.g. https://api.openai.com/v1")
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = Field(20.0, gt=0, le=600)
    llm_max_retries: int = Field(3, ge=0, le=10)
    llm_cache_ttl_s: float = Field(
        3600.0, ge=0, le=30 * 86_400, description="the same hash never calls the LLM twice within this"
    )
    llm_rate_per_minute: float = Field(30.0, gt=0, le=100_000)
    llm_trust_after_successes: int = Field(
        3, ge=0, le=1000, description="LLM solutions need approval until this many approved successes"
    )

    # --- execution --------------------------------------------------------------------
    execution_mode: ExecutionMode = "dry-run"
    kill_switch: bool = False
    kubectl_path: str = "kubectl"
    kubernetes_executor: Literal["kubectl", "api"] = Field(
        "kubectl", description="kubectl commands run by the kubectl binary, or through the Kubernetes API (the image's)"
    )
    kubectl_kubeconfig: str | None = None
    kubectl_context: str | None = None
    kubectl_namespaces: CsvList = Field(default_factory=list)
    kubectl_verbs: CsvList = Field(
        default_factory=lambda: ["rollout restart", "rollout undo", "scale", "delete pod"]
    )
    kubectl_kinds: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=lambda: {
            "rollout restart": ["deployment", "statefulset", "daemonset"],
            "rollout undo": ["deployment", "statefulset", "daemonset"],
            "scale": ["deployment", "statefulset"],
            "delete pod": ["pod"],
        },
        description="JSON: kubectl verb -> the kinds it may act on (a verb missing here acts on nothing)",
    )
    kubectl_undo_to_revision: bool = Field(
        False, description="rollout undo may name --to-revision=N; off, only the previous revision"
    )
    kubectl_scale_max_step: int = Field(2, ge=1, le=1000, description="scale moves at most this many replicas from the current count")
    kubectl_scale_max_replicas: int = Field(20, ge=1, le=100_000, description="scale never goes above this many replicas")
    kubectl_scale_allow_zero: bool = Field(False, description="scale may stop a workload (--replicas=0)")
    kubectl_serviceaccount_token: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="present = running in a pod with a service account (live kubectl needs it or a context)",
    )
    elasticsearch_actions: CsvList = Field(
        default_factory=list,
        description="Elasticsearch write actions that may run (opt-in; elasticsearch_url alone enables none): "
        "clear_read_only_block, cluster_reroute_retry_failed, ilm_retry",
    )
    child_env_allowlist: CsvList = Field(
        default_factory=list,
        description="variables passed to kubectl/shell children besides PATH, HOME, KUBECONFIG and "
        "KUBERNETES_SERVICE_HOST/PORT (never ELK_RESOLVER_*)",
    )
    http_allowlist: CsvList = Field(default_factory=list, description="URL prefixes webhooks may call")
    shell_enabled: bool = False
    shell_allowlist: CsvList = Field(default_factory=list, description="binaries shell commands may run")
    command_timeout_s: float = Field(60.0, gt=0, le=3600)
    output_limit_bytes: int = Field(16_384, ge=256, le=16 << 20)
    cooldown_s: float = Field(600.0, ge=0, le=7 * 86_400, description="per object, between two actions")
    # repeats of an error on an object fold into its open request (issue 14, migration 0060)
    repeat_undecided_s: float = Field(
        60.0, ge=0, le=86_400, description="an undecided request absorbs repeats this long after it was requested"
    )
    analyze_batch_records: int = Field(
        500, ge=1, le=10_000, description="analysis records the analysis stage takes at once (repeats in one batch fold into one; first-seen errors first)"
    )
    execute_batch_records: int = Field(100, ge=1, le=10_000, description="execution pointers the execute stage takes at once")
    execute_concurrency: int = Field(
        4, ge=1, le=256, description="pointers one execute stage decides at once (the database's locks keep every guard)"
    )
    repeat_recheck_s: float = Field(
        30.0, ge=0, le=86_400, description="after a skip that claims nothing (off, kill switch, playbook off), repeats are judged again after this"
    )
    # 0 would stop every automatic action without saying so: the kill switch and
    # execution_mode=off are the ways to do that
    max_runs_per_hour: int = Field(3, ge=1, le=10_000, description="actions per object per hour")
    breaker_threshold: int = Field(3, ge=1, le=1000, description="consecutive failed or unverified runs before approval")
    stale_after_s: float = Field(900.0, gt=0, le=30 * 86_400, description="older events never run automatically")
    approval_ttl_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    verification_window_s: float = Field(900.0, gt=0, le=30 * 86_400)
    execution_maintenance_interval_s: float = Field(
        2.0, gt=0, le=3600, description="how often approvals expire and verifications are judged"
    )
    # budgets per object and for the fleet (issue 10): cooldown_s and max_runs_per_hour count
    # per object (kind/name/namespace), whatever error, solution or copy asks
    fleet_max_actions: int = Field(5, ge=0, le=100_000, description="automatic actions per fleet_window_s, overall")
    fleet_max_actions_per_namespace: int = Field(3, ge=0, le=100_000, description="automatic actions per fleet_window_s per namespace")
    fleet_window_s: float = Field(600.0, gt=0, le=7 * 86_400)
    systemic_hold_objects: int = Field(
        4, ge=1, le=100_000, description="more distinct objects than this needing one kind of action in systemic_window_s: hold"
    )
    systemic_window_s: float = Field(300.0, gt=0, le=7 * 86_400)
    # incidents as they happen (issue 20): what an experienced SRE would decide, from the database
    settle_s: float = Field(
        5.0, ge=0, le=3600, description="an automatic action waits until its request is this old, so the incident's shape"
        " (how many objects, which node, which dependency) is in the database before the first run"
    )
    quiet_after_s: float = Field(
        300.0, ge=0, le=7 * 86_400, description="an object whose newest error is older than this at decision time stopped by"
        " itself: nothing runs (0: off); longer than CrashLoopBackOff's longest back-off (5 min)"
    )
    node_hold_objects: int = Field(
        3, ge=2, le=100_000, description="this many workloads failing only on one node within systemic_window_s: the node is"
        " going bad, one held incident names it, no per-workload restarts"
    )
    dependency_outage_services: int = Field(
        2, ge=2, le=100_000, description="this many services naming one unreachable host:port within systemic_window_s: a"
        " dependency outage, the clients are never restarted"
    )
    rollout_window_s: float = Field(
        1800.0, ge=0, le=7 * 86_400, description="crash loops of pods of a ReplicaSet first seen this recently, after an older one"
        " of the deployment: a bad rollout, the rollback is preferred over the restart (0: off)"
    )
    # did the fix help? (issue 25): every request's outcome, acted on or not, and each action's
    # effect against the cases left alone
    effect_horizon_s: float = Field(
        3600.0, gt=0, le=30 * 86_400, description="a case counts as resolved when its error stopped (quiet for"
        " verification_window_s) within this long of its first error; unresolved when still seen after it"
    )
    effect_min_cases: int = Field(
        20, ge=1, le=1_000_000, description="cases acted on and left alone (each) before a solution's measured effect"
        " ranks it and decides whether it is automatic"
    )
    grace_s: float = Field(
        0.0, ge=0, le=7 * 86_400, description="an automatic action waits this long after the case's first error, and"
        " runs only if the error is still there (0: off; settle_s still applies)"
    )
    trial_max_per_window: int = Field(
        10, ge=0, le=1_000_000, description="cases an observe-only trial of a playbook leaves alone per trial_window_s, at most"
    )
    trial_window_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    critical_namespaces: CsvList = Field(
        default_factory=list, description="namespaces an observe-only trial never leaves a case alone in"
    )
    recurrence_to_person: bool = Field(
        True, description="a run whose error came back on the same object sends that object's next request to a"
        " person, with the runs' history, instead of running again"
    )
    run_lost_after_s: float = Field(
        900.0, gt=0, le=7 * 86_400, description="a claimed live run with no recorded outcome after this is lost (the reaper)"
    )
    approved_sweep_after_s: float = Field(
        5.0, ge=0, le=86_400, description="an approval whose pointer never reached the execute stage is run after this"
    )

    # --- faults -----------------------------------------------------------------------
    db_command_timeout_s: float = Field(30.0, gt=0, le=3600, description="a statement slower than this counts as a failure")
    db_connect_timeout_s: float = Field(10.0, gt=0, le=600)
    db_keepalive_idle_s: int = Field(30, ge=1, le=7200, description="TCP keepalive idle time of database connections")
    shutdown_timeout_s: float = Field(
        20.0, gt=0, le=600, description="SIGTERM exits within this, whatever the broker or database do"
    )
    stall_after_s: float = Field(
        30.0, gt=0, le=86_400, description="a stage with lag above stall_lag_threshold and no commit for this long is not ready"
    )
    stall_lag_threshold: int = Field(0, ge=0, le=1_000_000_000, description="lag a stalled stage may have and still be ready")
    db_check_interval_s: float = Field(
        2.0, gt=0, le=3600, description="how often /ready's database check runs (/ready answers from the last one)"
    )
    lag_interval_s: float = Field(5.0, gt=0, le=3600, description="how often committed offsets and log ends are read")
    topic_check_interval_s: float = Field(5.0, gt=0, le=3600, description="how often the managed topics are checked")
    manage_topics: bool = Field(True, description="create missing topics again (e.g. after a broker restart)")
    metrics_db_interval_s: float = Field(
        30.0, ge=0, le=3600, description="database figures in /metrics are at most this old (0: read on every scrape)"
    )

    # --- operating --------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65_535, description="0 picks a free port")
    monitor_interval_s: float = Field(30.0, ge=0.1, le=86_400, description="how often system_status is written; from 0.1 s (0 would spin)")
    monitor_lag_warning: int = Field(10_000, ge=0, le=1_000_000_000, description="consumer lag above this marks kafka as warning")
    log_json: bool = False
    log_level: str = "INFO"

    # --- people in the loop: notifications and the console ---------------------------------
    notify_urls: CsvList = Field(
        default_factory=list,
        description="apprise URLs, a JSON array or comma-separated: slack://, msteams://, mailto://,"
        " pagerduty://, opsgenie://, json:// ...; none means no notification is sent",
    )
    notify_webhook_url: str | None = Field(
        None, description="a generic JSON webhook, signed with HMAC-SHA256 of notify_webhook_secret"
    )
    notify_webhook_secret: str | None = None
    notify_rate_per_minute: int = Field(20, ge=1, le=10_000, description="messages per channel per minute; more wait")
    notify_max_attempts: int = Field(8, ge=1, le=100, description="a message that failed this often is given up")
    notify_interval_s: float = Field(1.0, gt=0, le=3600, description="how often each copy looks for messages to send")
    console_url: str | None = Field(None, description="the console's address as people reach it (links in messages)")
    console_secret: str | None = Field(
        None, description="signs console sessions and CSRF tokens; set the same value on every copy"
    )
    console_users: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description='{"alice": "scrypt$..."} (`elk-resolver console hash-password`)'
    )
    console_tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description='{"deploy-bot": "<sha256 hex of the API token>"}'
    )
    console_groups: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict, description='{"alice": ["sre"]}')
    console_approvers: CsvList = Field(
        default_factory=list, description="who may decide: user names or group:NAME; empty = any authenticated person"
    )
    console_trusted_proxies: CsvList = Field(
        default_factory=list, description="addresses (or CIDRs) of the authenticating proxy whose user header is believed"
    )
    console_user_header: str = "X-Forwarded-User"
    console_groups_header: str = "X-Forwarded-Groups"
    console_session_s: float = Field(8 * 3600.0, gt=0, le=30 * 86_400)
    operator: str | None = Field(None, description="the identity the CLI decides as (approvals, kill switch)")
    kibana_data_view: str | None = Field(None, description="Kibana data view id for Discover links")

    _patterns = field_validator("mask_extra_patterns", mode="before")(_split_patterns)
    _objects = field_validator(
        "kubectl_kinds", "console_users", "console_tokens", "console_groups", mode="before"
    )(_json_object)
    _csv = field_validator(
        "kubectl_namespaces",
        "kubectl_verbs",
        "http_allowlist",
        "shell_allowlist",
        "notify_urls",
        "console_approvers",
        "console_trusted_proxies",
        "elasticsearch_actions",
        "child_env_allowlist",
        "critical_namespaces",
        mode="before",
    )(_split_csv)

    @field_validator("kubectl_kinds")
    @classmethod
    def _known_verbs_and_kinds(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for verb, kinds in value.items():
            if verb not in KUBECTL_VERBS:
                raise ValueError(f"unknown kubectl verb {verb!r} (known: {', '.join(KUBECTL_VERBS)})")
            unknown = [k for k in kinds if kind_of(k) is None]
            if unknown:
                raise ValueError(f"unknown kind(s) {unknown} for {verb!r}")
        return value

    @field_validator("elasticsearch_actions")
    @classmethod
    def _known_actions(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ES_ACTIONS))
        if unknown:
            raise ValueError(f"unknown action(s) {unknown} (known: {', '.join(ES_ACTIONS)})")
        return value

    @field_validator("child_env_allowlist")
    @classmethod
    def _no_service_secrets(cls, value: list[str]) -> list[str]:
        leaked = [name for name in value if name.upper().startswith("ELK_RESOLVER_")]
        if leaked:
            raise ValueError(f"child processes never get the service's own settings ({', '.join(leaked)})")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// DSN")
        return value

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        """Refuse at start what would only fail at the first connection (or never: a SASL
        setting with a non-SASL protocol would quietly connect without it)."""
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol != "PLAINTEXT" and not self.kafka_bootstrap_servers:
            raise ValueError(f"kafka_security_protocol {protocol} needs kafka_bootstrap_servers "
                             "(the embedded broker speaks plain text only)")
        sasl = protocol.startswith("SASL_")
        if sasl and mechanism is None:
            raise ValueError(f"kafka_security_protocol {protocol} needs kafka_sasl_mechanism")
        if not sasl and (mechanism or self.kafka_sasl_username or self.kafka_sasl_password
                         or self.kafka_sasl_oauth_token_file):
            raise ValueError(f"SASL settings are given but kafka_security_protocol is {protocol}: use SASL_SSL")
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.kafka_sasl_username and self.kafka_sasl_password and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(f"kafka_sasl_mechanism {mechanism} needs kafka_sasl_username and kafka_sasl_password")
        if mechanism == "OAUTHBEARER" and self.kafka_sasl_oauth_token_file is None:
            raise ValueError("kafka_sasl_mechanism OAUTHBEARER needs kafka_sasl_oauth_token_file")
        tls = protocol in ("SSL", "SASL_SSL")
        files = {
            "kafka_ssl_cafile": self.kafka_ssl_cafile,
            "kafka_ssl_certfile": self.kafka_ssl_certfile,
            "kafka_ssl_keyfile": self.kafka_ssl_keyfile,
        }
        if not tls and any(files.values()):
            raise ValueError(f"TLS files are given but kafka_security_protocol is {protocol}: use SSL or SASL_SSL")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("kafka_ssl_keyfile needs kafka_ssl_certfile")
        files["kafka_sasl_oauth_token_file"] = self.kafka_sasl_oauth_token_file
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            problems.append(
                f"ELK_RESOLVER_HEARTBEAT_INTERVAL_MS={self.heartbeat_interval_ms} must be at most a third of "
                f"ELK_RESOLVER_SESSION_TIMEOUT_MS={self.session_timeout_ms} (a member whose heartbeats do not fit "
                "in its session is thrown out of the group)"
            )
        if self.retry_backoff_initial_s > self.retry_backoff_max_s:
            problems.append(
                f"ELK_RESOLVER_RETRY_BACKOFF_INITIAL_S={self.retry_backoff_initial_s:g} must not exceed "
                f"ELK_RESOLVER_RETRY_BACKOFF_MAX_S={self.retry_backoff_max_s:g}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def isolated(self, prefix: str) -> Settings:
        """A copy whose topics and consumer groups all start with ``prefix``: one independent
        pipeline per test or benchmark run on a shared broker."""
        # names only: other topic_*/group_* settings (partition counts, the topic check's
        # interval) keep their values (renaming topic_check_interval_s made it a string, and
        # the topic watch of every isolated pipeline died on its first sleep)
        names = {
            name: f"{prefix}-{name.split('_', 1)[1]}"
            for name, field in type(self).model_fields.items()
            if name.startswith(("topic_", "group_")) and field.annotation is str
        }
        return self.model_copy(update=names)

    def topics(self) -> list[str]:
        return [
            self.topic_raw,
            self.topic_analysis,
            self.topic_execution,
            self.topic_results,
            self.topic_dlq,
            self.topic_approvals,
        ]


_SECRET_WORDS = ("password", "secret", "token", "key", "url", "users")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(name: str) -> str | None:
    """The range a numeric setting allows, in words ("from 0 to 65535")."""
    field = Settings.model_fields.get(name)
    if field is None:
        return None
    lo = hi = None
    for m in field.metadata:
        for attr, text in (("ge", "from {}"), ("gt", "more than {}")):
            if getattr(m, attr, None) is not None:
                lo = text.format(_number(getattr(m, attr)))
        for attr, text in (("le", "to {}"), ("lt", "below {}")):
            if getattr(m, attr, None) is not None:
                hi = text.format(_number(getattr(m, attr)))
    if lo and hi and lo.startswith("more"):
        return f"{lo} and up {hi}"
    return " ".join(x for x in (lo, hi) if x) or None


def explain(exc: ValidationError) -> list[str]:
    """One line per bad setting: the variable, the value (unless it may hold a secret) and
    what is allowed."""
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        if not loc:  # a rule over several settings: its message names them
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        name = loc[0]
        var = f"ELK_RESOLVER_{name.upper()}"
        shown = error.get("input")
        value = "" if any(w in name for w in _SECRET_WORDS) or isinstance(shown, dict | list) else f"={shown}"
        allowed = _bounds(name) if error["type"] in {
            "greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing", "float_parsing",
            "int_from_float",
        } else None
        detail = error["msg"].removeprefix("Value error, ")
        if allowed:
            kind = "a whole number" if Settings.model_fields[name].annotation is int else "a number"
            detail = f"must be {kind} {allowed}"
        where = f" ({'.'.join(loc[1:])})" if len(loc) > 1 else ""
        lines.append(f"invalid setting {var}{value}{where}: {detail}")
    return lines


def make_settings(**overrides: object) -> Settings:
    """The one place settings are built; overrides win over the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
