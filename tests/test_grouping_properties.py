"""Properties of grouping (issue 23): the template is a fixed point and does not move with
the values it claims to abstract; a learned merge never joins templates whose differing
words are constants of other templates."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from elk_resolver.events.fingerprint import normalize
from elk_resolver.events.merging import TemplateRow, plan_merges

WORDS = st.text(string.ascii_lowercase, min_size=2, max_size=8)
NUMBER = st.integers(0, 10**9).map(str)
IP = st.tuples(*[st.integers(0, 255)] * 4).map(lambda p: ".".join(map(str, p)))
HEX = st.integers(16**7, 16**12).map(lambda n: f"{n:x}")
PATH = st.lists(WORDS, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
QUOTED = WORDS.map(lambda w: f'"{w}"')
KEY_VALUE = st.tuples(WORDS, NUMBER).map(lambda kv: f"{kv[0]}={kv[1]}")
GLUED = st.tuples(WORDS, NUMBER).map(lambda p: f"{p[0]}_{p[1]}")
# a value a rule cuts a piece out of: the rest of the token is a name that varies with it
PIECE = st.one_of(
    st.tuples(WORDS, NUMBER, HEX).map(lambda p: f"Vendor-{p[0].capitalize()}~{p[2]}~{p[1]}"),
    st.tuples(WORDS, NUMBER, WORDS).map(lambda p: f"org.{p[0]}.v{p[1]}.{p[2].capitalize()}"),
    st.tuples(WORDS, HEX).map(lambda p: f"{p[0].capitalize()}Monitor@{p[1]}"),
)
TOKEN = st.one_of(WORDS, NUMBER, IP, HEX, PATH, QUOTED, KEY_VALUE, GLUED, PIECE, st.sampled_from(["(", ")", ":", "-", "=", ","]))
MESSAGE = st.lists(TOKEN, min_size=1, max_size=14).map(" ".join)
# values of the classes the rules claim to abstract, each as a whole token (a quoted value
# keeps its quotes: a format that quotes a value always does, so quoted goes with quoted)
VALUE = st.one_of(NUMBER, IP, HEX, PATH, GLUED, PIECE, st.tuples(WORDS, NUMBER).map(lambda p: f"{p[0]}-{p[1]}"))


@settings(max_examples=300, deadline=None)
@given(MESSAGE)
def test_normalize_is_idempotent(message):
    once = normalize(message)
    assert normalize(once) == once


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, min_size=2, max_size=6), st.integers(0, 5), st.one_of(st.tuples(VALUE, VALUE), st.tuples(QUOTED, QUOTED)))
def test_a_template_does_not_move_with_its_values(words, at, values):
    """A value between constant words: any two values of the abstracted classes give one
    template (so one fingerprint)."""
    at = at % (len(words) + 1)
    one, two = values

    def message(value: str) -> str:
        return " ".join(words[:at] + [value] + words[at:])

    assert normalize(message(one)) == normalize(message(two))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(WORDS, min_size=3, max_size=5, unique=True),
    st.lists(st.integers(1, 40), min_size=3, max_size=5),
    st.lists(WORDS, min_size=2, max_size=4),
)
def test_a_merge_never_joins_constants_of_other_templates(values, counts, context):
    """Templates that differ in one word, where each of those words is a constant of another
    template of the error type (``job started`` beside ``worker started ok``), stay apart
    whatever their counts: a closed set, not an identifier."""
    context = [w for w in context if w not in values] or ["unrelated"]
    family = [
        TemplateRow(f"f{i}", "E", ("event", *context, value, "done"), counts[i % len(counts)])
        for i, value in enumerate(values)
    ]
    elsewhere = [TemplateRow(f"o{i}", "E", ("other", value, "here", "x" * (i + 1)), 1) for i, value in enumerate(values)]
    merges = plan_merges(elsewhere + family)
    joined = {key for m in merges for key in (m.canonical, *m.members)}
    assert not joined & {row.key for row in family}


def test_the_shrunk_examples_stay_fixed():
    # the examples the properties' broken variants shrank to (see the report of issue 23)
    assert normalize(normalize("a_0")) == normalize("a_0") == "<*>"
    assert normalize('aa "aa"') == 'aa "<*>"'
    # a token made whole beside another value: joined as the rules join values
    assert normalize("0 AaMonitor@10000000") == normalize(normalize("0 AaMonitor@10000000")) == "<*>"
