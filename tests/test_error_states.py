"""Error states (issue 26, item 6): open, acknowledged, resolved, snoozed until, muted, with who
and when and an owner and notes, kept when a new occurrence arrives; a resolved error that
occurs again reopens and says so, a snooze that ends reopens, a muted error never notifies;
every change is in the audit log.

The promise is checked as a state machine over the real ingest handler and PostgreSQL: people
set states, occurrences arrive (new ones and redeliveries), snoozes end, the monitor's pass
runs, in any order; after every step the state read back is the model's, messages are held
back exactly while muted or snoozed, and each change left one audit row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from elk_resolver import notify
from elk_resolver.operations import triage
from elk_resolver.operations.people import Person, Refused
from elk_resolver.store.error_states import reopen_due, silenced
from handlers.execute import utc_naive
from tests.support.db_thread import DbThread
from tests.test_merging import ingest

MESSAGE = "disk quota exceeded on volume data-7"
PEOPLE = [Person("alice"), Person("bob"), Person("carol")]


async def _state(pool, error_id: int) -> dict:
    row = await pool.fetchrow("SELECT * FROM error_state_now WHERE error_log_id = $1", error_id)
    return dict(row) if row else {"state": "open", "reopen_reason": None}


class ErrorStates(RuleBasedStateMachine):
    """One error; the model: the state a person set, the occurrence count it was set at, whether
    a snooze ended, the count now, and how many audit rows the changes left."""

    db: DbThread  # set by the test

    @initialize()
    def an_error(self) -> None:
        self.db.run(lambda pool: pool.execute("TRUNCATE error_logs, error_occurrences, error_states, error_notes, "
                                              "audit_log RESTART IDENTITY CASCADE"))
        self.seq = 0
        self._occur()
        self.error_id = self.db.run(lambda pool: pool.fetchval("SELECT id FROM error_logs"))
        self.recorded, self.at_change, self.snooze_ended, self.audit_rows = "open", None, False, 0
        self.reopened_by_service = 0

    def _occur(self, again: bool = False) -> None:
        if not again:
            self.seq += 1
        n = self.seq
        self.db.run(lambda pool: ingest(pool, [MESSAGE], start=n))

    def count(self) -> int:
        return self.db.run(lambda pool: pool.fetchval("SELECT occurrence_count FROM error_logs WHERE id = $1",
                                                      self.error_id))

    def expected(self) -> str:
        if self.recorded == "resolved" and self.count() > self.at_change:
            return "open"
        if self.recorded == "snoozed" and self.snooze_ended:
            return "open"
        return self.recorded

    # the states that change with time and occurrences come up more often than the others
    @rule(state=st.sampled_from(["resolved", "snoozed", "resolved", "snoozed", *triage.STATES]),
          who=st.sampled_from(PEOPLE), hours=st.integers(1, 48))
    def a_person_sets_a_state(self, state: str, who: Person, hours: int) -> None:
        until = utc_naive() + timedelta(hours=hours) if state == "snoozed" else None
        row = self.db.run(lambda pool: triage.set_state(pool, self.error_id, state, who, until=until))
        assert row["changed_by"] == who.name
        changed = state != self.recorded or state == "snoozed"  # a new snooze time is a change too
        self.audit_rows += 1 if changed else 0
        self.recorded, self.at_change, self.snooze_ended = state, self.count(), False

    @rule()
    def a_new_occurrence_arrives(self) -> None:
        self._occur()

    @rule()
    def an_occurrence_is_redelivered(self) -> None:
        before = self.count()
        self._occur(again=True)
        assert self.count() == before  # counted once: a redelivery changes nothing

    @rule()
    def the_snooze_ends(self) -> None:
        if self.recorded == "snoozed":
            self.db.run(lambda pool: pool.execute(
                "UPDATE error_states SET snoozed_until = LOCALTIMESTAMP - INTERVAL '1 second' WHERE error_log_id = $1",
                self.error_id))
            self.audit_rows += 1  # the audit log says the snooze moved
            self.snooze_ended = True

    @rule()
    def the_monitor_passes(self) -> None:
        expected = self.expected()
        reopened = self.db.run(reopen_due)
        if expected == "open" and self.recorded in ("resolved", "snoozed"):
            assert [r["error_log_id"] for r in reopened] == [self.error_id]
            self.recorded, self.at_change, self.snooze_ended = "open", self.count(), False
            self.audit_rows += 1
            self.reopened_by_service += 1
        else:
            assert reopened == []

    @rule(who=st.sampled_from(PEOPLE), owner=st.sampled_from(["alice", "bob", ""]))
    def a_person_chooses_the_owner_and_writes_a_note(self, who: Person, owner: str) -> None:
        before = self.db.run(lambda pool: pool.fetchval("SELECT owner FROM error_states WHERE error_log_id = $1",
                                                        self.error_id))
        self.db.run(lambda pool: triage.set_owner(pool, self.error_id, owner, who))
        self.db.run(lambda pool: triage.add_note(pool, self.error_id, f"looked at it ({self.seq})", who))
        self.audit_rows += 1 + (1 if (owner or None) != before else 0)

    @invariant()
    def the_state_read_is_the_models(self) -> None:
        if not hasattr(self, "error_id"):
            return
        state = self.db.run(lambda pool: _state(pool, self.error_id))
        expected = self.expected()
        assert state["state"] == expected, (state, self.recorded, self.at_change, self.count())
        if expected == "open" and self.recorded in ("resolved", "snoozed"):
            assert state["reopen_reason"] and state["reopen_reason"].startswith("reopened: ")

    @invariant()
    def messages_are_held_back_exactly_while_muted_or_snoozed(self) -> None:
        if hasattr(self, "error_id"):
            held = self.db.run(lambda pool: silenced(pool, self.error_id))
            assert held == (self.expected() in ("muted", "snoozed"))

    @invariant()
    def every_change_left_one_audit_row(self) -> None:
        if not hasattr(self, "error_id"):
            return
        rows = self.db.run(lambda pool: pool.fetch("SELECT actor, action, details FROM audit_log WHERE error_log_id = $1",
                                                   self.error_id))
        assert len(rows) == self.audit_rows, [tuple(r) for r in rows]
        by_service = [r for r in rows if r["actor"] == "service"]
        assert len(by_service) == self.reopened_by_service
        assert all(r["action"] == "error open" and r["details"]["reopened"].startswith("reopened: ") for r in by_service)


def test_error_states_keep_through_occurrences_reopen_when_due_and_are_audited(database_url):
    with DbThread(database_url) as db:
        ErrorStates.db = db
        machine = ErrorStates.TestCase
        machine.settings = settings(max_examples=40, stateful_step_count=12, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
        machine().runTest()


async def test_a_resolved_error_that_recurs_reopens_and_says_so(pool):
    """The example the machine shrinks to, kept: resolve, one new occurrence, read, pass."""
    await ingest(pool, [MESSAGE], start=1)
    error_id = await pool.fetchval("SELECT id FROM error_logs")
    await triage.set_state(pool, error_id, "resolved", Person("bob"))
    assert (await _state(pool, error_id))["state"] == "resolved"
    await ingest(pool, [MESSAGE], start=1)  # the same event again: not a recurrence
    assert (await _state(pool, error_id))["state"] == "resolved"
    await ingest(pool, [MESSAGE], start=2)
    state = await _state(pool, error_id)
    assert state["state"] == "open" and state["reopen_reason"] == "reopened: 1 new occurrence(s) since bob resolved it"
    assert [r["error_log_id"] for r in await reopen_due(pool)] == [error_id]
    assert await reopen_due(pool) == []  # once
    row = await pool.fetchrow("SELECT actor, action FROM audit_log WHERE actor = 'service'")
    assert tuple(row) == ("service", "error open")


async def test_a_muted_error_never_notifies_and_a_snoozed_one_after_its_snooze(settings, pool):
    s = settings.model_copy(update={"notify_webhook_url": "http://127.0.0.1:9/hook", "notify_webhook_secret": "x"})
    await ingest(pool, [MESSAGE], start=1)
    error_id, hash_ = (await pool.fetchrow("SELECT id, hash_signature FROM error_logs"))
    solution = await pool.fetchval("INSERT INTO solutions (error_hash, solution_type, solution_description, "
                                   "solution_commands) VALUES ($1, 'x', 'x', '[]') RETURNING id", hash_)
    approvals = []
    for n in range(3):
        await pool.execute("INSERT INTO execution_requests (request_id, hash_signature, claimed_by) VALUES ($1, $2, 't')",
                           f"r{n}", hash_)
        approvals.append(await pool.fetchval(
            "INSERT INTO approvals (request_id, hash_signature, solution_id, request, reason, expires_at) "
            "VALUES ($1, $2, $3, '{}', 'why', LOCALTIMESTAMP + INTERVAL '1 hour') RETURNING id", f"r{n}", hash_, solution))
    await triage.set_state(pool, error_id, "muted", Person("alice"))
    assert await notify.pending_approval(pool, s, approvals[0]) == 0
    assert await notify.sweep(pool, s) == 0
    await triage.set_state(pool, error_id, "snoozed", Person("alice"), until=utc_naive() + timedelta(hours=1))
    assert await notify.pending_approval(pool, s, approvals[1]) == 0
    await pool.execute("UPDATE error_states SET snoozed_until = LOCALTIMESTAMP - INTERVAL '1 second'")
    assert await notify.pending_approval(pool, s, approvals[1]) == 1  # the snooze ended
    assert await notify.sweep(pool, s) == 2  # and the others are announced now
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 3


async def test_states_refuse_what_makes_no_sense(pool):
    await ingest(pool, [MESSAGE], start=1)
    error_id = await pool.fetchval("SELECT id FROM error_logs")
    for kwargs, why in (({"state": "gone"}, "unknown state"), ({"state": "snoozed"}, "needs a time"),
                        ({"state": "snoozed", "until": utc_naive() - timedelta(minutes=1)}, "in the future"),
                        ({"state": "snoozed", "until": utc_naive() + timedelta(days=400)}, "at most 90 days")):
        with pytest.raises(Refused, match=why):
            await triage.set_state(pool, error_id, person=Person("a"), **kwargs)
    with pytest.raises(Refused, match="authenticated person"):
        await triage.set_state(pool, error_id, "resolved", None)
    with pytest.raises(Refused, match="no error with id 999"):
        await triage.set_state(pool, 999, "resolved", Person("a"))
    await triage.add_note(pool, error_id, "tried it with password=hunter2", Person("a"))
    assert "hunter2" not in await pool.fetchval("SELECT body FROM error_notes")
