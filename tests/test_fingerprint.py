import re

import pytest

from elk_resolver.events.fingerprint import VERSIONS, Fingerprint, fingerprint, normalize


def test_versions_and_default_is_template():
    assert VERSIONS == ("exact", "template")
    assert fingerprint("E", "x").version == "template"


@pytest.mark.parametrize(
    "first, second",
    [
        (
            "Back-off restarting failed container api in pod api-7d9f8b6c4-x2kq9",
            "Back-off restarting failed container api in pod api-5c7b9d8f6-q8zzl",
        ),
        (
            "connection refused to 10.0.3.17:5432 after 3 retries",
            "connection refused to 10.0.9.201:6543 after 12 retries",
        ),
        (
            "request 3f2b6c1e-8a7d-4c2b-9e1f-0a1b2c3d4e5f failed at 2024-05-01T12:00:03.123Z",
            "request 9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d failed at 2024-06-11T08:41:59Z",
        ),
        ("timeout after 250 ms on shard 0x1f", "timeout after 3 sec on shard 0xdeadbeef"),
        ("could not open /var/log/app/app-1.log", "could not open /var/log/other/x.log"),
        ("session opened for user alice", "session opened for user bob"),
        ('auth failed for user "postgres"', 'auth failed for user "app"'),
        ("db-1.prod.example.com:5432 unreachable", "10.1.2.3:5432 unreachable"),
        ("Jun 17 07:07:00 disk full", "Jul 3 22:11:12 disk full"),
    ],
)
def test_same_error_with_different_values_has_same_hash(first, second):
    assert fingerprint("E", first).hash == fingerprint("E", second).hash


@pytest.mark.parametrize(
    "first, second",
    [
        ("connection refused to 10.0.3.17:5432", "connection reset by 10.0.3.17:5432"),
        ("disk full on node-1", "disk healthy on node-1"),
        ("VM Started (Lifecycle Event)", "VM Paused (Lifecycle Event)"),
    ],
)
def test_different_errors_have_different_hashes(first, second):
    assert fingerprint("E", first).hash != fingerprint("E", second).hash


def test_error_type_is_part_of_the_hash():
    assert fingerprint("Timeout", "x 1").hash != fingerprint("Refused", "x 1").hash


def test_separator_keeps_type_and_message_apart():
    assert fingerprint("a", "b c", "exact").hash != fingerprint("a b", "c", "exact").hash


def test_exact_hashes_the_raw_message():
    one, two = fingerprint("E", "port 1", "exact"), fingerprint("E", "port 2", "exact")
    assert one.hash != two.hash
    assert one.template == "port 1"
    assert one.version == "exact"


def test_template_hashes_the_normalized_message():
    one, two = fingerprint("E", "port 1"), fingerprint("E", "port 2")
    assert one.hash == two.hash
    assert one.template == normalize("port 1") == "port <*>"


def test_hash_is_64_hex_chars_and_deterministic():
    result = fingerprint("E", "pod web-1 OOMKilled")
    assert re.fullmatch(r"[0-9a-f]{64}", result.hash)
    assert result == fingerprint("E", "pod web-1 OOMKilled")
    assert isinstance(result, Fingerprint)


def test_fingerprint_is_frozen():
    with pytest.raises(AttributeError):
        fingerprint("E", "x").hash = "0"  # type: ignore[misc]


def test_unknown_version_is_rejected():
    with pytest.raises(ValueError):
        fingerprint("E", "x", "fuzzy")


@pytest.mark.parametrize(
    "message, template",
    [
        ("PacketResponder 1 for block blk_-695 terminating", "PacketResponder <*> for block <*> terminating"),
        ("GET https://api.example.com/v1/x?id=3 failed", "GET <*> failed"),
        ("mail to ops@example.com bounced", "mail to <*> bounced"),
        ("acquire tag=\"View Lock\" name=com.android.phone", "acquire tag=<*> name=<*>"),
        ("ids 1, 2, 3, 4 done", "ids <*> done"),
        ("sent 1024 bytes (1 KB)", "sent <*>"),
        ("plain words stay as they are", "plain words stay as they are"),
        ("alignment...............0", "alignment...............<*>"),
    ],
)
def test_normalize_examples(message, template):
    assert normalize(message) == template


@pytest.mark.parametrize(
    "pod",
    [
        "checkout-7d9f8b6c5-x2k4q",  # ReplicaSet hash and suffix with digits
        "checkout-bcdfghjkl-xkcdq",  # ... and without a single digit (about 1 in 20 pods)
        "checkout-5c7b9d6f4-zqwvt",  # hash with digits, suffix without
        "checkout-bxwzqtrkf-4l2s9",  # hash without digits, suffix with
        "node-exporter-hjxkt",  # DaemonSet pod: owner name and suffix
        "backup-28391520-qwxzt",  # CronJob -> Job (scheduled minute) -> pod
        "web-0",  # StatefulSet ordinal
    ],
)
def test_kubernetes_generated_names_are_one_value(pod):
    """Pod names from one workload give one template whether or not their generated parts
    hold a digit (the ReplicaSet hash and the suffix use an alphabet with 7 digits of 27)."""
    assert normalize(f"Back-off restarting failed container app in pod {pod}") == (
        "Back-off restarting failed container app in pod <*>"
    )
    assert normalize(f"pod {pod}_default(1f0e) exited") == normalize("pod web-1_default(1f0e) exited")


@pytest.mark.parametrize("words", ["read-write lock", "non-blocking io", "rhythm strengths", "cross-check"])
def test_hyphenated_and_consonant_heavy_words_stay(words):
    assert normalize(words) == words


@pytest.mark.parametrize("token", ["xkcdqzvt", "XkQzRtPw", "bcdfghjklm"])
def test_vowel_free_tokens_are_values(token):
    assert normalize(f"token {token} invalid") == "token <*> invalid"


@pytest.mark.parametrize(
    "message, template",
    [
        # the host ends where the dotted name ends: an unlisted last label (pl) is not left over
        ("rhost biblioteka.wsi.edu.pl failed", "rhost <*> failed"),
        ("rhost mail.example.com failed", "rhost <*> failed"),
        (r"CBS cannot open C:\Windows\winsxs\pending.xml, error", "CBS cannot open <*>, error"),
        (r"share \\fs01\data\x.txt gone", "share <*> gone"),
        ("link aa:bb:cc:dd:ee:ff down", "link <*> down"),
        ("link 0A:1B:2C:3D:4E:5F down", "link <*> down"),
        # lists of any length are one value
        ("Fan speeds ( 3552 3534 3375 )", "Fan speeds ( <*> )"),
        ("called (stack @0x7fed806eb5d @0x7fef9fb9b6d @0xff83e97c)", "called (stack <*>)"),
    ],
)
def test_general_value_classes(message, template):
    assert normalize(message) == template
