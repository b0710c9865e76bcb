"""Every setting of the service, read from ``ELK_RESOLVER_*`` variables and ``.env``.

Build it with :func:`make_settings` in the app factory or the CLI, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ExecutionMode = Literal["dry-run", "live", "off"]
FingerprintVersion = Literal["exact", "template"]
Stage = Literal["ingest", "analyze", "execute", "monitor"]

CsvList = Annotated[list[str], NoDecode]


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
    topic_partitions: int = Field(8, ge=1, description="partition count used when creating topics")
    topic_replication_factor: int = Field(1, ge=1)

    # --- consumers --------------------------------------------------------------------
    group_ingest: str = "elk-resolver-ingest"
    group_analyze: str = "elk-resolver-analyze"
    group_execute: str = "elk-resolver-execute"
    session_timeout_ms: int = 8000
    heartbeat_interval_ms: int = 2000
    batch_max_records: int = Field(1000, ge=1)
    batch_timeout_ms: int = Field(50, ge=0)
    max_record_bytes: int = Field(1_048_576, ge=1, description="larger records go to the DLQ")
    retry_backoff_initial_s: float = 0.5
    retry_backoff_max_s: float = 10.0

    # --- ingest -----------------------------------------------------------------------
    fingerprint_version: FingerprintVersion = "template"
    elasticsearch_id_field: str = "event.hash"
    elasticsearch_id_header: str = "event_id"
    patterns_refresh_s: float = Field(2.0, gt=0, description="error_patterns reload interval")
    merge_pass_every_s: float = Field(
        30.0, ge=0, description="learned-merge pass interval per ingest copy (0: never; one copy runs at a time)"
    )
    gin_cleanup_every_s: float = Field(
        0.5, ge=0, description="interval of the GIN pending-list pass beside ingest's writes (0: PostgreSQL's own, inline)"
    )
    mask_extra_patterns: CsvList = Field(
        default_factory=list, description="extra secret regexes: a JSON array, or one per line"
    )
    retention_days: int = Field(90, ge=1)

    # --- analysis ---------------------------------------------------------------------
    playbooks_dir: Path | None = Field(None, description="extra or overriding playbook JSON files")
    llm_enabled: bool = False
    llm_base_url: str | None = Field(None, description="OpenAI-compatible API base, e.g. https://api.openai.com/v1")
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = 20.0
    llm_max_retries: int = 3
    llm_cache_ttl_s: float = Field(3600.0, description="the same hash never calls the LLM twice within this")
    llm_rate_per_minute: float = 30.0
    llm_trust_after_successes: int = Field(
        3, ge=0, description="LLM solutions need approval until this many approved successes"
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
    kubectl_kinds: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "rollout restart": ["deployment", "statefulset", "daemonset"],
            "rollout undo": ["deployment", "statefulset", "daemonset"],
            "scale": ["deployment", "statefulset"],
            "delete pod": ["pod"],
        },
        description="JSON: kubectl verb -> the kinds it may act on (a verb missing here acts on nothing)",
    )
    kubectl_scale_max_step: int = Field(2, ge=1, description="scale moves at most this many replicas from the current count")
    kubectl_scale_max_replicas: int = Field(20, ge=1, description="scale never goes above this many replicas")
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
    command_timeout_s: float = 60.0
    output_limit_bytes: int = 16_384
    cooldown_s: float = 600.0
    # repeats of an error on an object fold into its open request (issue 14, migration 0060)
    repeat_undecided_s: float = Field(
        60.0, ge=0, description="an undecided request absorbs repeats this long after it was requested"
    )
    analyze_batch_records: int = Field(
        500, ge=1, description="analysis records the analysis stage takes at once (repeats in one batch fold into one; first-seen errors first)"
    )
    execute_batch_records: int = Field(100, ge=1, description="execution pointers the execute stage takes at once")
    execute_concurrency: int = Field(
        4, ge=1, description="pointers one execute stage decides at once (the database's locks keep every guard)"
    )
    repeat_recheck_s: float = Field(
        30.0, ge=0, description="after a skip that claims nothing (off, kill switch, playbook off), repeats are judged again after this"
    )
    max_runs_per_hour: int = 3
    breaker_threshold: int = 3
    stale_after_s: float = Field(900.0, description="older events never run automatically")
    approval_ttl_s: float = 3600.0
    verification_window_s: float = 900.0
    execution_maintenance_interval_s: float = Field(
        2.0, gt=0, description="how often approvals expire and verifications are judged"
    )
    # budgets per object and for the fleet (issue 10): cooldown_s and max_runs_per_hour count
    # per object (kind/name/namespace), whatever error, solution or copy asks
    fleet_max_actions: int = Field(5, ge=0, description="automatic actions per fleet_window_s, overall")
    fleet_max_actions_per_namespace: int = Field(3, ge=0, description="automatic actions per fleet_window_s per namespace")
    fleet_window_s: float = Field(600.0, gt=0)
    systemic_hold_objects: int = Field(
        4, ge=1, description="more distinct objects than this needing one kind of action in systemic_window_s: hold"
    )
    systemic_window_s: float = Field(300.0, gt=0)
    # incidents as they happen (issue 20): what an experienced SRE would decide, from the database
    settle_s: float = Field(
        5.0, ge=0, description="an automatic action waits until its request is this old, so the incident's shape"
        " (how many objects, which node, which dependency) is in the database before the first run"
    )
    quiet_after_s: float = Field(
        300.0, ge=0, description="an object whose newest error is older than this at decision time stopped by"
        " itself: nothing runs (0: off); longer than CrashLoopBackOff's longest back-off (5 min)"
    )
    node_hold_objects: int = Field(
        3, ge=2, description="this many workloads failing only on one node within systemic_window_s: the node is"
        " going bad, one held incident names it, no per-workload restarts"
    )
    dependency_outage_services: int = Field(
        2, ge=2, description="this many services naming one unreachable host:port within systemic_window_s: a"
        " dependency outage, the clients are never restarted"
    )
    rollout_window_s: float = Field(
        1800.0, ge=0, description="crash loops of pods of a ReplicaSet first seen this recently, after an older one"
        " of the deployment: a bad rollout, the rollback is preferred over the restart (0: off)"
    )
    recurrence_to_person: bool = Field(
        True, description="a run whose error came back on the same object sends that object's next request to a"
        " person, with the runs' history, instead of running again"
    )
    run_lost_after_s: float = Field(
        900.0, gt=0, description="a claimed live run with no recorded outcome after this is lost (the reaper)"
    )
    approved_sweep_after_s: float = Field(
        5.0, ge=0, description="an approval whose pointer never reached the execute stage is run after this"
    )

    # --- faults -----------------------------------------------------------------------
    db_command_timeout_s: float = Field(30.0, gt=0, description="a statement slower than this counts as a failure")
    db_connect_timeout_s: float = Field(10.0, gt=0)
    db_keepalive_idle_s: int = Field(30, ge=1, description="TCP keepalive idle time of database connections")
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="SIGTERM exits within this, whatever the broker or database do"
    )
    stall_after_s: float = Field(
        30.0, gt=0, description="a stage with lag above stall_lag_threshold and no commit for this long is not ready"
    )
    stall_lag_threshold: int = Field(0, ge=0, description="lag a stalled stage may have and still be ready")
    lag_interval_s: float = Field(5.0, gt=0, description="how often committed offsets and log ends are read")
    topic_check_interval_s: float = Field(5.0, gt=0, description="how often the managed topics are checked")
    manage_topics: bool = Field(True, description="create missing topics again (e.g. after a broker restart)")
    metrics_db_interval_s: float = Field(
        30.0, ge=0, description="database figures in /metrics are at most this old (0: read on every scrape)"
    )

    # --- operating --------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    monitor_interval_s: float = 30.0
    monitor_lag_warning: int = Field(10_000, ge=0, description="consumer lag above this marks kafka as warning")
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
    notify_rate_per_minute: int = Field(20, ge=1, description="messages per channel per minute; more wait")
    notify_max_attempts: int = Field(8, ge=1, description="a message that failed this often is given up")
    notify_interval_s: float = Field(1.0, gt=0, description="how often each copy looks for messages to send")
    console_url: str | None = Field(None, description="the console's address as people reach it (links in messages)")
    console_secret: str | None = Field(
        None, description="signs console sessions and CSRF tokens; set the same value on every copy"
    )
    console_users: dict[str, str] = Field(
        default_factory=dict, description='{"alice": "scrypt$..."} (`elk-resolver console hash-password`)'
    )
    console_tokens: dict[str, str] = Field(
        default_factory=dict, description='{"deploy-bot": "<sha256 hex of the API token>"}'
    )
    console_groups: dict[str, list[str]] = Field(default_factory=dict, description='{"alice": ["sre"]}')
    console_approvers: CsvList = Field(
        default_factory=list, description="who may decide: user names or group:NAME; empty = any authenticated person"
    )
    console_trusted_proxies: CsvList = Field(
        default_factory=list, description="addresses (or CIDRs) of the authenticating proxy whose user header is believed"
    )
    console_user_header: str = "X-Forwarded-User"
    console_groups_header: str = "X-Forwarded-Groups"
    console_session_s: float = Field(8 * 3600.0, gt=0)
    operator: str | None = Field(None, description="the identity the CLI decides as (approvals, kill switch)")
    kibana_data_view: str | None = Field(None, description="Kibana data view id for Discover links")

    _patterns = field_validator("mask_extra_patterns", mode="before")(_split_patterns)
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


def make_settings(**overrides: object) -> Settings:
    """The one place settings are built; overrides win over the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
