import copy

import pytest

from elk_resolver.events.masking import MASK, SecretMasker, is_secret_key, mask_obj, mask_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login failed password=hunter2 user=bob", "login failed password=*** user=bob"),
        ("db_password: s3cr3t!", "db_password: ***"),
        ('{"token": "abc\\"def", "user": "x"}', '{"token": "***", "user": "x"}'),
        ("{'api_key': 'xyz'}", "{'api_key': '***'}"),
        ("api_key: xyz123 next", "api_key: *** next"),
        ("X-Api-Key=k-123;other=1", "X-Api-Key=***;other=1"),
        ("spring.datasource.password => 'se cret' x", "spring.datasource.password => '***' x"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ('"Authorization": "Bearer abc.def.ghi"', '"Authorization": "Bearer ***"'),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key=***"),
    ],
)
def test_key_value_forms_mask_only_the_value(text, expected):
    assert mask_text(text) == expected


def test_bearer_token_anywhere_is_masked():
    assert mask_text("upstream sent Bearer abcdef123== back") == "upstream sent Bearer *** back"


def test_jwt_anywhere_is_masked():
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    assert mask_text(f"rejected {jwt} as expired") == "rejected *** as expired"


def test_aws_access_key_ids_are_masked():
    assert mask_text("key AKIAIOSFODNN7EXAMPLE used") == "key *** used"
    assert mask_text("sts ASIAY34FZKBOKMUTVV7A ok") == "sts *** ok"
    assert mask_text("AKIAIOSFODNN7EXAMPLEX") == "AKIAIOSFODNN7EXAMPLEX"  # 21 chars: not a key id


def test_pem_private_key_block_is_masked_across_lines():
    text = (
        "loading key\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n"
        "/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n-----END RSA PRIVATE KEY-----\ndone"
    )
    assert mask_text(text) == (
        "loading key\n-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\ndone"
    )


def test_truncated_pem_block_is_masked_to_the_end():
    text = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    assert mask_text(text) == "-----BEGIN PRIVATE KEY-----***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dsn postgresql://app:pa55@db:5432/orders", "dsn postgresql://app:***@db:5432/orders"),
        ("mongodb+srv://u:p%40ss@cluster0.x.net/db", "mongodb+srv://u:***@cluster0.x.net/db"),
        ("amqp://guest:guest@rabbit:5672/", "amqp://guest:***@rabbit:5672/"),
        ("redis://:pass@cache:6379/0", "redis://:***@cache:6379/0"),
        ("http://svc.ns.svc:8080/api/v1@x", "http://svc.ns.svc:8080/api/v1@x"),
    ],
)
def test_connection_string_password_is_masked_user_and_host_kept(text, expected):
    assert mask_text(text) == expected


@pytest.mark.parametrize(
    "card",
    ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011000990139424"],
)
def test_card_numbers_passing_luhn_are_masked(card):
    assert mask_text(f"charge card={card} declined") == "charge card=*** declined"
    assert mask_text(f"charge {card} declined") == "charge *** declined"


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "1705312345678",  # epoch milliseconds: first digit 1 is no card network
        "1705312345678901234",  # epoch nanoseconds
        "41111111111111111111111",  # too long to be a card
        "411111111111",  # too short
    ],
)
def test_numbers_that_are_not_cards_are_left_alone(number):
    assert mask_text(f"value {number} seen") == f"value {number} seen"


def test_normal_log_text_is_not_mangled():
    lines = [
        "2024-05-14T09:31:22.418Z ERROR pod order-service-7d9f8c6b5-xk2lp in namespace shop "
        "CrashLoopBackOff, restarts=12 port 5432 ip 10.96.14.2:8080 elapsed_ms=30012",
        "java.lang.IllegalStateException: boom\n\tat com.acme.auth.TokenService.validate(TokenService.java:42)\n"
        "\tat com.acme.auth.PasswordEncoder.encode(PasswordEncoder.kt:17)",
        'Traceback (most recent call last):\n  File "/app/token_utils.py", line 42, in check\n'
        "    raise KeyError(key)\nKeyError: 'missing'",
        "goroutine 1 [running]:\nmain.handleToken(...)\n\t/app/token.go:42 +0x1d",
        "FATAL: password authentication failed for user \"postgres\"",
        "ERROR: duplicate key value violates unique constraint \"error_logs_hash_signature_key\"",
        "GET http://inventory.shop.svc.cluster.local:8080/api/v1/items?id=42 -> 503",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 ts=1705312345678",
        "disk 95% full on /var/lib/elasticsearch, index logs-2024.05.14 shard 3",
    ]
    for line in lines:
        assert mask_text(line) == line


def test_masking_is_idempotent_and_stable():
    text = (
        "password=hunter2 token: abc Authorization: Bearer eyJa.eyJb.c AKIAIOSFODNN7EXAMPLE "
        "postgresql://u:p@h/db card 4111 1111 1111 1111 "
        "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY----- "
        '{"client_secret": "s", "x": 1} redis://:pw@r:6379 Bearer zzz'
    )
    once = mask_text(text)
    assert mask_text(once) == once
    assert mask_text(text) == once
    for secret in ("hunter2", "abc ", "AKIA", ":p@", "4111", "client_secret\": \"s", ":pw@", "zzz"):
        assert secret not in once


def test_mask_obj_masks_nested_values_and_whole_secret_keys():
    event = {
        "message": "connect postgresql://app:pa55@db/orders failed",
        "http": {"request": {"headers": {"X-Api-Key": "k-123", "Authorization": "Basic dXNlcg==", "Accept": "*/*"}}},
        "db_password": {"nested": "anything"},
        "tags": ["ok", "password=hunter2", 3],
        "count": 5,
        "token": None,
        "password_required": True,
    }
    before = copy.deepcopy(event)
    masked = mask_obj(event)
    assert event == before  # input not mutated
    assert masked["message"] == "connect postgresql://app:***@db/orders failed"
    assert masked["http"]["request"]["headers"] == {"X-Api-Key": MASK, "Authorization": MASK, "Accept": "*/*"}
    assert masked["db_password"] == MASK
    assert masked["tags"] == ["ok", "password=***", 3]
    assert masked["count"] == 5
    assert masked["token"] is None
    assert masked["password_required"] is True
    assert mask_obj(masked) == masked


def test_mask_obj_returns_the_same_object_when_nothing_is_secret():
    event = {"message": "pod crashed", "kubernetes": {"pod": {"name": "api-1"}}, "list": [1, "a"]}
    assert mask_obj(event) is event


@pytest.mark.parametrize(
    "key", ["password", "db_password", "X-Api-Key", "apikey", "API_KEY", "Authorization", "accessKey",
            "private_key", "credentials", "aws_secret_access_key", "refreshToken", "passwd", "PWD"],
)
def test_secret_key_names(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["message", "host", "kubernetes", "pod", "keyspace", "author", "level"])
def test_ordinary_key_names(key):
    assert not is_secret_key(key)


def test_extra_patterns_mask_whole_match_or_groups():
    masker = SecretMasker([r"SSN-\d{3}-\d{2}-\d{4}", r"session=([0-9a-f]{8})"])
    assert masker.mask_text("user SSN-123-45-6789 x") == "user *** x"
    assert masker.mask_text("cookie session=deadbeef; path=/") == "cookie session=***; path=/"
    assert masker.mask_text(masker.mask_text("session=deadbeef")) == "session=***"
    assert masker.mask_obj({"m": "SSN-123-45-6789"}) == {"m": MASK}
    # the default masker knows nothing of them
    assert mask_text("user SSN-123-45-6789 x") == "user SSN-123-45-6789 x"


def test_extra_pattern_that_does_not_compile_is_a_settings_error():
    with pytest.raises(ValueError, match="does not compile"):
        SecretMasker([r"(unclosed"])


def test_huge_inputs_stay_linear():
    # a megabyte word after a secret-looking key, and a megabyte of card-like digit groups
    assert mask_text("token" + "a" * 1_000_000).startswith("token")
    assert mask_text("x=" + "4" * 1_000_000).endswith("4")
    assert len(mask_text("-----BEGIN PRIVATE KEY-----" + "-" * 1_000_000)) < 100


def test_masker_with_extras_still_masks_builtin_secrets_in_objects():
    masker = SecretMasker([r"^internal-\w+$"])
    event = {"a": ["internal-abc", "password=x"], "b": {"api_key": "k"}, "c": "fine internal-abc"}
    assert masker.mask_obj(event) == {"a": [MASK, "password=***"], "b": {"api_key": MASK}, "c": "fine internal-abc"}
