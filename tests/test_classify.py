import logging
import random
import re
import threading

import pytest

from elk_resolver.events.classify import PatternRow, PatternSet, to_re2_syntax

SAMPLE_ROWS = [
    PatternRow(1, "Pod CrashLoopBackOff", "CrashLoopBackOff.*pod.*", "kubernetes", 1, True),
    PatternRow(2, "Out of Memory", "OutOfMemory|OOMKilled.*", "resource", 2, True),
    PatternRow(3, "Connection Refused", "Connection refused.*port.*", "network", 3, True),
]


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("Back-off restarting failed container: CrashLoopBackOff for pod api-7d9f8-xk2lp", "kubernetes"),
        ("java.lang.OutOfMemoryError: Java heap space", "resource"),
        ("container app terminated: OOMKilled (exit code 137)", "resource"),
        ("dial tcp 10.0.0.7: Connection refused on port 5432", "network"),
    ],
)
def test_design_sample_patterns_classify_matching_messages(message, category):
    hit = PatternSet(SAMPLE_ROWS).match(message)
    assert hit is not None and hit.error_category == category


def test_no_match_is_none():
    ps = PatternSet(SAMPLE_ROWS)
    assert ps.match("user logged in") is None
    assert ps.match("connection refused on port 80") is None  # case-sensitive, as written
    assert PatternSet([]).match("anything") is None


def test_case_insensitive_only_when_the_regex_says_so():
    ps = PatternSet([PatternRow(1, "refused", "(?i)connection refused", "network")])
    assert ps.match("CONNECTION REFUSED") is not None


def test_priority_decides_between_two_matching_patterns():
    rows = [
        PatternRow(1, "generic", "refused", "network", 5, False),
        PatternRow(2, "specific", "Connection refused.*port", "network", 2, True),
    ]
    assert PatternSet(rows).match("Connection refused on port 5432").id == 2
    assert PatternSet(reversed(rows)).match("Connection refused on port 5432").id == 2


def test_id_breaks_priority_ties_and_null_priority_counts_as_five():
    rows = [
        PatternRow(9, "b", "boom", "x", 4),
        PatternRow(7, "a", "boom", "x", 4),
        PatternRow(1, "null priority", "boom", "x", None),
        PatternRow(2, "six", "boom", "x", 6),
    ]
    assert PatternSet(rows).match("boom").id == 7
    ps = PatternSet([r for r in rows if r.priority != 4])
    assert ps.match("boom").id == 1  # NULL = 5 beats 6
    assert [r.id for r in PatternSet(rows).rows] == [7, 9, 1, 2]


def test_error_type_is_tried_only_when_the_message_matches_nothing():
    rows = [
        PatternRow(1, "oom", "OutOfMemoryError", "resource", 1),
        PatternRow(2, "refused", "refused", "network", 2),
    ]
    ps = PatternSet(rows)
    assert ps.match("heap exhausted", "java.lang.OutOfMemoryError").id == 1
    assert ps.match("Connection refused", "java.lang.OutOfMemoryError").id == 2  # message first
    assert ps.match("heap exhausted", None) is None


def test_rows_from_mappings():
    ps = PatternSet(
        [{"id": 4, "pattern_name": "n", "pattern_regex": "x+", "error_category": "c", "priority": None,
          "auto_resolve": False, "created_at": None}]
    )
    assert ps.match("xx") == PatternRow(4, "n", "x+", "c", None, False)


def test_invalid_patterns_are_skipped_logged_once_and_reported(caplog):
    rows = [
        PatternRow(1, "unbalanced", "(oops", "x", 1),
        PatternRow(2, "backreference", r"(a)\1", "x", 1),
        PatternRow(3, "lookahead", r"foo(?=bar)", "x", 1),
        PatternRow(4, "empty", "", "x", 1),
        PatternRow(5, "good", "foo", "x", 9),
    ]
    with caplog.at_level(logging.WARNING, logger="elk_resolver.classify"):
        ps = PatternSet(rows)
    assert [i for i, _ in ps.invalid] == [1, 2, 3, 4]
    assert all(reason for _, reason in ps.invalid)
    records = [r for r in caplog.records if r.name == "elk_resolver.classify"]
    assert len(records) == 4
    assert "id=2" in records[1].getMessage() and "backreference" in records[1].getMessage()
    assert ps.match("foobar").id == 5
    assert len(ps) == 1


def test_python_end_of_text_escape_is_accepted():
    assert to_re2_syntax(r"done\Z") == r"done\z"
    assert to_re2_syntax(r"a\\Z") == r"a\\Z"  # an escaped backslash followed by Z
    ps = PatternSet([PatternRow(1, "end", r"failed\Z", "x")])
    assert ps.match("job failed") is not None
    assert ps.match("job failed twice") is None


def test_catastrophic_backtracking_pattern_returns_promptly():
    ps = PatternSet([PatternRow(1, "evil", r"(a+)+$", "x"), PatternRow(2, "evil2", r"^(\w+\s?)*$", "x")])
    result = {}

    def run():
        result["hit"] = ps.match("a" * 50_000 + "!")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "matching did not finish within 5 s"
    assert result["hit"] is None


# --- property test: the set returns what an ordered loop with Python ``re`` returns --------

_ATOMS = ["a", "b", "c", "ab", "ba", "[ab]", "[^a ]", ".", "\\d", "x"]
_ALPHABET = "abcx1 "


def _random_regex(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        atom = rng.choice(_ATOMS)
        atom += rng.choice(["", "", "*", "+", "?", "{1,2}"])
        parts.append(atom)
    regex = "".join(parts)
    roll = rng.random()
    if roll < 0.15:
        regex = f"{regex}|{rng.choice(_ATOMS)}{rng.choice(_ATOMS)}"
    elif roll < 0.25:
        regex = "^" + regex
    elif roll < 0.35:
        regex = regex + "$"
    elif roll < 0.45:
        regex = "(?i)" + regex.upper()
    elif roll < 0.55:
        regex = f"({regex}).*{rng.choice(_ATOMS)}"
    return regex


def _naive(rows, message, error_type):
    ordered = sorted(rows, key=lambda r: (5 if r.priority is None else r.priority, r.id))
    for text in (message, error_type) if error_type else (message,):
        for row in ordered:
            if re.search(row.pattern_regex, text):
                return row
    return None


def test_same_answer_as_an_ordered_loop_with_python_re():
    rng = random.Random(20240514)
    checked = hits = 0
    for _ in range(200):
        ids = rng.sample(range(1, 1000), rng.randint(1, 40))
        rows = [
            PatternRow(i, f"p{i}", _random_regex(rng), "c", rng.choice([None, 1, 2, 3, 5, 5, 7, 10]))
            for i in ids
        ]
        ps = PatternSet(rows)
        assert ps.invalid == []
        for _ in range(25):
            message = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 30)))
            error_type = rng.choice([None, "", "".join(rng.choice(_ALPHABET) for _ in range(8))])
            expected = _naive(rows, message, error_type)
            assert ps.match(message, error_type) == expected, (message, error_type, rows)
            checked += 1
            hits += expected is not None
    assert hits > checked // 4  # the generator produces plenty of matches to order


def test_same_answer_as_an_ordered_loop_with_three_hundred_patterns():
    rng = random.Random(7)
    rows = [PatternRow(i, f"p{i}", _random_regex(rng), "c", rng.randint(1, 10)) for i in range(1, 301)]
    ps = PatternSet(rows)
    for _ in range(300):
        message = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 200)))
        assert ps.match(message) == _naive(rows, message, None)
