"""Every secret shape the fault-injection run found unmasked (issue 12), and the text around
each one kept."""

from __future__ import annotations

import pytest

from elk_resolver.events.masking import MASK, mask_obj, mask_text
from elk_resolver.events.secret_rules import TOKEN_RULES

GH = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
SLACK_BOT = "xoxb-2048-4096-" + "aBcDeFgHiJkLmNoPqRsTuVwX"
SLACK_HOOK = "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/aBcDeFgHiJkLmNoPqRsTuVwX"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc" + "Xy12Zq"  # longer than the 24 the rule names
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
GITLAB = "glpat-" + "xY7zW2vU4tS6rQ8pO0nM"
NPM = "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SECRET = "Zq7-w0rd!x"

OPENAI = "sk-proj-" + "Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3kL5"
OPENAI_LEGACY = "sk-" + "Zx81kQm2Lp9TvW3bN7yR5cJ4hG6fD2sA0eU8iO1pQ3rT5wY7"
VAULT = "hvs." + "CAESIJx7qBkUu3Z9yT6wR2pL0mN8vF4sH1dG5eA7cQ9bK2jGh4"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Vb3Ld1Q"
SAS = "Xq7fP2mL9kR4tW8vB3nH6jD1sG5aC0eY%2BzU4iO%3D"
DOCKER = "ZGVwbG95OlpxNy13MHJkIXg="  # deploy:Zq7-w0rd!x
B64 = "dXNlcj1hcHAgcGFzc3dvcmQ9WnE3LXcwcmQheA=="  # user=app password=Zq7-w0rd!x
HEX_KEY = "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
# (text, context kept, the secret) for each shape of issue 21 item 3
ISSUE21 = [
    (f"openai call failed: 401 for key {OPENAI} (project)", ["openai call failed: 401 for key", "(project)"], OPENAI),
    (f"llm error invalid_api_key {OPENAI_LEGACY}.", ["llm error invalid_api_key", "."], OPENAI_LEGACY),
    (f'request body {{\\"password\\": \\"{SECRET}\\", \\"user\\": \\"app\\"}}',
     ['\\"password\\": \\"', '\\"user\\": \\"app\\"'], SECRET),
    (f"GET https://logs.blob.core.windows.net/c/b.gz?sv=2022-11-02&sp=r&sig={SAS} 403",
     ["https://logs.blob.core.windows.net/c/b.gz?sv=2022-11-02&sp=r&sig=", "403"], SAS),
    (f"backup: mysqldump -h db -u root -p{SECRET} orders exited 2", ["mysqldump -h db -u root -p", "orders exited 2"],
     SECRET),
    (f"deploy: sshpass -p {SECRET} ssh app@10.0.0.5 uptime", ["sshpass -p", "ssh app@10.0.0.5 uptime"], SECRET),
    (f"vault: token {VAULT} expired", ["vault: token", "expired"], VAULT),
    (f"geocode https://maps.example.com/api/geocode?address=x&key={SECRET}abc&lang=en failed",
     ["geocode https://maps.example.com/api/geocode?address=x&key=", "&lang=en failed"], SECRET),
    (f"s3 sync failed with {AWS_SECRET} for bucket logs", ["s3 sync failed with", "for bucket logs"], AWS_SECRET),
    (f'pull failed: config {{\\"auths\\":{{\\"reg.io\\":{{\\"auth\\":\\"{DOCKER}\\"}}}}}}',
     ['\\"auth\\":\\"', "pull failed: config"], DOCKER),
    (f"upstream sent {B64} in header", ["upstream sent", "in header"], B64),
    (f"login failed passwort={SECRET} fuer benutzer app", ["login failed passwort=", "fuer benutzer app"], SECRET),
    (f"error de acceso contraseña: {SECRET} usuario app", ["error de acceso contraseña:", "usuario app"], SECRET),
    (f"ошибка пароль={SECRET} пользователь app", ["ошибка пароль=", "пользователь app"], SECRET),
    (f"auth ｐａｓｓｗｏｒｄ＝{SECRET} denied", ["auth ｐａｓｓｗｏｒｄ＝", "denied"], SECRET),
    (f"auth pass\u200bword={SECRET} denied", ["auth pass\u200bword=", "denied"], SECRET),
    (f"client using api key {HEX_KEY} rejected", ["client using api key", "rejected"], HEX_KEY),
]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"git clone failed with token {GH} for repo", ["git clone failed with token", "for repo"]),
        (f"slack post failed: {SLACK_BOT} invalid_auth", ["slack post failed:", "invalid_auth"]),
        (f"POST {SLACK_HOOK} returned 404", ["POST", "returned 404"]),
        (f"stripe charge failed key={STRIPE} declined", ["stripe charge failed", "declined"]),
        (f"stripe client {STRIPE} rejected", ["stripe client", "rejected"]),
        (f"maps quota exceeded for {GOOGLE} today", ["maps quota exceeded for", "today"]),
        (f"gitlab api 401 with {GITLAB} on push", ["gitlab api 401 with", "on push"]),
        (f"npm publish failed, token {NPM} revoked", ["npm publish failed, token", "revoked"]),
        (f"//registry.npmjs.org/:_authToken={NPM}", ["//registry.npmjs.org/:_authToken="]),
        (f"config:\n  password:\n    {SECRET}\n  user: app", ["config:", "password:", "user: app"]),
        (f"exec psql --password {SECRET} --host db", ["exec psql --password", "--host db"]),
        (f"mysqldump --db-password {SECRET} orders", ["mysqldump --db-password", "orders"]),
        (f"curl -u admin:{SECRET} https://es:9200/_cluster/health", ["curl -u admin:", "https://es:9200"]),
        (f"curl --user admin:{SECRET} https://es:9200", ["curl --user admin:", "https://es:9200"]),
        (f'env: [{{"name":"DB_PASSWORD","value":"{SECRET}"}},{{"name":"MODE","value":"prod"}}]',
         ['"name":"DB_PASSWORD"', '"name":"MODE","value":"prod"']),
        (f'spec {{\\"name\\":\\"API_TOKEN\\",\\"value\\":\\"{SECRET}\\"}} end',
         ['\\"name\\":\\"API_TOKEN\\"', "end"]),
        (f"DefaultEndpointsProtocol=https;AccountName=logs;AccountKey={SECRET}==;EndpointSuffix=core.windows.net",
         ["AccountName=logs", "EndpointSuffix=core.windows.net"]),
        (f"GET /b/o?X-Amz-Credential=AKIA/x&X-Amz-Signature={SECRET}abc123 403",
         ["GET /b/o?", "X-Amz-Signature=", "403"]),
        ("upstream sent Basic YWRtaW46WnE3LXcwcmQheA== back", ["upstream sent Basic", "back"]),
        (f"connect postgres://app:p@ss{SECRET}@db:5432/orders refused", ["postgres://app:", "@db:5432/orders"]),
        # issue 21: the shapes a review found stored as they came
        *[(text, kept) for text, kept, _ in ISSUE21],
    ],
)
def test_shape_is_masked_and_its_context_kept(text, kept):
    masked = mask_text(text)
    for secret in (GH, SLACK_BOT, SLACK_HOOK, STRIPE, GOOGLE, GITLAB, NPM, SECRET, "Zq7-w0rd", "YWRtaW46",
                   "4eC39Hq", "Xy12Zq", "@ss", *(secret for _, _, secret in ISSUE21), "w0rd"):
        assert secret not in masked, (secret, masked)
    assert MASK in masked
    for part in kept:
        assert part in masked, (part, masked)
    assert mask_text(masked) == masked  # idempotent


def test_pgp_private_key_block_is_masked():
    text = ("import failed\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGR1c2VyAQgA3v9Xq\n=Ab1c\n"
            "-----END PGP PRIVATE KEY BLOCK-----\nnext")
    assert mask_text(text) == ("import failed\n-----BEGIN PGP PRIVATE KEY BLOCK-----***"
                               "-----END PGP PRIVATE KEY BLOCK-----\nnext")


def test_kubernetes_env_entry_is_masked_in_decoded_json():
    event = {"message": "pod spec rejected", "env": [{"name": "DB_PASSWORD", "value": SECRET},
                                                       {"name": "LOG_LEVEL", "value": "debug"}]}
    masked = mask_obj(event)
    assert masked["env"] == [{"name": "DB_PASSWORD", "value": MASK}, {"name": "LOG_LEVEL", "value": "debug"}]


@pytest.mark.parametrize(
    "line",
    [
        "Basic authentication failed for user admin",
        "FATAL: password authentication failed for user \"postgres\"",
        "--password-file /run/secrets/db is missing",
        "retrying, -u flag given without a user",
        '{"name":"LOG_LEVEL","value":"debug"}',
        "APDUException at com.acme.Card.read(Card.java:12)",
        "request 8c1f3e2a9b7d4c6e8f0a1b2c3d4e5f60 took 30012 ms",
        "ACTIVE pods: 3, SKIPPED jobs: 2",
    ],
)
def test_ordinary_lines_are_left_alone(line):
    assert mask_text(line) == line


def test_rules_come_from_the_maintained_set():
    names = {rule.name.split("[")[0] for rule in TOKEN_RULES}
    assert {"GitHubTokenDetector", "SlackDetector", "StripeDetector", "GitLabTokenDetector",
            "AzureStorageKeyDetector", "NpmDetector"} <= names


@pytest.mark.parametrize(
    "text",
    [
        "task-scheduler-worker-thread-pool-exhausted after 30s",
        "pod sk-prod-worker-7d9f8b6c5-x2k4q restarted",  # a lower-case name starting sk-
        "commit 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a pushed",  # a git SHA-1 (40 hex)
        "mysql -h db -P 3306 -u app orders failed: unknown database",
        "api key rotation finished for tenant acme",
        "GET /search?q=timeout&page=2 took 3s",
        "mysql -h db -u root -p orders (password prompted)",
        "пользователь app вошёл в систему",
        "ファイルが見つかりません: /var/log/app.log",
    ],
)
def test_lines_that_only_look_like_the_new_shapes_are_kept(text):
    assert mask_text(text) == text
