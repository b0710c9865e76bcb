"""A stored solution as a person reads it on one error's page: its template filled with this
error's values, its manual steps as a list, and its record ("never run" when it never ran).

A solution is stored as a template (``{index}``, ``{pod}``, ``{namespace}``) so that its success
rate pools over every object it ran on. On an error's page the template is filled the way the
analysis stage fills it: from the newest request stored for this error and solution (its
commands are exactly what would run, on its bound object), else from the error's own event
(its Kubernetes context, the index it names, the playbook's declared extractions). A value that
is not known stays visible as ``<name>``; it is never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from elk_resolver.actions.playbooks import PLACEHOLDER, Catalogue, RenderError, fill_loosely, validate_value
from elk_resolver.actions.targets import workload_of
from elk_resolver.events.logstash_event import event_context

MANUAL_STEPS = "\nManual steps:\n"
NOT_RENDERED = "\nNot rendered (no value): "


def event_values(raw: Any, message: str) -> dict[str, str]:
    """Placeholder values from a stored event, named as the playbooks name them (the analysis
    stage's :func:`handlers.analyze.placeholder_context`, read from ``raw_log_data``)."""
    ctx = event_context(raw, message or "") if isinstance(raw, dict) else {}
    values = {k: ctx[k] for k in ("namespace", "pod", "container", "index", "host") if ctx.get(k)}
    if ctx.get("service"):
        values["source_service"] = ctx["service"]
    workload = workload_of({"deployment": ctx.get("deployment"), "pod": ctx.get("pod")})
    if workload is not None:
        values["workload"] = workload.name
        values["workload_kind"] = workload.kind
        if workload.kind in ("deployment", "statefulset", "daemonset"):
            values[workload.kind] = workload.name
    return values


def values_from_render(template: str, rendered: str) -> dict[str, str]:
    """The values that turn ``template`` into ``rendered`` (``{}`` when it does not fit)."""
    names: list[str] = []
    pattern = []
    last = 0
    for m in PLACEHOLDER.finditer(template):
        pattern.append(re.escape(template[last:m.start()]))
        name = m.group(1)
        pattern.append(f"(?P={name})" if name in names else f"(?P<{name}>.+?)")
        names.append(name)
        last = m.end()
    pattern.append(re.escape(template[last:]))
    found = re.fullmatch("".join(pattern), rendered, flags=re.DOTALL)
    return {k: v for k, v in found.groupdict().items() if v} if found else {}


def split_description(text: str) -> tuple[str, list[str], str]:
    """(description, manual steps, what was not rendered) of a stored solution description."""
    text = text or ""
    rest = ""
    if NOT_RENDERED in text:
        text, rest = text.split(NOT_RENDERED, 1)
    steps: list[str] = []
    if MANUAL_STEPS in text:
        text, manual = text.split(MANUAL_STEPS, 1)
        steps = [line[2:] if line.startswith("- ") else line for line in manual.splitlines() if line.strip()]
    return text, steps, rest


def bound_object(request: dict[str, Any] | None) -> dict[str, Any] | None:
    """The one object a stored request is bound to (``planned_requests``' target: what the
    execute stage acts on), as ``{"key", "label", ...}``; None when none could be bound."""
    target = (request or {}).get("target")
    if not isinstance(target, dict) or not target.get("key"):
        return None
    label = target["key"]
    if target.get("type") == "kubectl":
        label = f"{target.get('kind')}/{target.get('name')} -n {target.get('namespace')}"
    return {**target, "label": label}


def view(
    solution: Mapping[str, Any],
    *,
    error: Mapping[str, Any],
    requests: Sequence[Mapping[str, Any]],
    catalogue: Catalogue | None,
) -> dict[str, Any]:
    """``solution`` (a ``solutions`` row) for this ``error``: ``commands`` filled, ``steps``,
    ``description``, ``object`` (the bound object of the request the values came from),
    ``values`` and ``missing`` (placeholders no value is known for), ``never_run``."""
    templates = [c for c in (solution.get("solution_commands") or []) if isinstance(c, dict)]
    values = event_values(error.get("raw_log_data"), error.get("error_message") or "")
    playbook = catalogue.get(solution["playbook_name"]) if catalogue and solution.get("playbook_name") else None
    if playbook is not None:
        try:
            values = playbook.values_for(values, error.get("error_message") or "")
        except RenderError:
            pass  # the message names another namespace's object: only the event's own values
    newest = next((r for r in requests if r.get("solution_id") == solution["id"]), None)
    rendered: list[dict[str, Any]] | None = None
    target = None
    if newest is not None:
        request = newest.get("request") or {}
        rendered = [dict(c) for c in request.get("commands") or []]
        target = bound_object(request)
        for template, command in zip(templates, rendered, strict=False):
            values.update(values_from_render(str(template.get("command", "")), str(command.get("command", ""))))
    values = {k: v for k, v in values.items() if isinstance(v, str) and not validate_value(k, v)}
    if rendered is None or len(rendered) != len(templates):
        rendered = [dict(c) for c in templates]
    # a request stored with a placeholder it had no value for keeps it: show it as <name> too
    rendered = [{**c, "command": fill_loosely(str(c.get("command", "")), values)} for c in rendered]
    description, steps, not_rendered = split_description(solution.get("solution_description") or "")
    used = set()
    for text in [description, *steps, *(str(c.get("command", "")) for c in templates)]:
        used.update(PLACEHOLDER.findall(text))
    return {
        "description": fill_loosely(description, values),
        "steps": [fill_loosely(step, values) for step in steps],
        "not_rendered": not_rendered,
        "commands": rendered,
        "object": target,
        "values": {k: values[k] for k in sorted(used & values.keys())},
        "missing": sorted(used - values.keys()),
        "never_run": not (solution.get("execution_count") or 0),
    }
