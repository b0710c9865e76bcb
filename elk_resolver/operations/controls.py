"""The controls a person switches: playbooks on and off, the kill switch, and the patterns
(add, enable, disable, auto-resolve on and off, fingerprint fields, and what ingest would make
of a message). Every switch names who made it; the tables' triggers write the audit log
(migration 0130), so the CLI and the console are audited alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.people import Person, Refused, require
from elk_resolver.store.db import queries
from handlers.execute import get_kill_switch, kill_switch_on, list_playbook_controls, set_playbook_enabled
from handlers.execute import set_kill_switch as store_kill_switch

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings


class UnknownPlaybook(Refused):
    """A name that is no playbook: a typo must not look like a switch that worked."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"no playbook is named {name!r}; available: {', '.join(available) or 'none'}")
        self.available = available


_CATALOGUES: dict[Any, Any] = {}


def catalogue(settings: Settings) -> Any:
    """The playbooks the analysis stage loads with these settings (shipped, then
    ``playbooks_dir``), read once per directory."""
    from elk_resolver.actions.playbooks import load_from_settings

    key = str(settings.playbooks_dir or "")
    if key not in _CATALOGUES:
        _CATALOGUES[key] = load_from_settings(settings)
    return _CATALOGUES[key]


async def playbook_controls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return await list_playbook_controls(pool=pool)


async def playbooks(pool: asyncpg.Pool, settings: Settings) -> list[dict[str, Any]]:
    """Every available playbook with its state (a switch recorded for a name no longer in the
    catalogue is listed too, marked so): name, state, who switched it and when, what it does."""
    switches = {r["playbook_name"]: r for r in await list_playbook_controls(pool=pool)}
    rows = []
    for pb in sorted(catalogue(settings), key=lambda p: p.name):
        switch = switches.pop(pb.name, None)
        rows.append({
            "name": pb.name, "state": "disabled" if switch and switch["disabled_at"] else "enabled",
            "updated_by": switch["updated_by"] if switch else None, "updated_at": switch["updated_at"] if switch else None,
            "description": pb.description, "solution_type": pb.solution_type, "pattern_names": pb.pattern_names,
            "error_categories": pb.error_categories, "commands": [c.command for c in pb.commands],
            "source": pb.source, "available": True,
        })  # fmt: skip
    for name, switch in sorted(switches.items()):
        rows.append({"name": name, "state": "disabled" if switch["disabled_at"] else "enabled",
                     "updated_by": switch["updated_by"], "updated_at": switch["updated_at"], "description": "",
                     "solution_type": "", "pattern_names": [], "error_categories": [], "commands": [], "source": "",
                     "available": False})  # fmt: skip
    return rows


async def switch_playbook(pool: asyncpg.Pool, settings: Settings, name: str, enabled: bool,
                          person: Person | None) -> dict[str, Any]:
    """Off means off: a disabled playbook's stored solutions stop running automatically in every
    executor copy at their next decision. A name that is no available playbook is refused
    (listing the available ones); a recorded switch of a playbook since removed may still be
    turned back on."""
    person = require(settings, person, "enable or disable a playbook")
    available = sorted(pb.name for pb in catalogue(settings))
    if name not in available:
        known = {r["playbook_name"] for r in await list_playbook_controls(pool=pool)}
        if not (enabled and name in known):
            raise UnknownPlaybook(name, available)
    return await set_playbook_enabled(name, enabled, person.name, pool=pool)


async def kill_switch(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    row = await get_kill_switch(pool=pool)
    async with pool.acquire() as conn:
        on, why = await kill_switch_on(conn, settings)
    return {**row, "effective": on, "why": why, "setting": settings.kill_switch,
            "execution_mode": settings.execution_mode}


async def set_kill_switch(pool: asyncpg.Pool, settings: Settings, on: bool, person: Person | None) -> dict[str, Any]:
    """Stopping everything needs only an authenticated person; letting it run again needs a decider."""
    if on:
        if person is None or not person.name:
            raise Refused("turning the kill switch on needs an authenticated person")
    else:
        require(settings, person, "turn the kill switch off")
    await store_kill_switch(on, person.name, pool=pool)  # type: ignore[union-attr]
    return await kill_switch(pool, settings)


async def list_patterns(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    from elk_resolver.events.classify import PatternSet

    rows = await pool.fetch(queries().patterns_all)
    invalid = dict(PatternSet(r for r in rows if r["disabled_at"] is None).invalid)
    return [
        {**dict(r), "state": "disabled" if r["disabled_at"] else ("invalid" if r["id"] in invalid else "enabled"),
         "invalid_reason": invalid.get(r["id"])}
        for r in rows
    ]


def _changer(person: Person | None, what: str) -> Person:
    if person is None or not person.name:
        raise Refused(f"{what} needs an authenticated person")
    return person


async def set_pattern_enabled(pool: asyncpg.Pool, pattern_id: int, enabled: bool, person: Person | None) -> str:
    person = _changer(person, "changing a pattern")
    name = await pool.fetchval(queries().patterns_set_disabled, pattern_id, not enabled, person.name)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


async def set_pattern_auto_resolve(pool: asyncpg.Pool, settings: Settings, pattern_id: int, on: bool,
                                   person: Person | None) -> str:
    """Allow or forbid automatic remediation of a pattern's errors: read at decision time, so it
    holds from the next decision on. Turning it on lets the service act without a person, so it
    is for deciders; anyone signed in may turn it off."""
    person = require(settings, person, "turn auto-resolve on") if on else _changer(person, "changing a pattern")
    name = await pool.fetchval(queries().patterns_set_auto_resolve, pattern_id, on, person.name)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


async def add_pattern(pool: asyncpg.Pool, person: Person | None, name: str, regex: str, category: str,
                      priority: int, auto_resolve: bool, *, fingerprint_fields: list[str] | None = None) -> int:
    from elk_resolver.events.classify import PatternRow, PatternSet

    person = _changer(person, "adding a pattern")
    probe = PatternSet([PatternRow(0, name, regex, category, priority)])
    if probe.invalid:
        raise Refused(f"regex refused: {probe.invalid[0][1]}")
    async with pool.acquire() as conn, conn.transaction():
        new_id = await conn.fetchval(queries().patterns_add, name, regex, category, priority, auto_resolve,
                                     person.name)
        if fingerprint_fields:
            await conn.execute(queries().patterns_set_fingerprint_fields, new_id, fingerprint_fields, person.name)
    return new_id


async def set_pattern_fingerprint_fields(pool: asyncpg.Pool, pattern_id: int, fields: list[str] | None,
                                         person: Person | None) -> str:
    person = _changer(person, "changing a pattern")
    name = await pool.fetchval(queries().patterns_set_fingerprint_fields, pattern_id, fields, person.name)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


@dataclass
class PatternTest:
    pattern: dict[str, Any] | None
    error_type: str
    message: str
    template: str
    own_hash: str
    hash: str  # where it counts: its own hash, or the stored error a learned alias sends it to
    fingerprint_version: str


async def test_message(pool: asyncpg.Pool, settings: Settings, message: str, *, error_type: str | None = None,
                       fingerprint: str | None = None) -> PatternTest:
    """What the ingest stage would make of a message: the same prepare step it runs."""
    import orjson

    from elk_resolver.events.classify import PatternSet
    from elk_resolver.events.masking import SecretMasker
    from elk_resolver.store.alias_cache import AliasCache
    from handlers.ingest import IngestConfig, RawRecord, prepare_batch

    rows = [r for r in await pool.fetch(queries().patterns_all) if r["disabled_at"] is None]
    event: dict[str, Any] = {"message": message, "log": {"level": "error"}}
    if error_type:
        event["error"] = {"type": error_type}
    config = IngestConfig.from_settings(settings)
    if fingerprint:
        config = IngestConfig(config.max_record_bytes, fingerprint, config.id_field, config.id_header)
    aliases = AliasCache(pool, merge_every_s=None)
    await aliases.refresh()
    batch = prepare_batch([RawRecord(orjson.dumps(event))], patterns=PatternSet(rows),
                          masker=SecretMasker(settings.mask_extra_patterns), config=config, aliases=aliases.current)
    if batch.dead_letters:
        raise Refused(f"the message cannot be an event: {batch.dead_letters[0].reason}")
    error = next(iter(batch.errors.values()))
    p = error.pattern
    pattern = None if p is None else {"id": p.id, "name": p.pattern_name, "regex": p.pattern_regex,
                                      "priority": p.priority, "auto_resolve": p.auto_resolve}
    return PatternTest(pattern, error.error_type, error.message, error.template, error.own_hash, error.hash,
                       error.version)
