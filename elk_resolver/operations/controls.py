"""The controls a person switches: playbooks on and off, the kill switch, and the patterns
(add, enable, disable, fingerprint fields, and what ingest would make of a message)."""

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


async def playbook_controls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return await list_playbook_controls(pool=pool)


async def switch_playbook(pool: asyncpg.Pool, settings: Settings, name: str, enabled: bool,
                          person: Person | None) -> dict[str, Any]:
    """Off means off: a disabled playbook's stored solutions stop running automatically in every
    executor copy at their next decision."""
    person = require(settings, person, "enable or disable a playbook")
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


async def set_pattern_enabled(pool: asyncpg.Pool, pattern_id: int, enabled: bool, person: Person | None) -> str:
    if person is None or not person.name:
        raise Refused("changing a pattern needs an authenticated person")
    name = await pool.fetchval(queries().patterns_set_disabled, pattern_id, not enabled)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


async def add_pattern(pool: asyncpg.Pool, person: Person | None, name: str, regex: str, category: str,
                      priority: int, auto_resolve: bool, *, fingerprint_fields: list[str] | None = None) -> int:
    from elk_resolver.events.classify import PatternRow, PatternSet

    if person is None or not person.name:
        raise Refused("adding a pattern needs an authenticated person")
    probe = PatternSet([PatternRow(0, name, regex, category, priority)])
    if probe.invalid:
        raise Refused(f"regex refused: {probe.invalid[0][1]}")
    async with pool.acquire() as conn, conn.transaction():
        new_id = await conn.fetchval(queries().patterns_add, name, regex, category, priority, auto_resolve)
        if fingerprint_fields:
            await conn.execute(queries().patterns_set_fingerprint_fields, new_id, fingerprint_fields)
    return new_id


async def set_pattern_fingerprint_fields(pool: asyncpg.Pool, pattern_id: int, fields: list[str] | None,
                                         person: Person | None) -> str:
    if person is None or not person.name:
        raise Refused("changing a pattern needs an authenticated person")
    name = await pool.fetchval(queries().patterns_set_fingerprint_fields, pattern_id, fields)
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
