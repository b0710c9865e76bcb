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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# the names a setting may use: ES actions, kubectl verbs and kinds (kind_of)
from elk_resolver.settings import ES_ACTIONS, KUBECTL_VERBS, kind_of

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
    kubectl_kinds: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_VERB_KINDS))
    """verb -> the kinds it may act on; a verb missing here acts on nothing."""
    undo_to_revision: bool = False
    """``rollout undo`` may name ``--to-revision=N`` (setting kubectl_undo_to_revision); off,
    it rolls back to the previous revision only."""
    scale_bounds: ScaleBounds = field(default_factory=lambda: ScaleBounds())
    http_allowlist: tuple[str, ...] = ()
    shell_enabled: bool = False
    shell_allowlist: tuple[str, ...] = ()
    elasticsearch_actions: tuple[str, ...] = ()
    """Opt-in (setting elasticsearch_actions): none by default, whatever elasticsearch_url says."""
    child_env_allowlist: tuple[str, ...] = ()
    """Variables child processes get besides CHILD_ENV_BASE (setting child_env_allowlist)."""
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
            kubectl_kinds={verb: tuple(kinds) for verb, kinds in settings.kubectl_kinds.items()},
            undo_to_revision=settings.kubectl_undo_to_revision,
            scale_bounds=ScaleBounds(
                max_step=settings.kubectl_scale_max_step,
                max_replicas=settings.kubectl_scale_max_replicas,
                allow_zero=settings.kubectl_scale_allow_zero,
            ),
            http_allowlist=tuple(settings.http_allowlist),
            shell_enabled=settings.shell_enabled,
            shell_allowlist=tuple(settings.shell_allowlist),
            elasticsearch_actions=tuple(settings.elasticsearch_actions),
            child_env_allowlist=tuple(settings.child_env_allowlist),
            default_timeout_s=settings.command_timeout_s,
            output_limit_bytes=settings.output_limit_bytes,
        )

    def verb_kinds(self, verb: str) -> tuple[str, ...]:
        """The canonical kinds ``verb`` may act on (``kubectl_kinds``, spellings normalised)."""
        named = self.kubectl_kinds.get(verb, ())
        return tuple(dict.fromkeys(k for k in (kind_of(n) for n in named) if k is not None))

    def kubectl_identity_args(self) -> list[str]:
        """The only --kubeconfig/--context a kubectl child ever gets: the policy's."""
        args: list[str] = []
        if self.kubectl_kubeconfig:
            args += ["--kubeconfig", self.kubectl_kubeconfig]
        if self.kubectl_context:
            args += ["--context", self.kubectl_context]
        return args


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
#
# Every allowed kubectl command acts on exactly one named object: ``kubectl VERB KIND/NAME -n NS``
# (or ``KIND NAME``), the kind allowlisted for the verb, the namespace explicit and allowlisted.
# Anything that could widen it (selectors, --all, -A, files, lists, a missing name) is refused
# with a reason; so is any flag not listed for the verb.

# Flags that change who kubectl is or which cluster it talks to.
IDENTITY_FLAGS = frozenset(
    {
        "--kubeconfig", "--context", "--cluster", "--user", "--server", "-s", "--token",
        "--as", "--as-group", "--as-uid", "--username", "--password",
        "--certificate-authority", "--client-certificate", "--client-key",
        "--insecure-skip-tls-verify", "--tls-server-name", "--kuberc",
    }
)  # fmt: skip

# Flags that make a command act on more than the one object it names (or on objects it does
# not name at all: files, kustomizations, raw API paths).
SCOPE_FLAGS = frozenset(
    {
        "-l", "--selector", "--field-selector", "--all", "-A", "--all-namespaces",
        "-f", "--filename", "-k", "--kustomize", "-R", "--recursive", "--raw", "--force", "--prune",
    }
)  # fmt: skip

_SCOPE_VALUE_FLAGS = frozenset(
    {"-l", "--selector", "--field-selector", "-f", "--filename", "-k", "--kustomize", "--raw"}
)


# Flags a remediation may use, per verb; True means the flag takes a value (``--f V`` or
# ``--f=V``), False that it is only accepted as ``--f=VALUE``.
_COMMON_FLAGS: dict[str, bool] = {"-n": True, "--namespace": True, "--dry-run": False}
VERB_FLAGS: dict[str, dict[str, bool]] = {  # keys: settings.KUBECTL_VERBS, in that order
    "rollout restart": {},
    "rollout undo": {"--to-revision": True},
    "scale": {"--replicas": True, "--current-replicas": True, "--timeout": True},
    "delete pod": {"--grace-period": True, "--wait": False, "--timeout": True},
}
assert tuple(VERB_FLAGS) == KUBECTL_VERBS, "every verb a setting may name has its flags here"
# Every flag some verb accepts (the RBAC generator reads it).
KUBECTL_FLAGS: dict[str, bool] = {**_COMMON_FLAGS, **{f: v for flags in VERB_FLAGS.values() for f, v in flags.items()}}
def flag_takes_value(name: str) -> bool | None:
    """True: the flag takes a value (``--f V`` or ``--f=V``); False: only as ``--f=VALUE``;
    None: a flag no verb accepts."""
    return KUBECTL_FLAGS.get(name, name in _SCOPE_VALUE_FLAGS or None)

# Conservative defaults of the per-verb kind allowlist (setting kubectl_kinds).
DEFAULT_VERB_KINDS: dict[str, tuple[str, ...]] = {
    "rollout restart": ("deployment", "statefulset", "daemonset"),
    "rollout undo": ("deployment", "statefulset", "daemonset"),
    "scale": ("deployment", "statefulset"),
    "delete pod": ("pod",),
}
# Kubernetes names: namespaces are DNS-1123 labels, object names DNS-1123 subdomains
# (lowercase alphanumerics, '-' and '.', at most 253 characters).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)?$")
_BOOL = frozenset({"true", "false"})
_DRY_RUN = frozenset({"server", "client", "none"})




@dataclass(frozen=True)
class ScaleBounds:
    """How far one ``kubectl scale`` may move a workload from its current replica count."""

    max_step: int = 2
    max_replicas: int = 20
    allow_zero: bool = False

    def problem(self, current: int, target: int) -> str | None:
        if target == 0 and not self.allow_zero:
            return "scaling to 0 replicas stops the workload (kubectl_scale_allow_zero is false)"
        if target > self.max_replicas:
            return f"--replicas={target} is above the ceiling kubectl_scale_max_replicas={self.max_replicas}"
        if abs(target - current) > self.max_step:
            return (
                f"--replicas={target} moves {abs(target - current)} replicas from the current {current}; "
                f"at most kubectl_scale_max_step={self.max_step} per command"
            )
        return None


def _flag_value_problem(name: str, value: str) -> str | None:
    if name in ("-n", "--namespace"):
        return None  # checked with the allowlist below
    if name in ("--replicas", "--current-replicas", "--to-revision", "--grace-period"):
        if not value.isdigit():
            return f"{name} must be a non-negative integer, not {value!r}"
        if name == "--grace-period" and int(value) < 1:
            return "--grace-period must be at least 1 (0 means a forced delete)"
        return None
    if name == "--timeout":
        return None if _DURATION.match(value) else f"--timeout must be a duration such as 30s, not {value!r}"
    if name == "--wait":
        return None if value in _BOOL else f"--wait must be true or false, not {value!r}"
    if name == "--dry-run":
        return None if value in _DRY_RUN else f"--dry-run must be server, client or none, not {value!r}"
    return None


def split_flag(token: str) -> tuple[str, str | None]:
    """(flag, inline value) the way kubectl's flag parser reads it: ``--name=V``, ``--name``,
    ``-xV``, ``-x=V``, ``-x``. A short flag with anything attached is read as that flag with a
    value, so ``-lapp=x`` is ``-l`` and ``-Af`` is ``-A``: both refused as they should be."""
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        return name, value if eq else None
    name, rest = token[:2], token[2:]
    if rest.startswith("="):
        rest = rest[1:]
    return name, rest if rest else None


def _kubectl_verb(positionals: list[str]) -> tuple[str, list[str]]:
    """(verb as the policy names it, the positionals after the verb)."""
    if positionals[0] == "rollout" and len(positionals) > 1:
        return f"rollout {positionals[1]}", positionals[2:]
    if positionals[0] == "delete":
        return "delete pod", positionals[1:]
    return positionals[0], positionals[1:]


def _verb_allowed(verb: str, policy: ExecutionPolicy) -> bool:
    for entry in policy.kubectl_verbs:
        words = entry.split()
        if not words:
            continue
        if words == ["delete"]:  # 'delete' in the allowlist has always meant 'delete pod'
            words = ["delete", "pod"]
        if words == verb.split():
            return True
    return False


def _one_object(verb: str, rest: list[str], policy: ExecutionPolicy) -> tuple[tuple[str, str] | None, str | None]:
    """((kind, name), None) when ``rest`` names exactly one object of an allowed kind."""
    shown = f"kubectl {verb.split()[0] if verb == 'delete pod' else verb}"
    if any("," in r for r in rest):
        return None, f"{shown}: a comma list names several objects; name exactly one KIND/NAME"
    if len(rest) == 1 and "/" in rest[0]:
        kind_text, _, name = rest[0].partition("/")
    elif len(rest) == 2 and "/" not in rest[0] and "/" not in rest[1]:
        kind_text, name = rest
    elif not rest or (len(rest) == 1 and "/" not in rest[0]):
        what = f"every {rest[0]} in the namespace" if rest else "an object it does not name"
        return None, f"{shown} names no object: without a name it would act on {what}; name exactly one KIND/NAME"
    else:
        return None, f"{shown} names more than one object ({' '.join(rest)}); name exactly one KIND/NAME"
    kind = kind_of(kind_text)
    allowed = policy.verb_kinds(verb)
    if kind is None or kind not in allowed:
        return None, f"{shown} may act on {', '.join(allowed) or 'no kind'} (kubectl_kinds), not {kind_text!r}"
    if "/" in name or not name:
        return None, f"{rest[0]!r} is not KIND/NAME"
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return None, f"{name!r} is not a valid Kubernetes object name"
    return (kind, name), None


def _evaluate_kubectl(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    tokens, problem = _tokenise(cmd.command)
    if problem or not tokens:
        return _refuse(problem or "empty command", "kubectl")
    if tokens[0] != "kubectl":
        return _refuse(f"a kubectl command must start with 'kubectl', not {tokens[0]!r}", "kubectl")

    args = tokens[1:]
    # Identity flags are reported first, then the verb (the most useful reason for a human),
    # then flags that widen the scope, then any other flag or argument problem.
    flags: list[tuple[str, str | None, int]] = []
    positionals: list[str] = []
    end_of_flags = args.index("--") if "--" in args else len(args)
    for i, token in enumerate(args[:end_of_flags]):
        if token.startswith("-") and len(token) > 1:
            name, value = split_flag(token)
            if name in IDENTITY_FLAGS:
                return _refuse(f"flag {name} changes kubectl's identity or target and is never allowed", "kubectl")
            flags.append((name, value, i))

    # Split flag values from positionals (the verb and the object).
    consumed: set[int] = set()
    parsed: list[tuple[str, str | None]] = []
    arg_problem: str | None = None
    for name, value, i in flags:
        takes_value = flag_takes_value(name)
        if value is None and takes_value:
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                value = args[i + 1]
                consumed.add(i + 1)
            else:
                arg_problem = arg_problem or f"flag {name} needs a value"
        elif value is None and takes_value is False:
            arg_problem = arg_problem or f"flag {name} must be written {name}=VALUE"
        parsed.append((name, value))
    for i, token in enumerate(args):
        if i < end_of_flags and (i in consumed or (token.startswith("-") and len(token) > 1)):
            continue
        if i != end_of_flags:
            positionals.append(token)

    if not positionals:
        return _refuse("no kubectl verb given", "kubectl")
    verb, rest = _kubectl_verb(positionals)
    if not _verb_allowed(verb, policy):
        return _refuse(
            f"kubectl verb {verb!r} is not in the verb allowlist {list(policy.kubectl_verbs)}", "kubectl"
        )
    if verb not in VERB_FLAGS:
        return _refuse(f"kubectl verb {verb!r} is not supported (only {', '.join(VERB_FLAGS)})", "kubectl")
    if end_of_flags < len(args):
        return _refuse("'--' (end of flags) is never allowed in a kubectl command", "kubectl")
    for name, _ in parsed:
        if name in SCOPE_FLAGS:
            return _refuse(
                f"flag {name} widens the command beyond one named object and is never allowed", "kubectl"
            )

    allowed_flags = {**_COMMON_FLAGS, **VERB_FLAGS[verb]}
    seen: dict[str, str | None] = {}
    for name, value in parsed:
        if name not in allowed_flags:
            where = "" if name in KUBECTL_FLAGS else " the kubectl flag allowlist"
            return _refuse(
                f"flag {name} is not allowed{' for ' + verb if not where else ' by' + where} "
                f"(allowed: {', '.join(allowed_flags)})",
                "kubectl",
            )
        canonical = "-n" if name == "--namespace" else name
        if canonical in seen:
            what = "namespace" if canonical == "-n" else f"flag {name}"
            return _refuse(f"{what} given more than once", "kubectl")
        seen[canonical] = value
        if value is not None:
            arg_problem = arg_problem or _flag_value_problem(name, value)
    if arg_problem:
        return _refuse(arg_problem, "kubectl")
    # --to-revision=0 is kubectl's own "the previous revision"; any other number can reach
    # back to a revision of long ago (an old image, an old config)
    revision = seen.get("--to-revision")
    if revision not in (None, "0") and not policy.undo_to_revision:
        return _refuse(
            "rollout undo goes back to the previous revision only: --to-revision needs "
            "kubectl_undo_to_revision", "kubectl")

    target, problem = _one_object(verb, rest, policy)
    if problem or target is None:
        return _refuse(problem or "no object named", "kubectl")
    kind, name = target

    namespace = seen.get("-n")
    if not namespace:
        return _refuse("kubectl commands must name their namespace with -n/--namespace", "kubectl")
    if not DNS1123_LABEL.match(namespace):
        return _refuse(f"{namespace!r} is not a valid namespace name", "kubectl")
    if not policy.kubectl_namespaces:
        return _refuse("no namespaces are allowlisted (kubectl_namespaces is empty)", "kubectl")
    if namespace not in policy.kubectl_namespaces:
        return _refuse(
            f"namespace {namespace!r} is not in the namespace allowlist {list(policy.kubectl_namespaces)}",
            "kubectl",
        )

    action: dict[str, Any] = {"verb": verb, "kind": kind, "name": name, "namespace": namespace}
    if verb == "scale":
        replicas = seen.get("--replicas")
        if replicas is None:
            return _refuse("kubectl scale needs --replicas=N", "kubectl")
        target_count = int(replicas)
        bounds = policy.scale_bounds
        # What can be judged without the current count; the executor judges the rest after
        # reading it (ScaleBounds.problem), right before running.
        if target_count == 0 and not bounds.allow_zero:
            return _refuse(bounds.problem(0, 0) or "", "kubectl")
        if target_count > bounds.max_replicas:
            return _refuse(bounds.problem(target_count, target_count) or "", "kubectl")
        action["replicas"] = target_count
        if seen.get("--current-replicas") is not None:
            action["current_replicas"] = int(seen["--current-replicas"])  # type: ignore[arg-type]

    return Verdict(
        allowed=True,
        reason=f"kubectl {verb} {kind}/{name} in namespace {namespace} is allowed",
        type="kubectl",
        argv=[policy.kubectl_path, *args, *policy.kubectl_identity_args()],
        action=action,
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
    readings = path_readings(parts.path)
    if readings is None:
        return f"URL path is still percent-encoded after {_MAX_DECODES} decodings"
    for path in readings:
        problem = _path_problem(path)
        if problem:
            return problem
    return None


_MAX_DECODES = 4


def path_readings(path: str) -> list[str] | None:
    """The path as each server in a chain may read it: as sent, then percent-decoded again
    and again until it no longer changes (a proxy that decodes once in front of an
    application that decodes again reads ``%252e%252e`` as ``..``). None when it still changes
    after ``_MAX_DECODES`` decodings."""
    readings = [path or "/"]
    for _ in range(_MAX_DECODES):
        decoded = unquote(readings[-1])
        if decoded == readings[-1]:
            return readings
        readings.append(decoded)
    return None


def _path_problem(path: str) -> str | None:
    """What lets one reading of a path escape an allowlisted prefix on some server."""
    if "\\" in path or _CONTROL.search(path):
        return "URL path contains a backslash or control characters (after decoding)"
    if ";" in path:
        # Tomcat and Spring drop ";params" from each segment (/hooks/..;/admin is /admin there),
        # other servers keep them: refused rather than guessed
        return "URL path must not carry ;path parameters"
    segments = path.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        return "URL path must not contain dot segments"
    if any(segment == "" for segment in segments[:-1]):
        # //evil.com/x is a network-path reference to some clients and routers
        return "URL path must not contain empty segments (//)"
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
        base = unquote(allowed.path or "/")
        # every reading of the path must stay under the prefix, on a segment boundary:
        # /hooks allows /hooks and /hooks/x, not /hooks-evil
        if not all(_under(path, base) for path in path_readings(parts.path) or ()):
            continue
        if allowed.query and parts.query != allowed.query:
            continue
        return True
    return False


def _under(path: str, base: str) -> bool:
    if base.endswith("/"):
        return path.startswith(base) or path == base.rstrip("/")
    return path == base or path.startswith(base + "/")


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

# ES_ACTIONS (the actions a setting may name, and whether each needs an index) is settings'.
# Elasticsearch's index-name rules (lowercase; no \ / * ? " < > | space , #; not starting with
# - _ +; not . or ..; at most 255 bytes), narrowed to one concrete, visible index: no wildcard,
# no list, no _all, no date math, no remote cluster (a:b), and no leading dot, which names
# system and hidden indices (.security-7, .kibana, data stream backing indices .ds-*).
_INDEX = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")


def index_problem(index: str) -> str | None:
    """Why ``index`` is not one concrete, visible index name; None when it is."""
    if not index:
        return "empty index name"
    if len(index.encode()) > 255:
        return "index name longer than 255 bytes"
    if index == "_all" or index.startswith("_"):
        return f"index {index!r} is not a concrete index name"
    if "," in index:
        return "one index per command (no commas)"
    if any(c in index for c in "*?"):
        return f"wildcards are never allowed ({index!r}): name one concrete index"
    if index.startswith("."):
        return f"{index!r} is a system or hidden index (leading '.'): never touched automatically"
    if ":" in index:
        return f"{index!r} names a remote cluster index"
    if index.startswith(("-", "+")) or ".." in index or not _INDEX.match(index):
        return f"{index!r} is not a valid index name"
    return None


def _evaluate_elasticsearch(cmd: Command, policy: ExecutionPolicy) -> Verdict:
    tokens, problem = _tokenise(cmd.command)
    if problem or not tokens:
        return _refuse(problem or "empty command", "elasticsearch")
    action = tokens[0]
    if not policy.elasticsearch_actions:
        return _refuse(
            "elasticsearch actions are disabled (opt in with the setting elasticsearch_actions)", "elasticsearch"
        )
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
    if ES_ACTIONS[action]:
        if index is None:
            return _refuse(f"{action} needs index=NAME", "elasticsearch")
        problem = index_problem(index)
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


# --- what child processes and live mode get -------------------------------------------------

# Always passed to kubectl/shell children when the service has them; the rest of the service's
# environment (DATABASE_URL, LLM keys, every ELK_RESOLVER_* setting...) never is, unless an
# operator lists a name in child_env_allowlist (ELK_RESOLVER_* names are refused there).
# KUBERNETES_SERVICE_HOST/PORT are how kubectl finds the API server from inside a pod.
CHILD_ENV_BASE = ("PATH", "HOME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def child_environment(base: Mapping[str, str], allowlist: Iterable[str] = ()) -> dict[str, str]:
    """The scrubbed environment of a child process: CHILD_ENV_BASE and ``allowlist`` only."""
    names = (*CHILD_ENV_BASE, *(n for n in allowlist if not n.upper().startswith("ELK_RESOLVER_")))
    return {name: base[name] for name in names if name in base}


def live_kubectl_problem(settings: Settings) -> str | None:
    """Why live mode must not start with kubectl as configured; None when it may.

    Without an explicit context kubectl acts on whatever current-context its kubeconfig has
    (a laptop's, a CI runner's). Inside a pod, the service account token names the cluster."""
    if settings.execution_mode != "live" or not settings.kubectl_namespaces or not settings.kubectl_verbs:
        return None
    if settings.kubectl_context or settings.kubectl_serviceaccount_token.is_file():
        return None
    return (
        "live mode with kubectl refuses to start without an explicit cluster: set ELK_RESOLVER_KUBECTL_CONTEXT "
        f"or run in a pod with a service account (no token at {settings.kubectl_serviceaccount_token})"
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
    # A verdict is a pure function of the command and the (frozen) policy; the analysis stage
    # asks it for every command of every event, mostly the same commands (shlex dominated).
    try:
        key = (id(policy), command)
        hit = _VERDICTS.get(key)
    except TypeError:  # a command with an unhashable field (an HTTP body): not remembered
        return _EVALUATORS[command.type](command, policy)
    if hit is not None and hit[0] is policy:
        return hit[1]
    verdict = _EVALUATORS[command.type](command, policy)
    if len(_VERDICTS) >= _VERDICTS_MAX:
        _VERDICTS.clear()
    _VERDICTS[key] = (policy, verdict)
    return verdict


_VERDICTS: dict[tuple[int, Command], tuple[ExecutionPolicy, Verdict]] = {}
_VERDICTS_MAX = 4096


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
