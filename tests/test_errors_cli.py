"""``errors show/merge/split``, ``patterns fingerprint`` and the alias ``patterns test`` shows."""

from __future__ import annotations

import pytest

from elk_resolver.cli import main
from elk_resolver.merge_pass import run_merge_pass
from tests.test_merging import TENANTS, ingest


@pytest.fixture
def cli(monkeypatch, capsys, database_url):
    monkeypatch.setenv("ELK_RESOLVER_DATABASE_URL", database_url)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
async def merged(pool):
    await ingest(pool, [f"quota exceeded for {t} tenant" for t in TENANTS[:-1]])
    await run_merge_pass(pool)
    return await pool.fetch("SELECT id FROM error_logs ORDER BY id")


def test_show_merge_split_and_patterns_test(cli, merged):
    canonical, member = merged[0]["id"], merged[2]["id"]
    code, out, err = cli("errors", "show", str(canonical))
    assert code == 0, err
    assert "template:    quota exceeded for <*> tenant" in out
    assert "fingerprint: message template" in out
    assert f"members ({len(TENANTS) - 2})" in out and "merge pass: token 3 took" in out

    code, out, _ = cli("patterns", "test", f"quota exceeded for {TENANTS[-1]} tenant")
    assert code == 0 and f"alias:      counts on error {canonical} 'quota exceeded for <*> tenant'" in out

    code, out, err = cli("errors", "split", str(member), "--by", "alice")
    assert code == 0, err
    assert "1 occurrences moved back" in out
    code, out, _ = cli("errors", "show", str(member))
    assert "merged into" not in out and "split" in out
    code, out, _ = cli("errors", "merge", str(canonical), str(member), "--by", "bob")
    assert code == 0 and f"error {member} merged into {canonical}" in out
    code, out, _ = cli("errors", "show", str(member))
    assert f"merged into: error {canonical} (merged by bob)" in out
    code, _, err = cli("errors", "merge", str(member), str(canonical))
    assert code != 0 and "merged into" in err


def test_patterns_fingerprint_sets_and_validates_fields(cli):
    code, out, err = cli("patterns", "fingerprint", "1", "pattern,namespace,workload")
    assert code == 0, err
    assert "fingerprints its errors from pattern,namespace,workload" in out
    code, out, _ = cli("patterns", "test", "CrashLoopBackOff: back-off restarting pod web-7d9f8b6c5-x2k4q")
    assert "rule pattern=1 namespace= workload=" in out and "(rule)" in out
    code, _, err = cli("patterns", "fingerprint", "1", "pattern,colour")
    assert code != 0 and "unknown fingerprint field 'colour'" in err
