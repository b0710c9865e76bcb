"""The one-pass check over a record's JSON text (``record_is_clean``) that lets ingest skip
masking: whenever it says "clean", masking every part of the decoded record changes nothing,
and ingest stores exactly what it stores when it masks everything."""

from __future__ import annotations

import random
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bench.events import generate, pattern_rows
from elk_resolver.events.classify import PatternSet
from elk_resolver.events.masking import SecretMasker, is_secret_key, mask_obj, mask_text, record_is_clean
from handlers.ingest import PreparedBatch, prepare_into
from tests.test_masking import test_key_value_forms_mask_only_the_value as _kv_test
from tests.test_masking_shapes import ISSUE21
from tests.test_masking_shapes import test_shape_is_masked_and_its_context_kept as _shape_test


def _param_texts(test) -> list[str]:
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return [case[0] for case in mark.args[1]]


SECRET_TEXTS = _param_texts(_shape_test) + _param_texts(_kv_test) + [
    "upstream sent Bearer abcdef123== back",
    "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig here",
    "key AKIAIOSFODNN7EXAMPLE used",
    "card 4111 1111 1111 1111 declined",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----",
]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _holds(value: bytes) -> None:
    """The property: a clean record has nothing masking would change."""
    if not record_is_clean(value):
        return
    decoded = orjson.loads(value)
    assert mask_obj(decoded) is decoded, value
    for s in _strings(decoded):
        assert mask_text(s) == s, (s, value)
        assert not is_secret_key(s), (s, value)


@pytest.mark.parametrize("text", SECRET_TEXTS)
@pytest.mark.parametrize("where", ["message", "nested", "in_json_message", "key"])
def test_a_secret_anywhere_in_the_record_is_never_called_clean(text, where):
    if where == "message":
        record = {"message": text, "log.level": "error"}
    elif where == "nested":
        record = {"message": "x", "labels": {"a": [1, {"b": text}]}}
    elif where == "in_json_message":  # a JSON document inside the message: escaped quotes
        record = {"message": orjson.dumps({"payload": text}).decode()}
    else:
        record = {"message": "x", text: 1}
    value = orjson.dumps(record)
    changed = mask_obj(orjson.loads(value)) != orjson.loads(value)
    if changed:
        assert not record_is_clean(value), value
    _holds(value)


@pytest.mark.parametrize(
    "key",
    ["password", "db-pass-word", "X_Api_Key", "p a s s w d", "AUTH", "_pin_", "cvv", "sessionId", "Cookie",
     "to\u212aen",  # KELVIN SIGN lower-cases to an ASCII k
     "p\u0130n",  # LATIN CAPITAL I WITH DOT lower-cases to i + a combining dot
     'pass"word',  # a key with an escaped quote
     # issue 21: fullwidth letters, zero-width characters, other languages
     "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "pass\u200bword", "to\u2060ken", "Passwort",
     "contraseña", "пароль", "db_senha", "\uff21\uff30\uff29_\uff2b\uff25\uff39"],
)
def test_secret_keys_in_any_spelling_are_never_called_clean(key):
    assert is_secret_key(key)
    value = orjson.dumps({"message": "nothing here", "cfg": {key: "hunter2"}})
    assert not record_is_clean(value)
    env = orjson.dumps({"message": "x", "env": [{"name": key, "value": "hunter2"}]})
    assert not record_is_clean(env)


def test_escapes_that_hide_text_are_never_called_clean():
    assert not record_is_clean(b'{"message": "pass\\u0077ord=hunter2"}')
    assert not record_is_clean(b'{"message": "a\\\\b"}')  # an escaped backslash
    assert not record_is_clean(b'{"message": "Bearer\\tabc123"}')  # a tab decoded from \t
    assert record_is_clean(b'{"message": "line one\\nline \\"two\\" \\/ end"}')


def test_extra_patterns_turn_the_one_pass_off():
    assert not SecretMasker([r"SSN-\d{3}"]).record_is_clean(b'{"message": "plain"}')
    assert SecretMasker().record_is_clean(b'{"message": "plain"}')


def _mutated_records(n: int, seed: int) -> list[bytes]:
    """Benchmark events, and the same events with a secret text or a secret key spliced in."""
    rng = random.Random(seed)
    out = []
    for value in generate(n, seed=seed).records:
        out.append(value)
        record = orjson.loads(value)
        roll = rng.random()
        if roll < 0.3:
            record["message"] = record["message"] + " " + rng.choice(SECRET_TEXTS)
        elif roll < 0.45:
            record.setdefault("labels", {})[rng.choice(["db_password", "Api-Key", "auth", "note"])] = "v4lue"
        elif roll < 0.6:
            record["event.original"] = orjson.dumps(record).decode()  # escaped JSON, as Logstash keeps it
        out.append(orjson.dumps(record))
    return out


def test_clean_records_hold_nothing_to_mask():
    for value in _mutated_records(1500, seed=21):
        _holds(value)


def _prepared(values: list[bytes], masker) -> PreparedBatch:
    batch = PreparedBatch()
    records = [
        SimpleNamespace(value=v, headers=[], topic="raw", partition=0, offset=i, timestamp=1_764_547_200_000 + i)
        for i, v in enumerate(values)
    ]
    prepare_into(batch, records, patterns=PatternSet(pattern_rows(30)), masker=masker)
    return batch


class _NeverClean(SecretMasker):
    __slots__ = ()

    def record_is_clean(self, value: bytes) -> bool:
        return False


def test_ingest_stores_the_same_with_and_without_the_one_pass():
    values = _mutated_records(1500, seed=22)
    fast, slow = _prepared(values, SecretMasker()), _prepared(values, _NeverClean())
    assert fast.errors.keys() == slow.errors.keys()
    fields = ("message", "template", "source_system", "stack_trace", "raw_json", "context", "error_type")
    for h, e in fast.errors.items():
        for field in fields:
            assert getattr(e, field) == getattr(slow.errors[h], field), (field, h)
    assert fast.occurrences == slow.occurrences
    # and the mutations made both paths mask something
    assert any("***" in e.message or "***" in e.raw_json for e in fast.errors.values())


def test_a_secret_after_a_megabyte_of_near_misses_is_still_found():
    """RE2 answers "no match" when its DFA runs out of memory; the sets must have room for a
    hostile record (every secret word's letters and separators, shuffled) up to the size limit."""
    rng = random.Random(3)
    alphabet = "passwordtokensecretcookiecredentialsessionidamzsignatureapikeyauthorization_-. :=AKIAeyJ0123456789"
    noise = "".join(rng.choice(alphabet) for _ in range(1_000_000))
    assert not record_is_clean(orjson.dumps({"message": noise + " AKIAIOSFODNN7EXAMPLE end"}))
    letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-_. ") for _ in range(1_000_000))
    assert not record_is_clean(orjson.dumps({"message": letters, "pass_word": "x"}))


# --- issue 21: the new shapes, anywhere a record can hold them ------------------------------------

_WORDS = st.sampled_from(["error", "timeout", "db", "=", ":", "?", "&", "/", "\\", '"', " ", "\n", "\t", "-p",
                          "key", "auth", "ümlaut", "пароль", "\u200b", "\uff1d", "AKIA", "sk-", "hvs.", "mysql"])
_PLACES = ("message", "nested", "key", "escaped", "url", "stack", "list")


def _place(where: str, text: str, noise: str) -> dict:
    if where == "message":
        return {"message": f"{noise} {text} {noise}", "log": {"level": "error"}}
    if where == "nested":
        return {"message": noise, "labels": {"a": [noise, {"b": text}]}}
    if where == "key":
        return {"message": noise, "fields": {text: noise}}
    if where == "escaped":  # a JSON document kept as a string (Logstash's event.original)
        return {"message": noise, "event": {"original": orjson.dumps({"msg": text, "n": noise}).decode()}}
    if where == "url":
        return {"message": f"GET https://api.example.com/v1/x?q={noise}&note={text} 500"}
    if where == "stack":
        return {"message": "boom", "error": {"stack_trace": f"java.lang.IllegalStateException: {text}\n\tat a.B.c(B.java:1)"}}
    return {"message": noise, "tags": [noise, text]}


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.sampled_from(ISSUE21), st.sampled_from(_PLACES), st.lists(_WORDS, max_size=6).map("".join))
def test_a_new_shape_is_masked_wherever_it_stands_and_never_called_clean(shape, where, noise):
    text, _, secret = shape
    value = orjson.dumps(_place(where, text, noise))
    decoded = orjson.loads(value)
    masked = orjson.dumps(mask_obj(decoded)).decode()
    if where != "key":  # a key is masked by its value, not its name
        assert secret not in masked and orjson.dumps(secret).decode()[1:-1] not in masked, masked
    assert not record_is_clean(value)
    _holds(value)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=4), st.sampled_from(
    ["password", "passwort", "contraseña", "пароль", "token", "secret"]), st.sampled_from(
    ["", "\u200b", "\u2060", "-", " ", "\ufeff"]), st.booleans())
def test_a_secret_key_in_any_spelling_never_passes_the_record_check(fields, word, separator, wide):
    """Keys NFKC-normalised (fullwidth), with zero-width or other separators between letters."""
    if wide:
        word = "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" else c for c in word)
    key = separator.join(word)
    assert is_secret_key(key)
    value = orjson.dumps({"message": "x", **fields, "cfg": {key: "hunter2"}})
    assert not record_is_clean(value)
    _holds(value)


def test_fullwidth_key_found_by_the_property_stays_caught():
    # what the property found with the record check reading only the ASCII text
    assert not record_is_clean(orjson.dumps({"message": "x", "cfg": {"\uff54\uff4f\uff4b\uff45\uff4e": "v"}}))


def test_a_secret_standing_as_a_key_is_masked_too():
    """Keys were stored as they came: {"ghp_...": 1} reached raw_log_data (issue 21)."""
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    record = {"message": "x", "labels": {token: 1, "mysql -uroot -pHunter2pw": "cmd", "plain": "ok"}}
    masked = orjson.dumps(mask_obj(record)).decode()
    assert token not in masked and "Hunter2pw" not in masked and '"plain":"ok"' in masked
    assert not record_is_clean(orjson.dumps(record))
