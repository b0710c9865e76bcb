"""The Grafana dashboard and the Prometheus alert rules name only what /metrics exports: a
running service (every stage, real broker and PostgreSQL) is scraped and compared."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from streams.app import create_app
from tests.support.kubernetes import KUBERNETES_DIR, ROOT
from tests.support.polling import wait_for
from tests.support.rows import record_run

DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
RULES = KUBERNETES_DIR / "components" / "prometheus-operator" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "tests" / "data" / "alert-rules.promtool.yaml"
METRIC = re.compile(r"\belk_resolver_[a-z0-9_]+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

ALERTS = {"ElkResolverLagGrowing", "ElkResolverDeadLetterRate", "ElkResolverNoProgress",
          "ElkResolverBreakerTripped", "ElkResolverApprovalWaiting", "ElkResolverKillSwitchOn",
          "ElkResolverNotificationsFailing"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def exported(text: str) -> tuple[set[str], set[str]]:
    """Sample names (with their type's suffixes, even for a labelled family with no sample yet)
    and label names the scrape shows."""
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, ()))
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def test_dashboard_is_importable_grafana_json_with_the_panels_the_operators_need():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert any(i["type"] == "datasource" for i in dashboard["__inputs"])
    exprs = " ".join(dashboard_exprs())
    for needed in ("events_in", "published", "dead_lettered", "consumer_lag", "batch_seconds_bucket",
                   "executions", "approvals_pending", "approval_oldest_pending_seconds", "breakers_open"):
        assert f"elk_resolver_{needed}" in exprs, needed


def test_every_dashboard_panel_has_an_id_and_every_query_follows_the_instance_and_namespace_variables():
    """Was: panels without ids (Grafana links, alerts and library panels need them) and no way
    to look at one namespace or one copy of the service."""
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p.get("id") for p in dashboard["panels"]]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids), ids
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("namespace", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert f"label_values(elk_resolver_" in v["query"]["query"] and f", {name})" in v["query"]["query"]
    for expr in dashboard_exprs():
        for metric in re.finditer(r"\belk_resolver_[a-z0-9_]+(\{[^}]*\})?", expr):
            selector = metric.group(1) or ""
            assert 'namespace=~"$namespace"' in selector and 'instance=~"$instance"' in selector, expr


def test_alert_rules_cover_the_incidents_and_are_well_formed():
    found = rules()
    assert ALERTS <= {r["alert"] for r in found}
    for rule in found:
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]


def _event(i: int) -> bytes:
    return orjson.dumps({
        "@timestamp": "2024-05-01T10:00:00Z", "message": f"Connection refused to db port 5432 attempt {i}",
        "log": {"level": "error"}, "service": {"name": "billing"}, "event": {"hash": f"mon-{i}"},
    })


async def test_dashboard_and_rules_name_only_metrics_a_running_service_exports(settings, pool):
    # every stage, as `elk-resolver run` starts them; database figures read on every scrape
    app = create_app(settings.model_copy(update={"metrics_db_interval_s": 0}))
    async with app:
        async with httpx.AsyncClient(base_url=app.http_url, timeout=10) as http:
            await wait_for(lambda: _ok(http), timeout=60, what="/ready 200")
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
            await producer.start()
            try:
                await producer.send_and_wait(settings.topic_raw, _event(1), key=b"billing")
                await producer.send_and_wait(settings.topic_raw, b"{not json", key=b"billing")  # a DLQ sample
            finally:
                await producer.stop()

            async def dead_lettered() -> bool:
                return "elk_resolver_dead_lettered_total{" in (await http.get("/metrics")).text

            await wait_for(dead_lettered, timeout=60, what="the bad record dead-lettered")
            async with pool.acquire() as conn:  # one run, so executions{status} has a sample
                await record_run(conn, "monitoring-h1")
            names, labels = exported((await http.get("/metrics")).text)
    # a labelled family with no sample yet (no retry, no notification sent) shows no label
    # names in the text format; read them from the definition of each family the scrape lists
    for collector, family_names in REGISTRY._collector_to_names.items():  # noqa: SLF001
        if set(family_names) & names:
            labels.update(getattr(collector, "_labelnames", ()))

    queries = dashboard_exprs() + [r["expr"] for r in rules()]
    used = {m for q in queries for m in METRIC.findall(q)}
    assert used - names == set(), f"not exported by /metrics: {sorted(used - names)}"
    grouped = {label.strip() for q in queries for g in GROUPING.findall(q) for label in g.split(",") if label.strip()}
    assert grouped - labels - {"le"} == set(), f"labels /metrics does not carry: {sorted(grouped - labels)}"


async def _ok(http: httpx.AsyncClient) -> bool:
    return (await http.get("/ready")).status_code == 200


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError("promtool is missing: apt-get install prometheus (python3 dev.py test does)")
    return found


def test_alert_rules_pass_promtool_and_fire_on_the_incidents_they_name(tmp_path):
    spec = yaml.safe_load(RULES.read_text())["spec"]
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(spec))
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "full.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # the unit tests judge the expressions: annotations would have to be repeated to the letter
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(UNIT_TESTS, tmp_path / "tests.yaml")
    run = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    tested = {t["alertname"] for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == {r["alert"] for r in rules()}, "every alert has a test in which it fires"
