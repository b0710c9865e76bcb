"""Properties of what the console and the CLI show (issue 26), each searched for a counterexample
by Hypothesis: every switch a person makes leaves exactly its audit row; paging through runs
and dry runs shows each exactly once, newest first, whatever their times; a solution's values
are read back from what was rendered; an approval names the object its stored request is
bound to; the chart's axes hold every bar."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elk_resolver.actions.playbooks import fill_loosely
from elk_resolver.actions.targets import target_of_command
from elk_resolver.console import charts
from elk_resolver.operations import controls, reading
from elk_resolver.operations.people import Person
from elk_resolver.operations.solution_view import bound_object, values_from_render, view
from handlers.execute import utc_naive
from tests.support.db_thread import DbThread

PEOPLE = st.sampled_from([Person("alice"), Person("bob"), Person("carol")])
PLAYBOOKS = ["pod-crashloopbackoff-restart", "elasticsearch-read-only-index"]
OPS = st.one_of(
    st.tuples(st.just("kill"), st.booleans(), PEOPLE),
    st.tuples(st.just("playbook"), st.sampled_from(PLAYBOOKS), st.booleans(), PEOPLE),
    st.tuples(st.just("enable"), st.sampled_from([1, 2]), st.booleans(), PEOPLE),
    st.tuples(st.just("auto"), st.sampled_from([1, 2]), st.booleans(), PEOPLE),
)
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def test_every_switch_leaves_exactly_its_audit_row(settings, database_url):  # noqa: F811 - pytest's settings
    """The kill switch and playbook switches are decisions each time they are set; a pattern's
    enable and auto-resolve switches are changes only when they change something."""
    s = settings.model_copy(update={"console_approvers": []})

    @SLOW
    @given(st.lists(OPS, min_size=1, max_size=8))
    def check(ops) -> None:
        async def apply(pool) -> tuple[list, list]:
            start = await pool.fetchval("SELECT coalesce(max(id), 0) FROM audit_log")
            patterns = {r["id"]: r for r in await pool.fetch("SELECT id, disabled_at, auto_resolve FROM error_patterns")}
            state = {i: {"enabled": r["disabled_at"] is None, "auto": r["auto_resolve"]} for i, r in patterns.items()}
            expected = []
            for op in ops:
                if op[0] == "kill":
                    await controls.set_kill_switch(pool, s, op[1], op[2])
                    expected.append((op[2].name, "kill switch on" if op[1] else "kill switch off", "kill-switch"))
                elif op[0] == "playbook":
                    await controls.switch_playbook(pool, s, op[1], op[2], op[3])
                    expected.append((op[3].name, "playbook enabled" if op[2] else "playbook disabled", f"playbook:{op[1]}"))
                elif op[0] == "enable":
                    await controls.set_pattern_enabled(pool, op[1], op[2], op[3])
                    if state[op[1]]["enabled"] != op[2]:
                        expected.append((op[3].name, "pattern enabled" if op[2] else "pattern disabled", f"pattern:{op[1]}"))
                    state[op[1]]["enabled"] = op[2]
                else:
                    await controls.set_pattern_auto_resolve(pool, s, op[1], op[2], op[3])
                    if state[op[1]]["auto"] != op[2]:
                        expected.append((op[3].name, f"pattern auto-resolve {'on' if op[2] else 'off'}", f"pattern:{op[1]}"))
                    state[op[1]]["auto"] = op[2]
            rows = await pool.fetch("SELECT actor, action, object FROM audit_log WHERE id > $1 ORDER BY id", start)
            return [tuple(r) for r in rows], expected

        got, expected = db.run(apply)
        assert got == expected

    with DbThread(database_url) as db:
        check()


ITEMS = st.lists(st.tuples(st.sampled_from(["run", "dry_run"]), st.integers(0, 6)), min_size=0, max_size=14)


def test_paging_through_runs_and_dry_runs_shows_each_once_newest_first(database_url):
    @SLOW
    @given(ITEMS, st.integers(1, 4), st.sampled_from([None, "dry_run", "success"]))
    def check(items, per_page, status) -> None:
        async def go(pool) -> tuple[list, list]:
            await pool.execute("DELETE FROM execution_history; DELETE FROM decision_log")
            error = await pool.fetchval("SELECT id FROM error_logs LIMIT 1") or await pool.fetchval(
                "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature) "
                "VALUES ('t', 'm', 's', 'h') RETURNING id")
            solution = await pool.fetchval("SELECT id FROM solutions LIMIT 1") or await pool.fetchval(
                "INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands) "
                "VALUES ('h', 'x', 'x', '[]') RETURNING id")
            base = utc_naive().replace(microsecond=0)
            want = []
            for kind, ago in items:  # few distinct times: runs and dry runs share times (and ids)
                at = base - timedelta(seconds=ago)
                if kind == "run":
                    key = await pool.fetchval(
                        "INSERT INTO execution_history (error_log_id, solution_id, execution_status, executed_at, "
                        "executed_by) VALUES ($1, $2, 'success', $3, 'auto-resolver') RETURNING id", error, solution, at)
                else:
                    key = await pool.fetchval(
                        "INSERT INTO decision_log (request_id, decision, reason, decided_at, error_log_id) "
                        "VALUES ('r', 'dry_run', 'dry-run mode', $1, $2) RETURNING id", at, error)
                if status is None or (status == "dry_run") == (kind == "dry_run"):
                    want.append((at, key, kind))
            got = []
            first = await reading.runs(pool, status=status, page=1, per_page=per_page)
            for page in range(1, first["paging"]["last"] + 1):
                rows = (await reading.runs(pool, status=status, page=page, per_page=per_page))["rows"]
                got += [(r["executed_at"], r["id"], "dry_run" if r["dry_run"] else "run") for r in rows]
            return got, want

        got, want = db.run(go)
        assert sorted(got) == sorted(want)  # each exactly once
        assert [g[0] for g in got] == sorted((g[0] for g in got), reverse=True)  # newest first

    with DbThread(database_url) as db:
        check()


NAME = st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)
LITERAL = st.sampled_from([" ", "/", "=", " -n ", ":", ".", "(", "[", "+", "?", "*", "|", "$"])
PIECES = st.lists(st.tuples(st.sampled_from(["index", "pod", "namespace", "deployment"]), LITERAL), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(PIECES, st.fixed_dictionaries({k: NAME for k in ("index", "pod", "namespace", "deployment")}),
       st.sampled_from(["kubectl x ", "clear_read_only_block ", ""]))
def test_a_rendered_commands_values_are_read_back_exactly(pieces, values, head):
    """Whatever the template's literal text (regex metacharacters included, a placeholder used
    twice), the values read back from a render are the values it was filled with."""
    template = head + "".join(f"{{{name}}}{literal}" for name, literal in pieces) + "end"
    rendered = fill_loosely(template, values)
    used = {name for name, _ in pieces}
    assert values_from_render(template, rendered) == {k: v for k, v in values.items() if k in used}
    solution = {"id": 1, "solution_commands": [{"type": "shell", "command": template}], "solution_description": template,
                "execution_count": 0}
    shown = view(solution, error={}, requests=[{"solution_id": 1, "request": {"commands": [{"command": rendered}]}}],
                 catalogue=None)
    assert shown["commands"][0]["command"] == rendered and shown["description"] == rendered
    assert shown["missing"] == [] and shown["never_run"]


KINDS = st.sampled_from(["deployment", "statefulset", "daemonset"])


@settings(max_examples=200, deadline=None)
@given(KINDS, NAME, NAME, st.sampled_from(["rollout restart", "rollout undo"]))
def test_an_approval_names_the_object_its_command_acts_on(kind, name, namespace, verb):
    command = f"kubectl {verb} {kind}/{name} -n {namespace}"
    target, _, _ = target_of_command({"type": "kubectl", "command": command})
    request = {"commands": [{"type": "kubectl", "command": command}], "target": target.as_dict()}
    shown = bound_object(request)
    assert shown["key"] == target.key == f"k8s:{namespace}/{kind}/{name}"
    assert shown["label"] == f"{kind}/{name} -n {namespace}" and shown["label"] in command


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 100_000), min_size=1, max_size=72), st.integers(3, 10))
def test_the_chart_axes_hold_every_bar(counts, labels):
    start = utc_naive().replace(minute=0, second=0, microsecond=0)
    trend = [{"hour": start + timedelta(hours=i), "n": n} for i, n in enumerate(counts)]
    c = charts.hourly(trend, labels=labels)
    assert max(counts) <= c["max"] <= max(counts) * 4 / 3 + 2
    assert all(0 <= b["h"] <= c["plot_h"] and abs(b["y"] + b["h"] - c["plot_h"]) < 0.2 for b in c["bars"])
    assert all(abs(b["h"] - c["plot_h"] * b["n"] / c["max"]) < 0.1 for b in c["bars"] if b["n"])
    assert 1 <= len(c["x_ticks"]) <= labels + 1 and all(0 < t["x"] < 100 for t in c["x_ticks"])
    assert c["y_ticks"][-1] == "0" and c["total"] == sum(counts)
