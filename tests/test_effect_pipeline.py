"""Issue 25, points 1, 3 and 5 through the real pipeline (broker, PostgreSQL, live mode, the
recording kubectl): an observe-only trial leaves eligible cases alone but never in a critical
namespace and never more than N per window; the grace period defers the first action and leaves
alone the cases whose error stopped inside it; every request gets one outcome; the report and
the console page show it.
"""

from __future__ import annotations

import pytest

import handlers.execute
from tests.support import effect_world as ew
from tests.support.fake_kubectl import write_fake_kubectl

WINDOW, HORIZON = 1.0, 4.0


async def test_a_trial_never_leaves_a_critical_case_alone_nor_more_than_n_per_window(settings, pool, tmp_path, monkeypatch, capsys):
    world = ew.make_world(per_kind=4, seed=3, horizon=HORIZON, spread_s=1.0, kinds=(ew.OOM,))
    for i, o in enumerate(world.objects):
        o.namespace = "payments" if i % 2 else "shop"
    monkeypatch.setattr(handlers.execute, "_trial_draw", lambda req: 0.0)  # every draw would leave the case alone
    fake = write_fake_kubectl(tmp_path)
    live = ew.settings_for(settings, fake, window=WINDOW, horizon=HORIZON).model_copy(
        update={"critical_namespaces": ["payments"], "trial_max_per_window": 1})
    await ew.play(world, live, pool, fake, trial=1.0)

    rows = await pool.fetch("SELECT namespace, acted, not_acted, trial_arm, state FROM request_outcomes")
    assert len(rows) == len(world.objects) == len({r for r in await pool.fetch("SELECT request_id FROM request_outcomes")})
    left = [r for r in rows if r["not_acted"] == "observe_only"]
    assert len(left) == 1 and left[0]["namespace"] == "shop" and left[0]["trial_arm"] == "observe"
    # the critical namespace's cases, and the shop case beyond the cap, were acted on and drew nothing
    assert all(r["acted"] and r["trial_arm"] is None for r in rows if r["namespace"] == "payments")
    assert all(r["state"] in ("resolved", "unresolved") for r in rows)
    draws = await pool.fetch("SELECT namespace, arm FROM trial_draws")
    assert [tuple(d) for d in draws] == [("shop", "observe")]

    # point 5: the report and the playbook's page
    from elk_resolver.cli.main import _print_effect

    await _print_effect(pool, live, scope="playbook", as_json=False)
    out = capsys.readouterr().out
    assert "out-of-memory-restart" in out and "left alone" in out and "UPLIFT" in out


async def test_the_grace_period_defers_the_first_action_and_leaves_alone_errors_that_stopped(settings, pool, tmp_path):
    world = ew.make_world(per_kind=6, seed=4, horizon=HORIZON, spread_s=0.5, kinds=(ew.CRASHLOOP,))
    fake = write_fake_kubectl(tmp_path)
    grace = 2.5
    live = ew.settings_for(settings, fake, window=WINDOW, horizon=HORIZON).model_copy(update={"grace_s": grace, "settle_s": 0})
    await ew.play(world, live, pool, fake, trial=None)

    rows = {r["target_key"]: r for r in await pool.fetch(
        "SELECT target_key, started_at, acted, acted_at, not_acted, not_acted_reason, state FROM request_outcomes")}  # fmt: skip
    assert set(rows) == {o.key for o in world.objects}
    for o in world.objects:
        r = rows[o.key]
        if o.self_stop is not None:  # stopped within 1.2 s: inside the grace period, nothing ran
            assert not r["acted"] and r["not_acted"] == "stopped_by_itself", dict(r)
            assert "grace_s/2" in r["not_acted_reason"]
        else:  # still failing when the grace ended: acted on, not before it
            assert r["acted"], dict(r)
            assert (r["acted_at"] - r["started_at"]).total_seconds() >= grace - 0.05
    share = await pool.fetchval("SELECT resolved_in_grace FROM action_effects WHERE scope = 'playbook' AND comparison = 'left alone'")
    assert share == pytest.approx(sum(o.self_stop is not None for o in world.objects) / len(world.objects))


async def test_starting_and_stopping_a_trial_is_in_the_audit_log_with_its_person(pool):
    """A trial leaves cases alone: a person's decision, audited like a playbook switch (0140)."""
    from handlers.effect import start_trial, stop_trial

    await start_trial("out-of-memory-restart", 0.25, "alice", pool=pool)
    await start_trial("out-of-memory-restart", 0.5, "bob", pool=pool)  # a new fraction: started again
    assert await stop_trial("out-of-memory-restart", "carol", pool=pool)
    assert not await stop_trial("out-of-memory-restart", "carol", pool=pool)  # nothing running: no row
    rows = await pool.fetch("SELECT actor, action, object, details->>'fraction' AS fraction FROM audit_log "
                            "WHERE object = 'playbook:out-of-memory-restart' ORDER BY id")
    assert [(r["actor"], r["action"], r["fraction"]) for r in rows] == [
        ("alice", "trial started", "0.25"), ("bob", "trial started", "0.5"), ("carol", "trial stopped", "0.5")]
