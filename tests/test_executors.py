"""Executors against real processes and real local servers: nothing here is mocked."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from elasticsearch import AsyncElasticsearch

from elk_resolver.actions.executors import run_commands
from elk_resolver.actions.executors.elasticsearch import make_client
from elk_resolver.actions.policy import ES_ACTIONS, Command, ExecutionPolicy, ScaleBounds
from elk_resolver.settings import make_settings
from tests.support.es_stub import EsStub, Reply, error_reply
from tests.support.fake_kubectl import path_with, write_fake_kubectl
from tests.support.polling import wait_for

RESTART = "kubectl rollout restart deployment/api -n payments"
ES_POLICY = ExecutionPolicy(elasticsearch_actions=tuple(ES_ACTIONS))  # opted in


def kube_policy(fake, **overrides) -> ExecutionPolicy:
    fields = {"kubectl_path": str(fake.path), "kubectl_namespaces": ("payments",), **overrides}
    return ExecutionPolicy(**fields)


def k(line: str, **extra) -> dict:
    return {"type": "kubectl", "command": line, **extra}


# --- kubectl ------------------------------------------------------------------------------


async def test_kubectl_success_records_argv_and_masks_output(tmp_path):
    fake = write_fake_kubectl(tmp_path)
    policy = kube_policy(fake, kubectl_kubeconfig="/etc/kube/config", kubectl_context="prod")

    [result] = await run_commands([k(RESTART)], policy, dry_run=False)

    assert result.status == "success" and result.exit_code == 0
    assert fake.calls() == [
        ["rollout", "restart", "deployment/api", "-n", "payments", "--kubeconfig", "/etc/kube/config", "--context", "prod"]
    ]
    assert "deployment.apps/api restarted" in result.output
    assert "stderr: ok" in result.output  # stderr is captured with stdout
    assert "hunter2" not in result.output
    assert "password=***" in result.output
    assert result.duration_s > 0


async def test_bare_kubectl_is_found_on_path(tmp_path):
    fake = write_fake_kubectl(tmp_path / "bin")
    policy = ExecutionPolicy(kubectl_namespaces=("payments",))  # kubectl_path="kubectl"
    [result] = await run_commands([k(RESTART)], policy, dry_run=False, env=path_with(tmp_path / "bin"))
    assert result.status == "success", result.output
    assert len(fake.calls()) == 1


async def test_kubectl_nonzero_exit_is_failed(tmp_path):
    fake = write_fake_kubectl(tmp_path, default="fail")
    [result] = await run_commands([k(RESTART)], kube_policy(fake), dry_run=False)
    assert result.status == "failed"
    assert result.exit_code == 1
    assert "stderr: fail" in result.output


# --- kubectl: environment and bounded scale (issue 10) -------------------------------------


async def test_kubectl_gets_a_scrubbed_environment_never_the_services_secrets(tmp_path, monkeypatch):
    secrets = {
        "DATABASE_URL": "postgresql://app:s3cret@db/app",
        "ELK_RESOLVER_DATABASE_URL": "postgresql://app:s3cret@db/app",
        "ELK_RESOLVER_LLM_API_KEY": "sk-live-abc",
        "OPENAI_API_KEY": "sk-live-abc",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    fake = write_fake_kubectl(tmp_path)
    policy = ExecutionPolicy.from_settings(make_settings(
        kubectl_path=str(fake.path), kubectl_namespaces="payments", child_env_allowlist="HTTPS_PROXY",
    ))
    [result] = await run_commands([k(RESTART)], policy, dry_run=False)  # env=None: the service's own
    assert result.status == "success", result.output
    [entry] = fake.entries()
    env = entry["env"]
    assert not set(secrets) & set(env)
    assert "s3cret" not in str(env) and "sk-live" not in str(env)
    assert env["KUBECONFIG"] == "/etc/kube/config" and env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["PATH"] and env["HOME"]
    # Python may add LC_CTYPE in the child itself (PEP 538); nothing else is there
    assert set(env) <= {"PATH", "HOME", "KUBECONFIG", "HTTPS_PROXY", "LC_CTYPE"}


def test_the_service_settings_cannot_be_allowlisted_for_children():
    with pytest.raises(ValueError, match="never get the service's own settings"):
        make_settings(child_env_allowlist="PATH,ELK_RESOLVER_LLM_API_KEY")


async def test_scale_reads_the_current_count_and_stays_within_bounds(tmp_path):
    fake = write_fake_kubectl(tmp_path, replicas={"deployment/api": 3, "deployment/web": 1})
    policy = kube_policy(fake, kubectl_context="prod")
    ok, too_far, down_too_far = await run_commands(
        [
            k("kubectl scale deployment/api --replicas=5 -n payments"),
            k("kubectl scale deployment/api --replicas=9 -n payments"),
            k("kubectl scale deployment/web --replicas=4 -n payments"),
        ],
        policy,
        dry_run=False,
    )
    assert ok.status == "success", ok.output
    assert too_far.refused and "moves 6 replicas from the current 3" in too_far.reason
    assert down_too_far.refused and "current 1" in down_too_far.reason
    calls = fake.calls()
    get = ["get", "deployment/api", "-n", "payments", "-o", "jsonpath={.spec.replicas}", "--context", "prod"]
    # the count it read is the precondition of the change: kubectl refuses if it moved since
    assert calls[:2] == [
        get,
        ["scale", "deployment/api", "--replicas=5", "-n", "payments", "--context", "prod", "--current-replicas=3"],
    ]
    assert [c[0] for c in calls[2:]] == ["get", "get"]  # the refused ones only read


async def test_scale_is_refused_when_the_current_count_cannot_be_read_or_disagrees(tmp_path):
    fake = write_fake_kubectl(tmp_path, replicas={"deployment/api": 2}, default_replicas=None)
    missing, stale = await run_commands(
        [
            k("kubectl scale deployment/gone --replicas=2 -n payments"),
            k("kubectl scale deployment/api --replicas=3 --current-replicas=1 -n payments"),
        ],
        kube_policy(fake),
        dry_run=False,
    )
    assert missing.refused and "cannot read the current replica count of deployment/gone" in missing.reason
    assert stale.refused and "expects 1 current replicas" in stale.reason
    assert [c[0] for c in fake.calls()] == ["get", "get"]


async def test_scale_to_zero_is_never_run_unless_allowed(tmp_path):
    fake = write_fake_kubectl(tmp_path, replicas={"deployment/api": 1})
    line = "kubectl scale deployment/api --replicas=0 -n payments"
    [refused] = await run_commands([k(line)], kube_policy(fake), dry_run=False)
    assert refused.refused and "0 replicas" in refused.reason and fake.calls() == []
    allowed = kube_policy(fake, scale_bounds=ScaleBounds(allow_zero=True))
    [result] = await run_commands([k(line)], allowed, dry_run=False)
    assert result.status == "success" and fake.calls()[-1][:3] == ["scale", "deployment/api", "--replicas=0"]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_hanging_kubectl_times_out_and_its_process_group_is_killed(tmp_path):
    fake = write_fake_kubectl(tmp_path, default="hang")
    policy = kube_policy(fake, default_timeout_s=1.0)

    started = time.monotonic()
    [result] = await run_commands([k(RESTART)], policy, dry_run=False)

    assert time.monotonic() - started < 10
    assert result.status == "timeout"
    assert "killed after 1s timeout" in result.output
    assert "hunter2" not in result.output and "password=***" in result.output  # partial output kept
    [entry] = fake.entries()
    assert _gone(entry["pid"])
    await wait_for(lambda: _gone(entry["child_pid"]), timeout=5, what="grandchild killed with the group")


async def test_command_timeout_can_only_shorten_the_policy_timeout(tmp_path):
    fake = write_fake_kubectl(tmp_path, default="hang")
    started = time.monotonic()
    [result] = await run_commands([k(RESTART, timeout_s=0.5)], kube_policy(fake), dry_run=False)
    assert result.status == "timeout"
    assert time.monotonic() - started < 10


async def test_output_is_truncated_to_the_limit_with_a_marker_and_still_masked(tmp_path):
    fake = write_fake_kubectl(tmp_path, default="flood", flood_bytes=200_000)
    policy = kube_policy(fake, output_limit_bytes=1000)
    [result] = await run_commands([k(RESTART)], policy, dry_run=False)
    assert result.status == "success"
    body, _, marker = result.output.rpartition("\n...[output truncated: ")
    assert len(body.encode()) <= 1000
    assert marker.startswith("200")  # total bytes produced, over 200 000
    assert "hunter2" not in result.output


async def test_secret_straddling_the_cut_is_masked_whole(tmp_path):
    # Masking runs on the captured window before the cut: cut first, "AKIAIOSFODNN7EX" would
    # no longer look like an AWS key and would leak.
    key = "AKIAIOSFODNN7EXAMPLE"
    fake = write_fake_kubectl(tmp_path, default="flood", flood_bytes=0, output=f"key {key}")
    policy = kube_policy(fake, output_limit_bytes=len("key AKIAIOSFODNN7EX"))
    [result] = await run_commands([k(RESTART)], policy, dry_run=False)
    assert "AKIA" not in result.output
    assert "output truncated" in result.output


@pytest.mark.parametrize(
    "line",
    [
        "kubectl rollout restart deployment/api -n payments; touch {marker}",
        "kubectl rollout restart deployment/api -n payments $(touch {marker})",
        "kubectl rollout restart 'deployment/api $(touch {marker})' -n payments",
        "kubectl rollout restart deployment/api -n payments `touch {marker}`",
        "kubectl rollout restart deployment/api -n payments && touch {marker}",
        "kubectl rollout restart deployment/api -n payments | touch {marker}",
        "kubectl rollout restart deployment/api -n payments\ntouch {marker}",
        "kubectl rollout restart deployment/api -n payments > {marker}",
    ],
)
async def test_injection_is_refused_and_never_executed(tmp_path, line):
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    fake = write_fake_kubectl(tmp_path)
    [result] = await run_commands([k(line.format(marker=marker), critical=True)], kube_policy(fake), dry_run=False)
    assert result.refused and result.status == "failed"
    assert "refused by policy" in result.output
    assert fake.calls() == []  # kubectl never started
    assert not marker.exists()


async def test_quoted_payload_would_only_ever_be_one_literal_argv_element(tmp_path):
    # No shell is ever involved: even a payload the policy let through would arrive verbatim
    # as one argv element. Shown with an allowlisted program and metacharacter-free payload
    # that a shell would have expanded (glob and tilde).
    marker_dir = tmp_path / "glob"
    marker_dir.mkdir()
    (marker_dir / "secret.txt").write_text("x")
    fake = write_fake_kubectl(tmp_path)
    policy = ExecutionPolicy(shell_enabled=True, shell_allowlist=(str(fake.path),))
    line = f"{fake.path} '{marker_dir}/*' ~root 'two words'"
    [result] = await run_commands([{"type": "shell", "command": line}], policy, dry_run=False)
    assert result.status == "success", result.output
    assert fake.calls() == [[f"{marker_dir}/*", "~root", "two words"]]


async def test_refused_command_never_runs_even_if_stored_safe(tmp_path):
    fake = write_fake_kubectl(tmp_path)
    cmd = k("kubectl rollout restart deployment/api -n kube-system", safe=True)
    [result] = await run_commands([cmd], kube_policy(fake), dry_run=False)
    assert result.refused
    assert "namespace 'kube-system' is not in the namespace allowlist" in result.reason
    assert fake.calls() == []


async def test_critical_failure_stops_the_remaining_commands(tmp_path):
    fake = write_fake_kubectl(tmp_path, rules={"deployment/broken": "fail"})
    commands = [
        k("kubectl rollout restart deployment/a -n payments"),
        k("kubectl rollout restart deployment/broken -n payments"),  # not critical: carry on
        k("kubectl rollout restart deployment/b -n payments"),
        Command(type="kubectl", command="kubectl rollout restart deployment/broken -n payments", critical=True),
        k("kubectl rollout restart deployment/never -n payments"),
    ]
    results = await run_commands(commands, kube_policy(fake), dry_run=False)
    assert [r.status for r in results] == ["success", "failed", "success", "failed"]
    assert [c[2] for c in fake.calls()] == ["deployment/a", "deployment/broken", "deployment/b", "deployment/broken"]


async def test_refused_critical_command_stops_the_run(tmp_path):
    fake = write_fake_kubectl(tmp_path)
    commands = [k("kubectl get secrets -n payments", critical=True), k(RESTART)]
    results = await run_commands(commands, kube_policy(fake), dry_run=False)
    assert len(results) == 1 and results[0].refused
    assert "verb 'get' is not in the verb allowlist" in results[0].reason
    assert fake.calls() == []


async def test_dry_run_evaluates_but_runs_nothing(tmp_path):
    fake = write_fake_kubectl(tmp_path)
    commands = [k(RESTART), k("kubectl rollout restart deployment/api -n kube-system")]
    results = await run_commands(commands, kube_policy(fake), dry_run=True)
    assert [(r.status, r.dry_run, r.refused) for r in results] == [("success", True, False), ("failed", True, True)]
    assert f"dry-run: would run {fake.path} rollout restart" in results[0].output
    assert fake.calls() == []


async def test_missing_kubectl_binary_is_a_failure_not_a_crash(tmp_path):
    policy = ExecutionPolicy(kubectl_path=str(tmp_path / "no-such-kubectl"), kubectl_namespaces=("payments",))
    [result] = await run_commands([k(RESTART)], policy, dry_run=False)
    assert result.status == "failed" and result.exit_code is None
    assert "cannot start" in result.output


async def test_cancelled_run_kills_the_process(tmp_path):
    import asyncio

    fake = write_fake_kubectl(tmp_path, default="hang")
    task = asyncio.create_task(run_commands([k(RESTART)], kube_policy(fake), dry_run=False))
    [entry] = await wait_for(fake.entries, timeout=10, what="fake kubectl started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: _gone(entry["pid"]) and _gone(entry["child_pid"]), timeout=5, what="killed")


# --- shell --------------------------------------------------------------------------------


async def test_shell_is_off_by_default(tmp_path):
    marker = tmp_path / "touched"
    [result] = await run_commands(
        [{"type": "shell", "command": f"touch {marker}"}], ExecutionPolicy(shell_allowlist=("touch",)), dry_run=False
    )
    assert result.refused and "disabled" in result.reason
    assert not marker.exists()


async def test_enabled_shell_runs_an_allowlisted_binary(tmp_path):
    marker = tmp_path / "touched"
    policy = ExecutionPolicy(shell_enabled=True, shell_allowlist=("touch",))
    [result] = await run_commands([{"type": "shell", "command": f"touch {marker}"}], policy, dry_run=False)
    assert result.status == "success", result.output
    assert marker.exists()


# --- elasticsearch ------------------------------------------------------------------------


@pytest.fixture
async def es():
    async with EsStub() as stub:
        yield stub


@pytest.fixture
async def es_client(es):
    async with AsyncElasticsearch(es.url) as client:
        yield client


async def test_elasticsearch_actions_make_the_exact_api_calls(es, es_client):
    commands = [
        {"type": "elasticsearch", "command": "clear_read_only_block index=logs-2024.05.01"},
        {"type": "elasticsearch", "command": "cluster_reroute_retry_failed"},
        {"type": "elasticsearch", "command": "ilm_retry", "index": "logs-app-000042"},
    ]
    results = await run_commands(commands, ES_POLICY, dry_run=False, elasticsearch=es_client)

    assert [r.status for r in results] == ["success"] * 3, [r.output for r in results]
    assert [r.exit_code for r in results] == [200] * 3
    assert es.calls() == [
        ("PUT", "/logs-2024.05.01/_settings"),
        ("POST", "/_cluster/reroute"),
        ("POST", "/logs-app-000042/_ilm/retry"),
    ]
    put, reroute, retry = es.requests
    assert put.body == {"index.blocks.read_only_allow_delete": None}
    assert reroute.query == {"retry_failed": "true", "metric": "none"}
    assert retry.body is None
    assert '"acknowledged":true' in results[0].output


async def test_elasticsearch_error_is_failed_with_the_status(es, es_client):
    es.script(error_reply(404, "index_not_found_exception", "no such index [logs-x] token=abc123secret"))
    cmd = {"type": "elasticsearch", "command": "ilm_retry index=logs-x", "critical": True}
    results = await run_commands([cmd, cmd], ES_POLICY, dry_run=False, elasticsearch=es_client)
    assert len(results) == 1
    assert results[0].status == "failed" and results[0].exit_code == 404
    assert "index_not_found_exception" in results[0].output
    assert "abc123secret" not in results[0].output


async def test_unacknowledged_elasticsearch_call_is_failed(es, es_client):
    es.script(Reply(body={"acknowledged": False}))
    cmd = {"type": "elasticsearch", "command": "clear_read_only_block index=logs-1"}
    [result] = await run_commands([cmd], ES_POLICY, dry_run=False, elasticsearch=es_client)
    assert result.status == "failed"
    assert es.calls() == [("PUT", "/logs-1/_settings")]


async def test_slow_elasticsearch_is_a_timeout(es, es_client):
    es.script(Reply(delay_s=5))
    cmd = {"type": "elasticsearch", "command": "cluster_reroute_retry_failed", "timeout_s": 0.5}
    started = time.monotonic()
    [result] = await run_commands([cmd], ES_POLICY, dry_run=False, elasticsearch=es_client)
    assert result.status == "timeout", result.output
    assert time.monotonic() - started < 4


async def test_unconfigured_elasticsearch_fails_without_a_call():
    cmd = {"type": "elasticsearch", "command": "cluster_reroute_retry_failed"}
    [result] = await run_commands([cmd], ES_POLICY, dry_run=False, elasticsearch=None)
    assert result.status == "failed" and "not configured" in result.output
    assert make_client(make_settings(elasticsearch_url=None)) is None
    # a URL set for the monitor alone gives the executors no client
    assert make_client(make_settings(elasticsearch_url="http://es:9200")) is None


async def test_client_from_settings_sends_the_api_key(es):
    settings = make_settings(elasticsearch_url=es.url, elasticsearch_api_key="a2V5OnNlY3JldA==",
                             elasticsearch_actions="ilm_retry")
    async with make_client(settings) as client:
        cmd = {"type": "elasticsearch", "command": "ilm_retry index=logs-1"}
        [result] = await run_commands([cmd], ES_POLICY, dry_run=False, elasticsearch=client)
    assert result.status == "success"
    assert es.requests[0].headers["Authorization"] == "ApiKey a2V5OnNlY3JldA=="


async def test_client_from_settings_uses_basic_auth(es):
    settings = make_settings(
        elasticsearch_url=es.url, elasticsearch_username="elastic", elasticsearch_password="changeme",
        elasticsearch_actions="cluster_reroute_retry_failed",
    )
    async with make_client(settings) as client:
        cmd = {"type": "elasticsearch", "command": "cluster_reroute_retry_failed"}
        [result] = await run_commands([cmd], ES_POLICY, dry_run=False, elasticsearch=client)
    assert result.status == "success"
    assert es.requests[0].headers["Authorization"] == "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="


# --- http ---------------------------------------------------------------------------------


async def test_http_posts_json_to_an_allowlisted_url(es):
    es.route("POST", r"/hooks/elk(/.*)?", lambda req, m: Reply(body={"ok": True, "api_key": "sk-live-123"}))
    policy = ExecutionPolicy(http_allowlist=(f"{es.url}/hooks/elk",))
    cmd = {"type": "http", "command": f"POST {es.url}/hooks/elk/restart", "body": {"service": "logstash"}}
    [result] = await run_commands([cmd], policy, dry_run=False)
    assert result.status == "success" and result.exit_code == 200
    assert es.calls() == [("POST", "/hooks/elk/restart")]
    assert es.requests[0].body == {"service": "logstash"}
    assert "sk-live-123" not in result.output


async def test_http_non_2xx_is_failed_and_redirects_are_not_followed(es):
    es.script(Reply(status=302, headers={"Location": f"{es.url}/elsewhere"}, body={}))
    policy = ExecutionPolicy(http_allowlist=(f"{es.url}/hooks/",))
    cmd = {"type": "http", "command": "notify", "method": "PUT", "url": f"{es.url}/hooks/x"}
    [result] = await run_commands([cmd], policy, dry_run=False)
    assert result.status == "failed" and result.exit_code == 302
    assert es.calls() == [("PUT", "/hooks/x")]


async def test_http_timeout(es):
    es.script(Reply(delay_s=5))
    policy = ExecutionPolicy(http_allowlist=(f"{es.url}/hooks/",), default_timeout_s=0.5)
    cmd = {"type": "http", "command": f"GET {es.url}/hooks/slow"}
    [result] = await run_commands([cmd], policy, dry_run=False)
    assert result.status == "timeout"


async def test_http_outside_allowlist_is_never_sent(es):
    policy = ExecutionPolicy(http_allowlist=(f"{es.url}/hooks/",))
    cmd = {"type": "http", "command": f"POST {es.url.replace('http://', 'http://x@')}/hooks/x"}
    [result] = await run_commands([cmd], policy, dry_run=False)
    assert result.refused
    assert es.requests == []


async def test_http_with_a_shared_client(es):
    policy = ExecutionPolicy(http_allowlist=(f"{es.url}/hooks/",))
    es.route("GET", r"/hooks/.*", lambda req, m: Reply(body={"fine": 1}))
    async with httpx.AsyncClient() as client:
        results = await run_commands(
            [{"type": "http", "command": f"GET {es.url}/hooks/{n}"} for n in range(3)],
            policy,
            dry_run=False,
            http_client=client,
        )
    assert [r.status for r in results] == ["success"] * 3
    assert es.calls() == [("GET", "/hooks/0"), ("GET", "/hooks/1"), ("GET", "/hooks/2")]
