"""Playbooks: known fixes as editable JSON, rendered into ``solution_commands``.

A playbook file (``elk_resolver/actions/playbooks/*.json``, and the user's ``settings.playbooks_dir``)
holds one playbook object or a list of them::

    {
      "name": "pod-crashloopbackoff-restart",
      "description": "Restart the deployment of {pod} in {namespace} ...",
      "solution_type": "restart",
      "pattern_names": ["Pod CrashLoopBackOff"],      # error_patterns.pattern_name
      "error_categories": ["kubernetes"],              # error_patterns.error_category
      "match": "(?i)CrashLoopBackOff",                 # RE2, searched in the message
      "extract": ["index \\[(?P<index>[^\\]]+)\\]"],  # RE2; named groups fill placeholders
      "defaults": {"service_namespace": "{namespace}"},          # when the context lacks one
      "priority": 1,                                   # lower first, as in error_patterns
      "commands": [{"type": "kubectl", "command": "kubectl rollout restart deployment/{deployment} -n {namespace}",
                    "description": "...", "safe": true, "critical": true}],
      "manual_steps": ["Raise the memory limit of {container} ..."]
    }

User files load after the shipped ones; a playbook with the same ``name`` replaces the shipped
one, and ``{"name": "...", "enabled": false}`` removes it.

Placeholders are ``{name}``. Every value is validated before it is put into a command: ``index``
must be an Elasticsearch index name, ``replicas`` a small integer, everything else a Kubernetes
(DNS-1123) name. Log messages are attacker-controlled text (a pod name in a message can be
anything), so a value like ``api; rm -rf /`` or ``x -n kube-system`` makes the render fail with
:class:`UnsafePlaceholderValue`; it is never "cleaned up" into something that runs.

Regexes in playbooks run on RE2 (linear time): a user's pattern cannot stall the consumer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from elk_resolver.actions.policy import Command, CommandType, ExecutionPolicy, safe_flag
from elk_resolver.events.re2_sets import compile_set

if TYPE_CHECKING:
    from elk_resolver.settings import Settings

__all__ = [
    "Catalogue",
    "DroppedCommand",
    "ForeignTarget",
    "MissingPlaceholder",
    "Playbook",
    "PlaybookError",
    "RenderError",
    "RenderedSolution",
    "UnsafePlaceholderValue",
    "context_from_event",
    "fill_loosely",
    "load_playbooks",
    "validate_value",
]

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]{0,63})\}")
MAX_VALUE_LEN = 253

# DNS-1123 subdomain: what Kubernetes accepts for pod, deployment, service, namespace names.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Elasticsearch index: lowercase, no wildcards, commas or path characters; a leading dot is
# allowed for data-stream backing indices (.ds-logs-app-2024.05.01-000042).
_INDEX_NAME = re.compile(r"^\.?[a-z0-9][a-z0-9._-]*$")
_REPLICAS = re.compile(r"^[0-9]{1,3}$")


class PlaybookError(ValueError):
    """A playbook file is invalid."""


class RenderError(ValueError):
    """A playbook cannot be rendered for this context."""


class ForeignTarget(RenderError):
    """The message names its subject in another namespace than the event's own: the playbook's
    extraction may not cross it, and the event's own workload is not the subject either."""

    def __init__(self, playbook: str, names: str, own: str | None) -> None:
        super().__init__(
            f"playbook {playbook!r}: the message names {names}, outside the event's namespace"
            f" ({own or 'none'}); a target is only taken from the message inside the event's own namespace"
        )


class MissingPlaceholder(RenderError):
    def __init__(self, playbook: str, missing: Iterable[str]) -> None:
        self.playbook = playbook
        self.missing = sorted(set(missing))
        super().__init__(f"playbook {playbook!r}: no value for placeholder(s) {', '.join(self.missing)}")


class UnsafePlaceholderValue(RenderError):
    def __init__(self, playbook: str, name: str, value: str, why: str) -> None:
        self.playbook = playbook
        self.name = name
        self.value = value
        super().__init__(f"playbook {playbook!r}: value for {{{name}}} refused ({why}): {value[:80]!r}")


def validate_value(name: str, value: str) -> str | None:
    """Why ``value`` may not fill placeholder ``name``; None when it may."""
    if not isinstance(value, str):
        return "not a string"
    if not value:
        return "empty"
    if len(value) > MAX_VALUE_LEN:
        return f"longer than {MAX_VALUE_LEN} characters"
    if name == "replicas":
        return None if _REPLICAS.match(value) else "not a replica count (0-999)"
    if name == "index":
        if ".." in value:
            return "'..' in an index name"
        return None if _INDEX_NAME.match(value) else "not an Elasticsearch index name"
    return None if _K8S_NAME.match(value) else "not a Kubernetes (DNS-1123) name"


def _compile(pattern: str, what: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise ValueError(f"{what} {pattern!r} does not compile (RE2): {exc}") from exc


class CommandTemplate(BaseModel):
    """One entry of a playbook's ``commands``; placeholders allowed in the string fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: CommandType
    command: str = Field(min_length=1)
    description: str = ""
    safe: bool = False
    critical: bool = False
    timeout_s: float | None = Field(None, gt=0)
    method: str | None = None
    url: str | None = None
    body: Any = None
    index: str | None = None

    def placeholders(self) -> set[str]:
        found: set[str] = set()
        for text in _strings(self.model_dump(exclude={"type", "safe", "critical", "timeout_s"})):
            found.update(PLACEHOLDER.findall(text))
        return found


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _fill(obj: Any, values: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], obj)
    if isinstance(obj, Mapping):
        return {k: _fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values) for v in obj]
    return obj


def fill_loosely(text: str, values: Mapping[str, str]) -> str:
    """For prose (manual steps) and for showing a template to a person: a missing value stays
    visible as <name>."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), f"<{m.group(1)}>"), text)


@dataclass(frozen=True, slots=True)
class DroppedCommand:
    template: str
    missing: list[str]


@dataclass(frozen=True, slots=True)
class RenderedSolution:
    playbook: str
    solution_type: str
    description: str
    """The playbook description, with the manual steps appended (what ``solution_description`` stores)."""
    commands: list[dict[str, Any]]
    """``solution_commands``: ``{"type","command","description","safe","critical"}`` plus any
    structured field (index, method, url, body, timeout_s) the command uses."""
    manual_steps: list[str] = field(default_factory=list)
    dropped: list[DroppedCommand] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")
    description: str = Field(min_length=1)
    solution_type: str = Field(min_length=1, max_length=50)
    pattern_names: list[str] = Field(default_factory=list)
    error_categories: list[str] = Field(default_factory=list)
    match: str | None = None
    extract: list[str] = Field(default_factory=list)
    defaults: dict[str, str] = Field(default_factory=dict)
    priority: int = 5
    commands: list[CommandTemplate] = Field(min_length=1)
    manual_steps: list[str] = Field(default_factory=list)
    enabled: bool = True

    _match_rx: Any = PrivateAttr(None)
    _extract_rx: list[Any] = PrivateAttr(default_factory=list)
    source: str = Field("", exclude=True, description="file the playbook came from")

    @field_validator("match")
    @classmethod
    def _match_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value, "match")
        return value

    @field_validator("extract")
    @classmethod
    def _extract_has_named_groups(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            rx = _compile(pattern, f"extract[{i}]")
            if not rx.groupindex:
                raise ValueError(f"extract[{i}] needs at least one named group (?P<name>...)")
        return value

    @model_validator(mode="after")
    def _compile_all(self) -> Playbook:
        self._match_rx = _compile(self.match, "match") if self.match else None
        self._extract_rx = [_compile(v, f"extract[{i}]") for i, v in enumerate(self.extract)]
        return self

    def matches(self, message: str) -> bool:
        return self._match_rx is not None and self._match_rx.search(message) is not None

    def placeholders(self) -> set[str]:
        found: set[str] = set()
        for command in self.commands:
            found |= command.placeholders()
        found |= set(PLACEHOLDER.findall(self.description))
        return found

    def values_for(self, context: Mapping[str, str], message: str | None = None) -> dict[str, str]:
        """Values extracted from the message, then the context, then the defaults.

        Only the names this playbook declares in ``extract`` can come from the message, and
        only inside the event's own namespace: an extraction that names a namespace (a group
        called ``namespace`` or ``*_namespace``) other than the event's ``kubernetes.namespace``,
        or any namespace when the event has none, is dropped whole. Inside that bound the
        message wins over the context: when it names its subject (``pod=api-..._payments`` in
        a kubelet back-off event, ``index [logs-...]`` in a cluster block) that subject is what
        the fix must target. The first ``extract`` regex that sets a name wins. When the only
        subject the message names is in another namespace, :class:`ForeignTarget` is raised: the
        event's own workload (an event exporter, say) is not what the message is about.
        """
        extracted: dict[str, str] = {}
        foreign: list[str] = []
        own_namespace = context.get("namespace")
        if message:
            for rx in self._extract_rx:
                m = rx.search(message)
                if not m:
                    continue
                found = {name: m.group(name) for name in rx.groupindex if m.group(name)}
                if any(
                    (name == "namespace" or name.endswith("_namespace")) and value != own_namespace
                    for name, value in found.items()
                ):
                    # names another namespace (or the event has none): not this event's object
                    foreign.append(", ".join(f"{k}={v}" for k, v in sorted(found.items())))
                    continue
                for name, value in found.items():
                    extracted.setdefault(name, value)
        if foreign and not extracted:
            raise ForeignTarget(self.name, "; ".join(foreign), own_namespace)
        values = {k: v for k, v in context.items() if isinstance(v, str) and v}
        values.update(extracted)
        for name, default in self.defaults.items():
            if name not in values:
                refs = PLACEHOLDER.findall(default)
                if all(r in values for r in refs):
                    values[name] = PLACEHOLDER.sub(lambda m: values[m.group(1)], default)
        return values

    def render(
        self,
        context: Mapping[str, str],
        *,
        message: str | None = None,
        policy: ExecutionPolicy | None = None,
        on_missing: Literal["raise", "drop"] = "raise",
    ) -> RenderedSolution:
        """Fill the placeholders and return the commands in the ``solution_commands`` shape.

        ``message`` feeds the playbook's ``extract`` regexes. A missing value raises
        :class:`MissingPlaceholder` (``on_missing="raise"``), or drops that command and lists
        it in ``dropped`` (``on_missing="drop"``; if no command is left it raises anyway).
        A value that is not a valid name always raises :class:`UnsafePlaceholderValue`.
        With ``policy``, each command's ``safe`` becomes :func:`policy.safe_flag`.
        """
        values = self.values_for(context, message)
        used = self.placeholders()
        for name in sorted(used & values.keys()):
            why = validate_value(name, values[name])
            if why:
                raise UnsafePlaceholderValue(self.name, name, values[name], why)

        commands: list[dict[str, Any]] = []
        dropped: list[DroppedCommand] = []
        for template in self.commands:
            missing = sorted(template.placeholders() - values.keys())
            if missing:
                if on_missing == "raise":
                    raise MissingPlaceholder(self.name, missing)
                dropped.append(DroppedCommand(template.command, missing))
                continue
            filled = _fill(template.model_dump(exclude_none=True), values)
            if policy is not None:
                filled["safe"] = safe_flag(Command.model_validate(filled), policy)
            commands.append(filled)
        if not commands:
            raise MissingPlaceholder(self.name, (m for d in dropped for m in d.missing))

        missing_in_description = set(PLACEHOLDER.findall(self.description)) - values.keys()
        description = fill_loosely(self.description, values) if missing_in_description else _fill(self.description, values)
        manual = [fill_loosely(step, {k: v for k, v in values.items() if not validate_value(k, v)}) for step in self.manual_steps]
        if manual:
            description += "\nManual steps:\n" + "\n".join(f"- {step}" for step in manual)
        if dropped:
            description += "\nNot rendered (no value): " + "; ".join(
                f"{d.template} [missing {', '.join(d.missing)}]" for d in dropped
            )
        return RenderedSolution(
            playbook=self.name,
            solution_type=self.solution_type,
            description=description,
            commands=commands,
            manual_steps=manual,
            dropped=dropped,
            values={k: values[k] for k in sorted(used & values.keys())},
        )


@dataclass
class Catalogue:
    playbooks: dict[str, Playbook] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.playbooks)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.playbooks.values())

    def get(self, name: str) -> Playbook | None:
        return self.playbooks.get(name)

    def find(self, pattern_name: str | None, error_category: str | None, message: str) -> list[Playbook]:
        """Playbooks for an error, best first.

        1. playbooks that name the matched pattern (``pattern_names``);
        2. playbooks for the error category whose ``match`` (if any) matches the message;
        3. playbooks whose ``match`` matches the message (ELK failures with no pattern row).
        Within a tier: lower ``priority``, then name.
        """
        pattern_key = pattern_name.casefold() if pattern_name else None
        category_key = error_category.casefold() if error_category else None
        ordered, match_set = self._matcher()
        # one RE2 set pass over the message says which playbooks' ``match`` matches (the
        # analysis stage asks this for every event; one search per playbook cost ~10x more)
        matching = set(match_set.Match(message) or ()) if match_set is not None else set()
        tiers: list[list[Playbook]] = [[], [], []]
        for i, (pb, patterns, categories) in enumerate(ordered):
            if pattern_key and pattern_key in patterns:
                tiers[0].append(pb)
            elif category_key and category_key in categories and (pb.match is None or i in matching):
                tiers[1].append(pb)
            elif i in matching:
                tiers[2].append(pb)
        return [pb for tier in tiers for pb in tier]

    def _matcher(self) -> tuple[list[tuple[Playbook, frozenset[str], frozenset[str]]], Any]:
        """The playbooks in find order with their casefolded names and categories, and an RE2
        set of their ``match`` regexes (set index = position in that order; None when no
        playbook has one), rebuilt when the playbooks change."""
        signature = tuple((name, id(pb)) for name, pb in self.playbooks.items())
        cached = self.__dict__.get("_find_cache")
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        ordered = sorted(self.playbooks.values(), key=lambda p: (p.priority, p.name))
        entries = [
            (pb, frozenset(n.casefold() for n in pb.pattern_names), frozenset(c.casefold() for c in pb.error_categories))
            for pb in ordered
        ]
        match_set = None
        if any(pb.match for pb in ordered):
            # a playbook without ``match`` gets a pattern that never matches, so indices line up
            match_set = compile_set(pb.match if pb.match else "[^\\s\\S]" for pb in ordered)
        self.__dict__["_find_cache"] = (signature, entries, match_set)
        return entries, match_set

    def prompt_summary(self) -> list[dict[str, Any]]:
        """Names, descriptions and command shapes, for the LLM prompt."""
        return [
            {
                "name": pb.name,
                "solution_type": pb.solution_type,
                "description": pb.description,
                "commands": [{"type": c.type, "command": c.command} for c in pb.commands],
            }
            for pb in sorted(self.playbooks.values(), key=lambda p: (p.priority, p.name))
        ]


def _read_file(path: Path | Any, source: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlaybookError(f"{source}: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise PlaybookError(f"{source}: a playbook file holds an object or a list of objects")
    return items


def _parse(item: dict[str, Any], source: str) -> Playbook | str:
    """A playbook, or the name of one to remove (``"enabled": false``)."""
    if item.get("enabled") is False and isinstance(item.get("name"), str):
        return item["name"]
    try:
        return Playbook.model_validate({**item, "source": source})
    except ValidationError as exc:
        raise PlaybookError(f"{source}: playbook {item.get('name')!r}: {exc}") from exc


def load_playbooks(extra_dir: Path | None = None) -> Catalogue:
    """The shipped playbooks, then ``extra_dir/*.json`` (sorted by file name) overriding by name.

    An invalid file raises :class:`PlaybookError` naming it: a broken playbook must stop the
    analysis stage at start, not silently drop a fix.
    """
    catalogue = Catalogue()
    shipped = resources.files("elk_resolver.actions") / "playbooks"
    for entry in sorted(shipped.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        for item in _read_file(entry, f"shipped:{entry.name}"):
            parsed = _parse(item, f"shipped:{entry.name}")
            if isinstance(parsed, str):
                continue
            if parsed.name in catalogue.playbooks:
                raise PlaybookError(f"shipped:{entry.name}: duplicate playbook name {parsed.name!r}")
            catalogue.playbooks[parsed.name] = parsed
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise PlaybookError(f"playbooks_dir {extra_dir} is not a directory")
        for path in sorted(extra_dir.glob("*.json")):
            for item in _read_file(path, str(path)):
                parsed = _parse(item, str(path))
                if isinstance(parsed, str):
                    catalogue.playbooks.pop(parsed, None)
                else:
                    catalogue.playbooks[parsed.name] = parsed
    return catalogue


def load_from_settings(settings: Settings) -> Catalogue:
    return load_playbooks(settings.playbooks_dir)


# --- context from a Logstash ECS event ---------------------------------------------------------

# ReplicaSet pods: <deployment>-<pod-template-hash>-<5 chars>; the hash is 1-10 of [bcdfghjklmnpqrstvwxz2456789].
_RS_POD = re.compile(r"^(?P<deployment>[a-z0-9][-a-z0-9]*?)-[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$")
_RS_NAME = re.compile(r"^(?P<deployment>[a-z0-9][-a-z0-9]*?)-[bcdfghjklmnpqrstvwxz2456789]{1,10}$")


def _get(event: Mapping[str, Any], dotted: str) -> Any:
    """``event["a"]["b"]`` or ``event["a.b"]`` (Logstash and Filebeat both occur)."""
    if dotted in event:
        return event[dotted]
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            # a dotted key at a lower level, e.g. labels {"app.kubernetes.io/name": ...}
            return None
        node = node[part]
    return node


def context_from_event(event: Mapping[str, Any]) -> dict[str, str]:
    """Placeholder values from an ECS event's ``kubernetes.*`` and ``service.*`` fields.

    The values are NOT validated here (``render`` does it), they are only collected.
    ``deployment`` falls back to the ReplicaSet name without its hash, then to the pod name's
    ReplicaSet prefix, then to the ``app.kubernetes.io/name`` / ``app`` label.
    """
    ctx: dict[str, str] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, str) and value and key not in ctx:
            ctx[key] = value

    put("namespace", _get(event, "kubernetes.namespace"))
    put("namespace", _get(event, "kubernetes.namespace_name"))
    put("pod", _get(event, "kubernetes.pod.name"))
    put("container", _get(event, "kubernetes.container.name"))
    put("deployment", _get(event, "kubernetes.deployment.name"))
    replicaset = _get(event, "kubernetes.replicaset.name")
    if isinstance(replicaset, str) and (m := _RS_NAME.match(replicaset)):
        put("deployment", m.group("deployment"))
    if "pod" in ctx and (m := _RS_POD.match(ctx["pod"])):
        put("deployment", m.group("deployment"))
    labels = _get(event, "kubernetes.labels")
    if isinstance(labels, Mapping):
        put("deployment", labels.get("app_kubernetes_io/name") or labels.get("app.kubernetes.io/name"))
        put("deployment", labels.get("app"))
    put("statefulset", _get(event, "kubernetes.statefulset.name"))
    put("node", _get(event, "kubernetes.node.name"))
    # service.name is the emitting application; {service} in playbooks is a *target* taken
    # from the message (Connection refused), so it gets its own key.
    put("source_service", _get(event, "service.name"))
    return ctx
