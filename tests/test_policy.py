"""The execution policy refuses everything a remediation does not need, with a reason."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from elk_resolver.actions.policy import ES_ACTIONS, Command, ExecutionPolicy, evaluate, safe_flag, url_allowed
from elk_resolver.settings import make_settings

POLICY = ExecutionPolicy(
    kubectl_path="/opt/bin/kubectl",
    kubectl_namespaces=("payments", "elk-stack"),
    http_allowlist=("https://hooks.example.com/elk/", "http://127.0.0.1:9000/notify"),
    elasticsearch_actions=tuple(ES_ACTIONS),
)


def kubectl(line: str, policy: ExecutionPolicy = POLICY):
    return evaluate({"type": "kubectl", "command": line}, policy)


# --- kubectl: what is allowed ----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "kubectl rollout restart deployment/api -n payments",
        "kubectl -n payments rollout restart deployment/api",
        "kubectl rollout undo deployment/api --namespace payments",
        "kubectl rollout undo deployment/api -n payments --to-revision=0",
        "kubectl scale deployment/api --replicas=3 --namespace=elk-stack",
        "kubectl delete pod api-5f7c9 -n payments",
        "kubectl delete pods/api-5f7c9 -n payments --grace-period=30",
        "kubectl rollout restart statefulset/es-data -n elk-stack",
        "kubectl rollout restart deploy api -n payments",
        "kubectl rollout restart deployment.apps/api -n payments",
        "kubectl scale statefulset es-data --replicas 4 -n elk-stack",
    ],
)
def test_allowlisted_kubectl_commands_are_allowed(line):
    verdict = kubectl(line)
    assert verdict.allowed, verdict.reason
    assert verdict.argv[0] == "/opt/bin/kubectl"
    assert verdict.argv[1:] == line.split()[1:]


def test_argv_gets_kubeconfig_and_context_from_the_policy_only():
    policy = ExecutionPolicy(
        kubectl_namespaces=("payments",), kubectl_kubeconfig="/etc/kube/config", kubectl_context="prod"
    )
    verdict = kubectl("kubectl rollout restart deployment/api -n payments", policy)
    assert verdict.argv == [
        "kubectl", "rollout", "restart", "deployment/api", "-n", "payments",
        "--kubeconfig", "/etc/kube/config", "--context", "prod",
    ]  # fmt: skip


# --- kubectl: injection -------------------------------------------------------------------

INJECTIONS = [
    "; rm -rf /",
    "$(curl evil)",
    "`curl evil`",
    "\nrm -rf /",
    "&& rm -rf /",
    "| sh",
    "> /etc/passwd",
    "< /etc/shadow",
    "& disown",
    "\r\nrm -rf /",
    "\x00rm",
    "${IFS}rm",
]


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize(
    "template",
    [
        "kubectl rollout restart deployment/api -n payments {p}",
        "kubectl {p} rollout restart deployment/api -n payments",
        "kubectl rollout restart deployment/api{p} -n payments",
        "kubectl rollout restart deployment/api -n payments{p}",
        # Quoted, the payload would only ever be one literal argv element (no shell runs it);
        # it is refused anyway: a remediation never needs shell syntax.
        "kubectl rollout restart 'deployment/api {p}' -n payments",
        'kubectl rollout restart "deployment/api{p}" -n payments',
    ],
)
def test_injection_attempts_are_refused_in_any_position(template, payload):
    verdict = kubectl(template.format(p=payload))
    assert not verdict.allowed
    assert verdict.argv is None
    assert "metacharacter" in verdict.reason or "control character" in verdict.reason


def test_unbalanced_quotes_are_refused():
    verdict = kubectl("kubectl rollout restart 'deployment/api -n payments")
    assert not verdict.allowed
    assert "tokenise" in verdict.reason


# --- kubectl: verbs, namespaces, identity --------------------------------------------------


@pytest.mark.parametrize(
    "line, verb",
    [
        ("kubectl exec api-5f7c9 -n payments -- sh", "exec"),
        ("kubectl apply -f evil.yaml -n payments", "apply"),
        ("kubectl rollout pause deployment/api -n payments", "rollout pause"),
        ("kubectl get secrets -n payments", "get"),
        ("kubectl rollout history deployment/api -n payments", "rollout history"),
        ("kubectl patch deployment api -n payments", "patch"),
    ],
)
def test_verb_outside_allowlist_is_refused_with_a_clear_reason(line, verb):
    verdict = kubectl(line)
    assert not verdict.allowed
    assert f"verb {verb!r} is not in the verb allowlist" in verdict.reason


def test_narrower_verb_allowlist_is_honoured():
    policy = ExecutionPolicy(kubectl_namespaces=("payments",), kubectl_verbs=("rollout restart",))
    assert kubectl("kubectl rollout restart deployment/api -n payments", policy).allowed
    assert not kubectl("kubectl scale deployment/api --replicas=0 -n payments", policy).allowed
    assert not kubectl("kubectl delete pod api-1 -n payments", policy).allowed


@pytest.mark.parametrize(
    "line",
    [
        "kubectl delete deployment/api -n payments",
        "kubectl delete namespace payments -n payments",
        "kubectl delete pod/api-1 deployment/api -n payments",
        "kubectl delete pod api-1 deployment/api -n payments",
        "kubectl delete pod --all -n payments",
        "kubectl delete -n payments",
    ],
)
def test_delete_is_for_pods_only(line):
    assert not kubectl(line).allowed


# --- kubectl: exactly one named object (issue 10) ---------------------------------------------


@pytest.mark.parametrize(
    "line, reason",
    [
        # selectors, in every spelling kubectl's flag parser accepts
        ("kubectl delete pods -l app=api -n payments", "flag -l widens"),
        ("kubectl delete pod -lapp=api -n payments", "flag -l widens"),
        ("kubectl delete pod -l=app=api -n payments", "flag -l widens"),
        ("kubectl delete pod --selector app=api -n payments", "flag --selector widens"),
        ("kubectl delete pod --selector=app=api -n payments", "flag --selector widens"),
        ("kubectl delete pod --field-selector=status.phase=Failed -n payments", "flag --field-selector widens"),
        ("kubectl rollout restart deployment -l tier=web -n payments", "flag -l widens"),
        ("kubectl delete pods --all -n payments", "flag --all widens"),
        ("kubectl delete pods --all=true -n payments", "flag --all widens"),
        ("kubectl rollout restart deployment/api -A", "flag -A widens"),
        ("kubectl rollout restart deployment/api -n payments --all-namespaces", "flag --all-namespaces widens"),
        ("kubectl rollout restart deployment/api -n payments -Af", "flag -A widens"),
        ("kubectl delete -f pods.yaml -n payments", "flag -f widens"),
        ("kubectl delete --filename=pods.yaml -n payments", "flag --filename widens"),
        ("kubectl delete -k overlays/prod -n payments", "flag -k widens"),
        ("kubectl delete pod api-1 -n payments --force --grace-period=0", "flag --force widens"),
        ("kubectl delete pod api-1 -n payments --raw=/api", "flag --raw widens"),
        ("kubectl rollout restart deployment/api -n payments -R", "flag -R widens"),
        # a missing name: every object of the kind in the namespace
        ("kubectl rollout restart deployment -n payments", "names no object"),
        ("kubectl rollout restart -n payments", "names no object"),
        ("kubectl delete pods -n payments", "names no object"),
        ("kubectl scale deployment --replicas=3 -n payments", "names no object"),
        # several objects
        ("kubectl rollout restart deployment a b -n payments", "more than one object"),
        ("kubectl rollout restart deploy/a deploy/b -n payments", "more than one object"),
        ("kubectl rollout restart deployment/a,deployment/b -n payments", "comma list"),
        ("kubectl rollout restart deployment a,b -n payments", "comma list"),
        ("kubectl delete pod api-1 api-2 -n payments", "more than one object"),
        ("kubectl delete pods/api-1 pod/api-2 -n payments", "more than one object"),
        # kinds per verb
        ("kubectl scale replicaset/api-7d9f --replicas=2 -n payments", "not 'replicaset'"),
        ("kubectl scale job/backup --replicas=2 -n payments", "not 'job'"),
        ("kubectl scale hpa/api --replicas=2 -n payments", "not 'hpa'"),
        ("kubectl rollout restart pod/api-1 -n payments", "not 'pod'"),
        ("kubectl rollout restart deployment.batch/api -n payments", "not 'deployment.batch'"),
        ("kubectl delete deployment api -n payments", "not 'deployment'"),
        ("kubectl delete node/worker-1 -n payments", "not 'node'"),
        # names
        ("kubectl rollout restart deployment/API -n payments", "not a valid Kubernetes object name"),
        ("kubectl rollout restart deployment/api/x -n payments", "not KIND/NAME"),
        ("kubectl rollout restart deployment/ -n payments", "not KIND/NAME"),
        # scale: --replicas required, an integer, never 0, under the ceiling
        ("kubectl scale deployment/api -n payments", "needs --replicas"),
        ("kubectl scale deployment/api --replicas=0 -n payments", "scaling to 0"),
        ("kubectl scale deployment/api --replicas=-1 -n payments", "non-negative integer"),
        ("kubectl scale deployment/api --replicas=x -n payments", "non-negative integer"),
        ("kubectl scale deployment/api --replicas=500 -n payments", "above the ceiling"),
        ("kubectl scale deployment/api --replicas=3 --replicas=4 -n payments", "more than once"),
        # flags of another verb, flags nobody needs
        ("kubectl rollout restart deployment/api --replicas=3 -n payments", "not allowed"),
        ("kubectl rollout restart deployment/api -n payments --to-revision=2", "not allowed"),
        ("kubectl rollout restart deployment/api -n payments -o yaml", "not allowed"),
        ("kubectl rollout restart deployment/api -n payments -- extra", "'--'"),
    ],
)
def test_commands_that_could_act_on_more_than_one_named_object_are_refused(line, reason):
    verdict = kubectl(line)
    assert not verdict.allowed and verdict.argv is None
    assert reason in verdict.reason, verdict.reason


def test_an_allowed_command_names_its_one_object():
    verdict = kubectl("kubectl rollout restart deploy api -n payments")
    assert verdict.action == {"verb": "rollout restart", "kind": "deployment", "name": "api", "namespace": "payments"}
    scale = kubectl("kubectl scale deployment/api --replicas=3 -n payments")
    assert scale.action == {"verb": "scale", "kind": "deployment", "name": "api", "namespace": "payments", "replicas": 3}


def test_kinds_and_scale_bounds_come_from_settings():
    settings = make_settings(
        kubectl_namespaces="payments",
        kubectl_kinds={"rollout restart": ["deployment"], "scale": ["deployment", "replicaset"]},
        kubectl_scale_max_replicas=5,
        kubectl_scale_allow_zero=True,
    )
    policy = ExecutionPolicy.from_settings(settings)
    assert not kubectl("kubectl rollout restart statefulset/db -n payments", policy).allowed
    assert kubectl("kubectl scale rs/api-7d9f --replicas=0 -n payments", policy).allowed
    assert "ceiling" in kubectl("kubectl scale deployment/api --replicas=6 -n payments", policy).reason
    # a verb with no kinds acts on nothing
    assert "no kind" in kubectl("kubectl delete pod api-1 -n payments", policy).reason


def test_namespace_not_allowlisted_is_refused():
    verdict = kubectl("kubectl rollout restart deployment/api -n kube-system")
    assert not verdict.allowed
    assert "'kube-system' is not in the namespace allowlist" in verdict.reason


def test_missing_namespace_is_refused():
    verdict = kubectl("kubectl rollout restart deployment/api")
    assert not verdict.allowed
    assert "namespace" in verdict.reason


def test_empty_namespace_allowlist_refuses_everything():
    policy = ExecutionPolicy()
    for ns in ("default", "payments", "kube-system"):
        verdict = kubectl(f"kubectl rollout restart deployment/api -n {ns}", policy)
        assert not verdict.allowed
        assert "no namespaces are allowlisted" in verdict.reason


def test_namespace_given_twice_is_refused():
    assert not kubectl("kubectl rollout restart deployment/api -n payments -n kube-system").allowed
    assert not kubectl("kubectl rollout restart deployment/api -n payments --namespace=payments").allowed


@pytest.mark.parametrize(
    "flag",
    [
        "--kubeconfig /tmp/evil",
        "--kubeconfig=/tmp/evil",
        "--context prod-admin",
        "--server https://evil.example.com",
        "--server=https://evil.example.com",
        "-s https://evil.example.com",
        "--token abc",
        "--as system:admin",
        "--as-group system:masters",
        "--user admin",
        "--cluster other",
        "--insecure-skip-tls-verify",
        "--context=prod-admin",
    ],
)
def test_identity_and_target_flags_are_refused(flag):
    verdict = kubectl(f"kubectl rollout restart deployment/api -n payments {flag}")
    assert not verdict.allowed
    assert "never allowed" in verdict.reason


@pytest.mark.parametrize("flag", ["-f x.yaml", "--filename=x", "-nkube-system", "--", "--force", "-o yaml", "--v=9"])
def test_unknown_flags_are_refused(flag):
    assert not kubectl(f"kubectl rollout restart deployment/api -n payments {flag}").allowed


@pytest.mark.parametrize("first", ["/usr/bin/kubectl", "sh -c kubectl", "oc", "kubectl.exe"])
def test_command_must_start_with_kubectl(first):
    assert not kubectl(f"{first} rollout restart deployment/api -n payments").allowed


# --- http ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/elk/",
        "https://hooks.example.com/elk/restart",
        "https://HOOKS.example.com:443/elk/x?y=1",
        "http://127.0.0.1:9000/notify",
        "http://127.0.0.1:9000/notify/sub",
    ],
)
def test_allowlisted_urls_pass(url):
    verdict = evaluate({"type": "http", "command": f"POST {url}", "body": {"a": 1}}, POLICY)
    assert verdict.allowed, verdict.reason
    assert verdict.action == {"method": "POST", "url": url, "body": {"a": 1}}


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com@evil.com/elk/",
        "https://hooks.example.com:443@evil.com/elk/",
        "https://user:pw@hooks.example.com/elk/",
        "https://evil.com/https://hooks.example.com/elk/",
        "https://hooks.example.com.evil.com/elk/",
        "http://hooks.example.com/elk/",  # scheme downgrade
        "https://hooks.example.com:8443/elk/",  # other port
        "https://hooks.example.com/elkx",
        "https://hooks.example.com/elk/../admin",
        "https://hooks.example.com/elk/%2e%2e/admin",
        "https://hooks.example.com/other",
        "http://127.0.0.1:9000/notifyevil",
        "http://127.0.0.1:9001/notify",
        "https://hooks.example.com\\@evil.com/elk/",
        "https://hooks.example.com/elk/\nHost: evil",
        "file:///etc/passwd",
        "gopher://hooks.example.com/elk/",
        # issue 21: what a review got through
        "https://hooks.example.com/elk/..;/admin",  # Tomcat/Spring drop ;params: /admin
        "https://hooks.example.com/elk/%252e%252e/admin",  # decoded twice: ..
        "https://hooks.example.com/elk//evil.com/x",  # empty segment
        "https://hooks.example.com/elk/%2e%2e;x/admin",
        "https://hooks.example.com/elk/%25252e%25252e/admin",
        "https://hooks.example.com/elk/%2f%2fevil.com/x",
        "https://hooks.example.com/elk/a%255c..%255cadmin",
        "https://hooks.example.com/elk/x;jsessionid=1",
        "https://hooks.example.com/elk/%2525252525252e",  # still encoded after every decoding
    ],
)
def test_http_allowlist_bypass_attempts_are_refused(url):
    assert not url_allowed(url, POLICY.http_allowlist)
    assert not evaluate({"type": "http", "command": "notify", "method": "POST", "url": url}, POLICY).allowed


@pytest.mark.parametrize("method", ["DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"])
def test_http_methods_outside_allowlist_are_refused(method):
    cmd = {"type": "http", "command": "x", "method": method, "url": "https://hooks.example.com/elk/"}
    assert not evaluate(cmd, POLICY).allowed


def test_http_with_empty_allowlist_is_refused():
    cmd = {"type": "http", "command": "GET https://hooks.example.com/elk/"}
    verdict = evaluate(cmd, ExecutionPolicy())
    assert not verdict.allowed
    assert "http_allowlist is empty" in verdict.reason


def test_http_command_line_and_fields_must_agree():
    cmd = {"type": "http", "command": "POST https://hooks.example.com/elk/", "url": "https://evil.com/"}
    assert not evaluate(cmd, POLICY).allowed


# --- shell --------------------------------------------------------------------------------


def test_shell_is_disabled_by_default():
    assert ExecutionPolicy().shell_enabled is False
    assert make_settings().shell_enabled is False
    verdict = evaluate({"type": "shell", "command": "echo hi"}, ExecutionPolicy(shell_allowlist=("echo",)))
    assert not verdict.allowed
    assert "disabled" in verdict.reason


def test_enabled_shell_runs_only_allowlisted_programs_without_metacharacters():
    policy = ExecutionPolicy(shell_enabled=True, shell_allowlist=("echo", "/usr/bin/systemctl"))
    ok = evaluate({"type": "shell", "command": "echo 'hello world'"}, policy)
    assert ok.allowed and ok.argv == ["echo", "hello world"]
    full = evaluate({"type": "shell", "command": "systemctl restart logstash"}, policy)
    assert full.argv == ["/usr/bin/systemctl", "restart", "logstash"]
    assert evaluate({"type": "shell", "command": "/usr/bin/systemctl status"}, policy).allowed
    for line in [
        "rm -rf /",
        "/tmp/evil/echo hi",  # basename matches, path does not
        "echo hi; rm -rf /",
        "echo $(id)",
        "echo hi | sh",
        "echo hi > /etc/passwd",
        "echo `id`",
        "echo hi\nrm -rf /",
    ]:
        assert not evaluate({"type": "shell", "command": line}, policy).allowed, line


# --- elasticsearch ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd, action",
    [
        ({"command": "clear_read_only_block index=logs-2024.05.01"}, {"action": "clear_read_only_block", "index": "logs-2024.05.01"}),
        ({"command": "clear_read_only_block", "index": "app"}, {"action": "clear_read_only_block", "index": "app"}),
        ({"command": "cluster_reroute_retry_failed"}, {"action": "cluster_reroute_retry_failed", "index": None}),
        ({"command": "ilm_retry index=logs-app-000042"}, {"action": "ilm_retry", "index": "logs-app-000042"}),
    ],
)  # fmt: skip
def test_allowlisted_elasticsearch_actions_pass(cmd, action):
    verdict = evaluate({"type": "elasticsearch", **cmd}, POLICY)
    assert verdict.allowed, verdict.reason
    assert verdict.action == action


@pytest.mark.parametrize(
    "command",
    [
        "PUT /my-index/_settings",
        "delete_index index=logs",
        "clear_read_only_block",
        "clear_read_only_block index=*",
        "clear_read_only_block index=_all",
        "clear_read_only_block index=a,b",
        "clear_read_only_block index=../_cluster/settings",
        "clear_read_only_block index=a/b",
        "clear_read_only_block index=Logs",
        "ilm_retry index=logs-*",
        "ilm_retry index=_all",
        "ilm_retry index=logs body={}",
        "cluster_reroute_retry_failed index=logs",
        "ilm_retry index=logs;rm",
    ],
)
def test_elasticsearch_outside_allowlist_is_refused(command):
    assert not evaluate({"type": "elasticsearch", "command": command}, POLICY).allowed


@pytest.mark.parametrize(
    "index, reason",
    [
        (".security-7", "system or hidden index"),
        (".kibana_1", "system or hidden index"),
        (".ds-logs-app-000042", "system or hidden index"),
        ("logs-*", "wildcards"),
        ("logs-2024.05.0?", "wildcards"),
        ("*", "wildcards"),
        ("_all", "not a concrete index"),
        ("logs-a,logs-b", "no commas"),
        ("remote:logs", "remote cluster"),
        ("<logs-{now/d}>", "not a valid index name"),
        ("-logs", "not a valid index name"),
        ("Logs", "not a valid index name"),
        ("a" * 256, "longer than 255 bytes"),
    ],
)
def test_elasticsearch_actions_take_one_concrete_visible_index(index, reason):
    for action in ("clear_read_only_block", "ilm_retry"):
        verdict = evaluate({"type": "elasticsearch", "command": action, "index": index}, POLICY)
        assert not verdict.allowed and reason in verdict.reason, verdict.reason


def test_elasticsearch_actions_are_opt_in_and_a_url_alone_enables_none():
    cmd = {"type": "elasticsearch", "command": "clear_read_only_block index=logs-2024.05.01"}
    verdict = evaluate(cmd, ExecutionPolicy())
    assert not verdict.allowed and "disabled" in verdict.reason
    monitor_only = ExecutionPolicy.from_settings(make_settings(elasticsearch_url="http://es:9200"))
    assert monitor_only.elasticsearch_actions == ()
    assert not evaluate(cmd, monitor_only).allowed
    opted = ExecutionPolicy.from_settings(
        make_settings(elasticsearch_url="http://es:9200", elasticsearch_actions="clear_read_only_block")
    )
    assert evaluate(cmd, opted).allowed
    assert not evaluate({"type": "elasticsearch", "command": "ilm_retry index=a"}, opted).allowed
    with pytest.raises(ValueError, match="unknown action"):
        make_settings(elasticsearch_actions="delete_index")


@pytest.mark.parametrize(
    "kinds, message",
    [({"exec": ["pod"]}, "unknown kubectl verb"), ({"scale": ["deployment", "job"]}, "unknown kind")],
)
def test_kind_allowlist_names_known_verbs_and_kinds(kinds, message):
    with pytest.raises(ValueError, match=message):
        make_settings(kubectl_kinds=kinds)


def test_elasticsearch_index_field_and_command_line_must_agree():
    cmd = {"type": "elasticsearch", "command": "ilm_retry index=a", "index": "b"}
    assert not evaluate(cmd, POLICY).allowed


# --- safe flag and malformed input --------------------------------------------------------


def test_safe_flag_needs_both_the_policy_and_the_source():
    allowed_line = "kubectl rollout restart deployment/api -n payments"
    assert safe_flag({"type": "kubectl", "command": allowed_line, "safe": True}, POLICY)
    assert not safe_flag({"type": "kubectl", "command": allowed_line, "safe": False}, POLICY)
    assert not safe_flag({"type": "kubectl", "command": allowed_line}, POLICY)
    # outside the policy: stored safe=false whatever the source claimed
    outside = "kubectl rollout restart deployment/api -n kube-system"
    assert not safe_flag({"type": "kubectl", "command": outside, "safe": True}, POLICY)
    assert not safe_flag(Command(type="kubectl", command=outside + "; rm -rf /", safe=True), POLICY)


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "powershell", "command": "x"},
        {"type": "kubectl"},
        {"command": "kubectl get pods"},
        {"type": "kubectl", "command": "kubectl rollout restart deployment/api -n payments", "timeout_s": -1},
    ],
)
def test_malformed_commands_are_refused_not_raised(raw):
    verdict = evaluate(raw, POLICY)
    assert not verdict.allowed
    assert verdict.reason.startswith("invalid command")
    assert not safe_flag({**raw, "safe": True}, POLICY)


def test_a_command_may_shorten_but_not_extend_the_timeout():
    line = "kubectl rollout restart deployment/api -n payments"
    assert kubectl(line).timeout_s == 60.0
    short = evaluate({"type": "kubectl", "command": line, "timeout_s": 5}, POLICY)
    long = evaluate({"type": "kubectl", "command": line, "timeout_s": 5000}, POLICY)
    assert (short.timeout_s, long.timeout_s) == (5.0, 60.0)


def test_policy_from_settings():
    settings = make_settings(
        kubectl_namespaces="payments, elk-stack",
        http_allowlist="https://hooks.example.com/elk/",
        kubectl_context="prod",
        command_timeout_s=12,
    )
    policy = ExecutionPolicy.from_settings(settings)
    assert policy.kubectl_namespaces == ("payments", "elk-stack")
    assert policy.http_allowlist == ("https://hooks.example.com/elk/",)
    assert policy.kubectl_context == "prod"
    assert policy.default_timeout_s == 12
    assert policy.shell_enabled is False


# --- the path as every server on the way reads it (issue 21) ------------------------------


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, written out independently of the policy."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    result = "/" + "/".join(out)
    return result + "/" if path.endswith(("/.", "/..")) and not result.endswith("/") else result


def _server_readings(path: str):
    """How servers read a path: decoded 0-5 times, with ;params dropped (Tomcat) or kept,
    with empty segments kept, collapsed (nginx merge_slashes) or read as //host."""
    from urllib.parse import unquote

    for decodes in range(6):
        p = path
        for _ in range(decodes):
            p = unquote(p)
        for variant in (p, "/".join(seg.split(";", 1)[0] for seg in p.split("/"))):
            variant = variant.replace("\\", "/")
            yield _remove_dot_segments(variant)
            collapsed = re.sub("/+", "/", variant)
            yield _remove_dot_segments(collapsed)
            if variant.startswith("//") or "//" in variant:
                yield "//"  # a network-path reference: another host


_PIECES = ["a", "b", ".", "..", "%2e", "%2E", "%252e", "%25252e", ";", "%3b", "%253b", "/", "%2f",
           "%252f", "\\", "%5c", "%255c", "x;y", "admin", "%"]


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=8))
def test_an_allowed_url_stays_under_its_prefix_however_a_server_reads_it(pieces):
    url = "https://hooks.example.com/elk/" + "".join(pieces)
    if not url_allowed(url, ("https://hooks.example.com/elk/",)):
        return
    path = "/elk/" + "".join(pieces)
    for reading in _server_readings(path):
        assert reading.startswith("/elk/") or reading == "/elk", (url, reading)


def test_a_prefix_escape_found_by_the_property_stays_refused():
    # what the property found when the policy decoded only once
    assert not url_allowed("https://hooks.example.com/elk/%252e%252e", ("https://hooks.example.com/elk/",))


@pytest.mark.parametrize("line", [
    "kubectl rollout undo deployment/api -n payments --to-revision=1",
    "kubectl rollout undo deployment/api -n payments --to-revision 3",
    "kubectl rollout undo statefulset/db -n payments --to-revision=00",
])
def test_rollout_undo_goes_back_one_revision_unless_a_setting_allows_more(line):
    verdict = kubectl(line)
    assert not verdict.allowed and "previous revision" in verdict.reason
    allowing = ExecutionPolicy.from_settings(make_settings(kubectl_namespaces="payments", kubectl_undo_to_revision=True))
    assert kubectl(line, allowing).allowed, kubectl(line, allowing).reason
