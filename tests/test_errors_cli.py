"""``errors show/merge/split``, ``patterns fingerprint`` and the alias ``patterns test`` shows."""

from __future__ import annotations

import pytest

from elk_resolver.store.merge_pass import run_merge_pass
from tests.test_merging import TENANTS, ingest
from tests.test_ops_cli import cli  # noqa: F401 (the fixture)


@pytest.fixture
def run(cli, database_url):
    """The CLI (test_ops_cli's fixture) against this test's database."""
    return lambda *argv: cli(*argv, env={"ELK_RESOLVER_DATABASE_URL": database_url})


@pytest.fixture
async def merged(pool):
    await ingest(pool, [f"quota exceeded for {t} tenant" for t in TENANTS[:-1]])
    await run_merge_pass(pool)
    return await pool.fetch("SELECT id FROM error_logs ORDER BY id")


def test_show_merge_split_and_patterns_test(run, merged):
    canonical, member = merged[0]["id"], merged[2]["id"]
    code, out, err = run("errors", "show", str(canonical))
    assert code == 0, err
    assert "template:    quota exceeded for <*> tenant" in out
    assert "fingerprint: message template" in out
    assert f"members ({len(TENANTS) - 2})" in out and "merge pass: token 3 took" in out

    code, out, _ = run("patterns", "test", f"quota exceeded for {TENANTS[-1]} tenant")
    assert code == 0 and f"alias:      counts on error {canonical} 'quota exceeded for <*> tenant'" in out

    code, out, err = run("errors", "split", str(member), "--by", "alice")
    assert code == 0, err
    assert "1 occurrences moved back" in out
    code, out, _ = run("errors", "show", str(member))
    assert "merged into" not in out and "split" in out
    code, out, _ = run("errors", "merge", str(canonical), str(member), "--by", "bob")
    assert code == 0 and f"merged error {member} (" in out and f") into error {canonical} (" in out
    code, out, _ = run("errors", "show", str(member))
    assert f"merged into: error {canonical} (merged by bob)" in out
    code, _, err = run("errors", "merge", str(member), str(canonical))
    assert code != 0 and "merged into" in err


def test_patterns_fingerprint_sets_and_validates_fields(run):
    code, out, err = run("patterns", "fingerprint", "1", "pattern,namespace,workload")
    assert code == 0, err
    assert "fingerprints its errors from pattern,namespace,workload" in out
    code, out, _ = run("patterns", "test", "CrashLoopBackOff: back-off restarting pod web-7d9f8b6c5-x2k4q")
    assert "rule pattern=1 namespace= workload=" in out and "(rule)" in out
    code, _, err = run("patterns", "fingerprint", "1", "pattern,colour")
    assert code != 0 and "unknown fingerprint field 'colour'" in err
