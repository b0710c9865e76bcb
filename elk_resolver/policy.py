"""The execution policy: the one place that decides whether a remediation command may run.

Commands come from playbooks and from an LLM, so they are untrusted input. Nothing here ever
hands a string to a shell: a command is either tokenised into an argv (``kubectl``, ``shell``)
or mapped onto a structured request (``http``, ``elasticsearch``). Anything that does not fit
the policy is refused with a reason a human can act on.

The analysis stage stores ``safe`` with :func:`safe_flag`: a command outside the policy is
stored ``safe=false`` whatever its source claimed. The executors call :func:`evaluate` again
right before running (defence in depth), so a row edited after analysis still cannot escape.

Supported command forms (the ``solution_commands`` JSON of the design document)::

    {"type": "kubectl", "command": "kubectl rollout restart deployment/api -n payments"}
    {"type": "elasticsearch", "command": "clear_read_only_block index=logs-2024.05.01"}
    {"type": "elasticsearch", "command": "ilm_retry", "index": ".ds-logs-app-000042"}
    {"type": "elasticsearch", "command": "cluster_reroute_retry_failed"}
    {"type": "http", "command": "POST https://hooks.example.com/elk", "body": {"text": "..."}}
    {"type": "http", "command": "notify", "method": "POST", "url": "https://hooks.example.com/elk"}
    {"type": "shell", "command": "systemctl restart logstash"}   # only when shell is enabled
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

CommandType = Literal["kubectl", "elasticsearch", "http", "shell"]


class Command(BaseModel):
    """One entry of ``solution_commands``."""

    # Unknown keys from an LLM are dropped rather than fatal: none of them can change what runs.
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: CommandType = Field(description="which executor runs it")
    command: str = Field(
        description="kubectl/shell: the command line (tokenised, never run by a shell); "
        "elasticsearch: an action name with optional key=value arguments; "
        "http: 'METHOD URL' or a label when method/url are given as fields"
    )
    description: str = ""
    safe: bool = Field(False, description="the source's claim; see safe_flag()")
    critical: bool = Field(False, description="a failure stops the remaining commands")
    timeout_s: float | None = Field(None, gt=0, description="may shorten, never extend, the policy timeout")
    # http
    method: str | None = Field(None, description="http: GET, POST, PUT or PATCH")
    url: str | None = Field(None, description="http: must start with an allowlisted prefix")
    body: Any = Field(None, description="http: JSON body")
    # elasticsearch
    index: str | None = Field(None, description="elasticsearch: target index of the action")


@dataclass(frozen=True)
class Verdict:
    """What :func:`evaluate` decided. ``argv`` is set for process commands, ``action`` for the rest."""

    allowed: bool
    reason: str
    type: str | None = None
    argv: list[str] | None = None
    action: dict[str, Any] | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class ExecutionPolicy:
    kubectl_path: str = "kubectl"
    kubernetes_executor: str = "kubectl"  # or "api": the same verdicts, run through the Kubernetes API
    kubectl_kubeconfig: str | None = None
    kubectl_context: str | None = None
    kubectl_namespaces: tuple[str, ...] = ()
    kubectl_verbs: tuple[str, ...] = ("rollout restart", "rollout undo", "scale", "delete pod")
    http_allowlist: tuple[str, ...] = ()
    shell_enabled: bool = False
    shell_allowlist: tuple[str, ...] = ()
    elasticsearch_actions: tuple[str, ...] = field(default_factory=lambda: tuple(ES_ACTIONS))
    default_timeout_s: float = 60.0
    output_limit_bytes: int = 16_384

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutionPolicy:
        return cls(
            kubectl_path=settings.kubectl_path,
            kubernetes_executor=settings.kubernetes_executor,
            kubectl_kubeconfig=settings.kubectl_kubeconfig,
            kubectl_context=settings.kubectl_context,
            kubectl_namespaces=tuple(settings.kubectl_namespaces),
            kubectl_verbs=tuple(settings.kubectl_verbs),
            http_allowlist=tuple(settings.http_allowlist),
            shell_enabled=settings.shell_enabled,
            shell_allowlist=tuple(settings.shell_allowlist),
            default_timeout_s=settings.command_timeout_s,
            output_limit_bytes=settings.output_limit_bytes,
        )


# --- shared token checks -----------------------------------------------------------------

# No shell ever sees these strings, so they could only be literal argv elements; they are
# refused anyway because a legitimate remediation never needs them and their presence means
# the source tried (or was tricked into trying) shell syntax.
SHELL_METACHARACTERS = frozenset(";|&$`<>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bad_chars(text: str) -> str | None:
    if _CONTROL.search(text):
        return "control character (newline, CR, NUL, ...) in command"
    found = sorted({c for c in text if c in SHELL_METACHARACTERS})
    if found:
        return f"shell metacharacter {' '.join(found)!s} in command (commands never run in a shell)"
    return None


def _tokenise(text: str) -> tuple[list[str] | None, str | None]:
    problem = _bad_chars(text)
    if problem:
        return None, problem
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError as exc:
        return None, f"cannot tokenise command: {exc}"
    if not tokens:
        return None, "empty command"
    for token in tokens:
        # Quoting can smuggle nothing past the raw-string check, but check tokens too so the
        # guarantee does not depend on shlex's quoting rules.
        problem = _bad_chars(token)
        if problem:
            return None, problem
    return tokens, None


def _refuse(reason: str, type_: str | None = None) -> Verdict:
    return Verdict(allowed=False, reason=reason, type=type_)


def _timeout(cmd: Command, policy: ExecutionPolicy) -> float:
    if cmd.timeout_s is None:
        return policy.default_timeout_s
    return min(cmd.timeout_s, policy.default_timeout_s)


# --- kubectl -----------------------------------------------------------------------------

# Flags that change who kubectl is or which cluster it talks to. Named for a clear reason;
# the allowlist below refuses them (and every other unknown flag) anyway.
IDENTITY_FLAGS = frozenset(
    {
        "--kubeconfig", "--context", "--cluster", "--user", "--server", "-s", "--token",
        "--as", "--as-group", "--as-uid", "--username", "--password",
        "--certificate-authority", "--client-certificate", "--client-key",
        "--insecure-skip-tls-verify", "--tls-server-name", "--kuberc",
        "--all-namespaces", "-A",
    }
)  # fmt: skip

# Flags a remediation may use; True means the flag takes a value (``--f V`` or ``--f=V``).
KUBECTL_FLAGS: dict[str, bool] = {
    "-n": True,
    "--namespace": True,
    "--replicas": True,
    "--current-replicas": True,
    "--to-revision": True,
    "--grace-period": True,
    "--timeout": True,
    "-l": True,
    "--selector": True,
    "--wait": False,  # only as --wait=true/false
    "--dry-run": False,  # only as --dry-run=server/client/none
}
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_POSITIONAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")
_POD_KINDS = frozenset({"pod", "pods", "po"})


def _evaluate_kubectl(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    tokens, problem = _tokenise(cmd.command)
    if problem or not tokens:
        return _refuse(problem or "empty command", "kubectl")
    if tokens[0] != "kubectl":
        return _refuse(f"a kubectl command must start with 'kubectl', not {tokens[0]!r}", "kubectl")

    args = tokens[1:]
    positionals: list[str] = []
    namespaces: list[str] = []
    # Identity flags are reported first, then the verb (the most useful reason for a human),
    # then any other flag or argument problem.
    for token in args:
        name = token.partition("=")[0]
        if name in IDENTITY_FLAGS:
            return _refuse(f"flag {name} changes kubectl's identity or target and is never allowed", "kubectl")
    arg_problem: str | None = None
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            if not _POSITIONAL.match(token):
                arg_problem = arg_problem or f"argument {token!r} is not a plain resource name"
            positionals.append(token)
            continue
        name, has_inline, value = token.partition("=")
        if name not in KUBECTL_FLAGS:
            arg_problem = arg_problem or f"flag {name} is not in the kubectl flag allowlist"
            continue
        if not has_inline:
            if not KUBECTL_FLAGS[name]:
                arg_problem = arg_problem or f"flag {name} must be written {name}=VALUE"
                continue
            if i >= len(args):
                arg_problem = arg_problem or f"flag {name} needs a value"
                continue
            value = args[i]
            i += 1
        if name in ("-n", "--namespace"):
            namespaces.append(value)

    if not positionals:
        return _refuse("no kubectl verb given", "kubectl")

    if positionals[0] == "delete":
        resources = positionals[1:]
        if not resources:
            return _refuse("delete needs a pod resource", "kubectl")
        kind, _, _ = resources[0].partition("/")
        if resources[0] in _POD_KINDS:
            names = resources[1:]
            if any("/" in n for n in names):
                return _refuse("delete may only name pods", "kubectl")
        elif all(r.partition("/")[0] in _POD_KINDS and r.partition("/")[2] for r in resources):
            pass
        else:
            return _refuse(f"delete is allowed for pods only, not {kind!r}", "kubectl")
        verb = "delete pod"
        allowed_verb = verb in policy.kubectl_verbs or "delete" in policy.kubectl_verbs
    else:
        verb = " ".join(positionals[:2]) if positionals[0] == "rollout" else positionals[0]
        allowed_verb = any(
            positionals[: len(entry.split())] == entry.split() for entry in policy.kubectl_verbs if entry.strip()
        )
    if not allowed_verb:
        return _refuse(
            f"kubectl verb {verb!r} is not in the verb allowlist {list(policy.kubectl_verbs)}", "kubectl"
        )
    if arg_problem:
        return _refuse(arg_problem, "kubectl")

    if not namespaces:
        return _refuse("kubectl commands must name their namespace with -n/--namespace", "kubectl")
    if len(namespaces) > 1:
        return _refuse("namespace given more than once", "kubectl")
    namespace = namespaces[0]
    if not _NAMESPACE.match(namespace):
        return _refuse(f"{namespace!r} is not a valid namespace name", "kubectl")
    if not policy.kubectl_namespaces:
        return _refuse("no namespaces are allowlisted (kubectl_namespaces is empty)", "kubectl")
    if namespace not in policy.kubectl_namespaces:
        return _refuse(
            f"namespace {namespace!r} is not in the namespace allowlist {list(policy.kubectl_namespaces)}",
            "kubectl",
        )

    argv = [policy.kubectl_path, *args]
    if policy.kubectl_kubeconfig:
        argv += ["--kubeconfig", policy.kubectl_kubeconfig]
    if policy.kubectl_context:
        argv += ["--context", policy.kubectl_context]
    return Verdict(
        allowed=True,
        reason=f"kubectl {verb} in namespace {namespace} is allowed",
        type="kubectl",
        argv=argv,
        action={"verb": verb, "namespace": namespace},
        timeout_s=_timeout(cmd, policy),
    )


# --- shell -------------------------------------------------------------------------------


def _evaluate_shell(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    if not policy.shell_enabled:
        return _refuse("shell commands are disabled (shell_enabled is false)", "shell")
    tokens, problem = _tokenise(cmd.command)
    if problem or not tokens:
        return _refuse(problem or "empty command", "shell")
    program = tokens[0]
    # A bare name must match an allowlisted name (or the basename of an allowlisted path);
    # a path must match an allowlisted path exactly, so /tmp/evil/systemctl never passes.
    if "/" in program:
        resolved = program if program in policy.shell_allowlist else None
    else:
        resolved = next(
            (entry for entry in policy.shell_allowlist if posixpath.basename(entry) == program), None
        )
    if resolved is None:
        return _refuse(
            f"program {program!r} is not in the shell allowlist {list(policy.shell_allowlist)}", "shell"
        )
    return Verdict(
        allowed=True,
        reason=f"{program} is allowlisted",
        type="shell",
        argv=[resolved, *tokens[1:]],
        action={"program": resolved},
        timeout_s=_timeout(cmd, policy),
    )


# --- http --------------------------------------------------------------------------------

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port


def _url_problem(url: str) -> str | None:
    if _CONTROL.search(url) or any(c in url for c in " \\"):
        return "URL contains whitespace, backslash or control characters"
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "URL must not carry credentials (user@host)"
    if parts.fragment:
        return "URL must not have a fragment"
    if _origin(parts) is None:
        return "URL must be http(s) with a host and a valid port"
    segments = unquote(parts.path).split("/")
    if ".." in segments or "." in segments:
        return "URL path must not contain dot segments"
    return None


def url_allowed(url: str, allowlist: tuple[str, ...] | list[str]) -> bool:
    """True when ``url`` is under one of the allowlisted prefixes (scheme, host, port, path)."""
    if _url_problem(url):
        return False
    parts = urlsplit(url)
    origin = _origin(parts)
    for prefix in allowlist:
        allowed = urlsplit(prefix)
        if _origin(allowed) != origin or allowed.username or allowed.password:
            continue
        base = allowed.path or "/"
        path = parts.path or "/"
        # Prefix on a path-segment boundary: /hooks allows /hooks and /hooks/x, not /hooks-evil.
        if base.endswith("/"):
            ok = path.startswith(base) or path == base.rstrip("/")
        else:
            ok = path == base or path.startswith(base + "/")
        if not ok:
            continue
        if allowed.query and parts.query != allowed.query:
            continue
        return True
    return False


def _evaluate_http(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    method, url = cmd.method, cmd.url
    words = cmd.command.split()
    if len(words) == 2 and words[0].upper() in HTTP_METHODS | {"DELETE", "HEAD", "OPTIONS"} and "://" in words[1]:
        if (method and method.upper() != words[0].upper()) or (url and url != words[1]):
            return _refuse("the command line and the method/url fields disagree", "http")
        method, url = words[0], words[1]
    if not method or not url:
        return _refuse("an http command needs a method and a url ('POST https://...' or fields)", "http")
    method = method.upper()
    if method not in HTTP_METHODS:
        return _refuse(f"HTTP method {method} is not allowed (only {sorted(HTTP_METHODS)})", "http")
    problem = _url_problem(url)
    if problem:
        return _refuse(problem, "http")
    if not policy.http_allowlist:
        return _refuse("no URL prefixes are allowlisted (http_allowlist is empty)", "http")
    if not url_allowed(url, policy.http_allowlist):
        return _refuse(f"URL {url!r} is not under an allowlisted prefix", "http")
    return Verdict(
        allowed=True,
        reason=f"{method} to an allowlisted URL",
        type="http",
        action={"method": method, "url": url, "body": cmd.body},
        timeout_s=_timeout(cmd, policy),
    )


# --- elasticsearch -----------------------------------------------------------------------

# action -> (needs an index, wildcards allowed in the index)
ES_ACTIONS: dict[str, tuple[bool, bool]] = {
    # PUT /{index}/_settings {"index.blocks.read_only_allow_delete": null}; after a disk
    # watermark every index is blocked, hence patterns such as logs-* are accepted here.
    "clear_read_only_block": (True, True),
    # POST /_cluster/reroute?retry_failed=true
    "cluster_reroute_retry_failed": (False, False),
    # POST /{index}/_ilm/retry
    "ilm_retry": (True, False),
}
# Elasticsearch's own index-name rules, plus: leading dot allowed (data stream backing indices).
_INDEX = re.compile(r"^[a-z0-9.][a-z0-9._+-]*$")
_INDEX_PATTERN = re.compile(r"^[a-z0-9.][a-z0-9._+*-]*$")


def _index_problem(index: str, wildcards: bool) -> str | None:
    if not index:
        return "empty index name"
    if len(index.encode()) > 255:
        return "index name longer than 255 bytes"
    if index in (".", "..") or ".." in index or index.startswith(("_", "-", "+")) or index == "_all":
        return f"index {index!r} is not a concrete index name"
    if "," in index:
        return "one index per command (no commas)"
    if "*" in index:
        if not wildcards:
            return f"wildcards are not allowed for this action ({index!r})"
        if not index.replace("*", "").strip(".-_"):
            return f"pattern {index!r} matches everything; name a prefix"
        return None if _INDEX_PATTERN.match(index) else f"{index!r} is not a valid index pattern"
    return None if _INDEX.match(index) else f"{index!r} is not a valid index name"


def _evaluate_elasticsearch(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    tokens, problem = _tokenise(cmd.command)
    if problem or not tokens:
        return _refuse(problem or "empty command", "elasticsearch")
    action = tokens[0]
    if action not in ES_ACTIONS or action not in policy.elasticsearch_actions:
        return _refuse(
            f"elasticsearch action {action!r} is not allowlisted {sorted(policy.elasticsearch_actions)}",
            "elasticsearch",
        )
    args: dict[str, str] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or key != "index" or key in args:
            return _refuse(f"unexpected argument {token!r} (only index=NAME)", "elasticsearch")
        args[key] = value
    index = args.get("index")
    if cmd.index is not None:
        if index is not None and index != cmd.index:
            return _refuse("the command line and the index field disagree", "elasticsearch")
        index = cmd.index
    needs_index, wildcards = ES_ACTIONS[action]
    if needs_index:
        if index is None:
            return _refuse(f"{action} needs index=NAME", "elasticsearch")
        problem = _index_problem(index, wildcards)
        if problem:
            return _refuse(problem, "elasticsearch")
    elif index is not None:
        return _refuse(f"{action} takes no index", "elasticsearch")
    return Verdict(
        allowed=True,
        reason=f"elasticsearch action {action} is allowlisted",
        type="elasticsearch",
        action={"action": action, "index": index},
        timeout_s=_timeout(cmd, policy),
    )


# --- entry points ------------------------------------------------------------------------

_EVALUATORS = {
    "kubectl": _evaluate_kubectl,
    "shell": _evaluate_shell,
    "http": _evaluate_http,
    "elasticsearch": _evaluate_elasticsearch,
}


def parse_command(cmd: Command | dict[str, Any]) -> Command:
    return cmd if isinstance(cmd, Command) else Command.model_validate(cmd)


def evaluate(cmd: Command | dict[str, Any], policy: ExecutionPolicy) -> Verdict:
    """Decide whether ``cmd`` may run under ``policy``; never raises on bad input."""
    try:
        command = parse_command(cmd)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _refuse(f"invalid command: {errors}")
    return _EVALUATORS[command.type](command, policy)


def safe_flag(cmd: Command | dict[str, Any], policy: ExecutionPolicy) -> bool:
    """The ``safe`` value the analysis stage stores.

    True only if the policy allows the command AND its source said it is safe: a command
    outside the policy is stored ``safe=false`` whatever the playbook or the LLM claimed.
    """
    try:
        command = parse_command(cmd)
    except ValidationError:
        return False
    return command.safe and evaluate(command, policy).allowed
