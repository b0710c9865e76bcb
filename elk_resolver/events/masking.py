"""Secret masking, applied before anything is stored, hashed, published or sent to an LLM.

Every secret becomes :data:`MASK` (``***``). Masking is *idempotent* (masking masked text
changes nothing, because ``***`` matches none of the secret shapes again or is replaced by
itself) and *stable* (no randomness, no partial hashing), so a fingerprint computed over
masked text is the same for every occurrence of the same error.

What is masked in free text, in this order:

1. PEM private-key blocks (the body between the BEGIN/END lines; a block cut off by a
   truncated log line is masked to the end of the text).
2. Passwords in connection URLs (``scheme://user:PASSWORD@host``), user and host kept.
3. ``key=value`` / ``key: value`` / ``"key": "value"`` / ``key => value`` where the key looks
   secret (``password``, ``db_password``, ``X-Api-Key``, ``aws_secret_access_key``...). An
   authorization scheme word (``Basic``, ``Bearer``...) is kept, the credential masked.
4. ``Bearer <token>`` anywhere, 5. JWTs anywhere, 6. AWS access key ids (``AKIA``/``ASIA``...).
7. Payment card numbers: 13-19 digits, optional single spaces/dashes between digits, a first
   digit 2-6 (the card networks' ranges: this keeps epoch-millisecond timestamps and other
   ``1...`` ids out) and a valid Luhn check digit. Numbers failing Luhn are left alone.
8. Shapes a security review found stored as they came (issue 21): JSON escaped once or more
   (``{\\"password\\": \\"x\\"}``), a credential query parameter (``?key=``, Azure SAS ``sig=``),
   ``mysql -pSECRET``, ``sshpass -p SECRET``, Docker's ``"auth":"<base64>"``, ``api key <hex>``,
   a bare AWS secret access key, base64 of text holding a secret (``cGFzc3dvcmQ9...``), and
   keys in other languages (``passwort=``, ``contraseña:``, ``пароль=``) or spelled with
   fullwidth or zero-width characters (judged NFKC-normalised); ``sk-``/``sk-proj-`` and Vault
   ``hvs.`` tokens come with the token rules (:mod:`elk_resolver.events.secret_rules`).
9. Extra patterns from settings, compiled with RE2 (linear time). If a pattern has capture
   groups, only the groups are masked; otherwise the whole match.

Most log lines carry no secret, so each rule runs only when a cheap substring check (one
lower-casing of the text and a few ``in`` tests) shows a candidate.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import re2

from elk_resolver.events.re2_sets import compile_set
from elk_resolver.events.secret_rules import TOKEN_RULES, TokenRule, mask_spans

__all__ = ["MASK", "SecretMasker", "is_secret_key", "mask_obj", "mask_text", "record_is_clean"]

MASK = "***"

# Words that make a key name secret. Matched as substrings of the key with separators and
# case removed, so ``db_password``, ``X-Api-Key``, ``awsSecretAccessKey`` all hit.
_SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "accesskey",
    "privatekey",
    "credential",
    "sessionid",
    "cookie",
    "accountkey",
    "amzsignature",
    "amzcredential",
    # "password" in other languages (issue 21: passwort= was stored as it came)
    "passwort",
    "kennwort",
    "contrasena",
    "contraseña",
    "senha",
    "motdepasse",
    "wachtwoord",
    "haslo",
    "hasło",
    "losenord",
    "lösenord",
    "passord",
    "adgangskode",
    "salasana",
    "heslo",
    "jelszo",
    "jelszó",
    "sifre",
    "şifre",
    "parola",
    "пароль",
    "密码",
    "密碼",
    "パスワード",
    "비밀번호",
)
_SECRET_KEY_EXACT = frozenset({"auth", "pass", "pin", "cvv", "cvc"})

# The same words, as they may appear inside a key in free text.
_KEY_WORD_RE = (
    r"pass(?:word|wd|phrase)|pwd|secret|token|api[_.-]?key|access[_.-]?key"
    r"|private[_.-]?key|credentials?|authorization|session[_.-]?id|cookie"
    r"|account[_.-]?key|amz[_.-]?signature|amz[_.-]?credential"
    r"|passwort|kennwort|contrase(?:ñ|n)a|senha|mot[_.-]?de[_.-]?passe|wachtwoord|has(?:ł|l)o"
    r"|l(?:ö|o)senord|passord|adgangskode|salasana|heslo|jelsz(?:ó|o)|(?:ş|s)ifre|parola"
    r"|пароль|密[码碼]|パスワード|비밀번호"
)
# Source-file names in stack frames (``TokenService.java:42``) are not keys.
_NOT_A_SOURCE_FILE = "".join(
    rf"(?<!\.{ext})" for ext in ("java", "kt", "scala", "groovy", "py", "go", "rb", "js", "ts", "cs")
)
_AUTH_SCHEME = r"(?:(?i:basic|bearer|digest|token|negotiate|ntlm|apikey|aws4-hmac-sha256)[ \t]+)"
_KEY_VALUE = re.compile(
    # The look-behind pins the key to the start of a word, which keeps the bounded key scan
    # linear even on a megabyte-long word.
    r"(?<![\w.-])(?P<key>[\w.-]{0,64}?(?i:" + _KEY_WORD_RE + r")[\w.-]{0,64}" + _NOT_A_SOURCE_FILE + r")"
    # the value may stand on the next line (YAML ``password:`` then an indented value)
    # a JSON document inside a string keeps its quotes escaped: {\"password\": \"x\"}
    r"(?P<sep>\\*[\"']?[ \t]*(?:=>|[:=])[ \t]*(?:\r?\n[ \t]*)?)"
    r"(?:(?P<eopen>\\+\")(?P<escheme>" + _AUTH_SCHEME + r"?)(?:[^\"\\\n]|\\+[^\"\\\n])*(?P<eclose>\\+\")"
    r"|\"(?P<dscheme>" + _AUTH_SCHEME + r"?)(?:[^\"\\\n]|\\.)*\""
    r"|'(?P<sscheme>" + _AUTH_SCHEME + r"?)(?:[^'\\\n]|\\.)*'"
    r"|(?P<scheme>" + _AUTH_SCHEME + r"?)(?P<value>[^\s,;&\"'<>{}\[\]()]+))"
)
# Starts with a literal so Python ``re`` can skip ahead to each ``://``.
# The password runs to the *last* ``@`` of the authority: ``postgres://u:p@ss@db`` hides ``p@ss``.
_URL_PASSWORD = re.compile(r"(?P<head>://[^:/?#@\s\"']*):(?P<pw>[^/?#\s\"']*)@")
_BEARER = re.compile(r"(?P<head>\b(?i:bearer)[ \t]+)[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_AWS_KEY_ID = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])"
)
_PEM = re.compile(
    r"(?P<head>-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)"
    r"[^-]*(?:-(?!----END)[^-]*)*"
    r"(?P<tail>-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?",
)
# The look-behind sits after the first digit so ``re`` can skip quickly to a digit 2-6.
_CARD = re.compile(r"[2-6](?<![\w.][2-6])(?:[ -]?\d){12,18}(?!\w)")
_NOT_DIGIT = re.compile(r"\D")


# ``--password VALUE``, ``-p``-style flags spelled out (``--db-password s3cr3t``).
_FLAG_WORDS = r"password|passwd|pass|pwd|secret|token|api-?key|access-?key"
_CLI_FLAG = re.compile(
    r"(?<![\w-])(?P<head>--?(?:[A-Za-z0-9]+[-_])*(?i:" + _FLAG_WORDS + r")[ \t]+)(?P<value>[^\s\"'-][^\s\"']*)"
)
# ``curl -u user:pass`` / ``--user user:pass``: the user is kept.
_CLI_USER = re.compile(r"(?<!\S)(?P<head>(?:-u|--user)[ \t]+[^\s:\"']+:)(?P<pw>[^\s\"']+)")
# A bare ``Basic <base64 of user:password>`` (the header name elsewhere or cut off).
_BASIC = re.compile(r"(?P<head>\b(?i:basic)[ \t]+)(?P<b64>[A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])")
# Kubernetes env entries as text: {"name":"DB_PASSWORD","value":"..."}, also JSON-escaped.
_K8S_ENV = re.compile(
    r'(?P<head>(?P<q>\\?")name(?P=q)[ \t]*:[ \t]*(?P=q)(?P<name>[^"\\]{1,100})(?P=q)[ \t]*,[ \t]*'
    r'(?P=q)value(?P=q)[ \t]*:[ \t]*(?P=q))(?P<value>.*?)(?P=q)'
)


# --- shapes a security review found stored as they came (issue 21) ---------------------------
# RE2 (linear time, no look-behind): a boundary is matched as a character or the text's edge.

# A query parameter that carries a credential by itself: Azure SAS ``sig=``, ``?key=`` (Google
# and many APIs), ``auth=``, ``pass=``, ``pwd=`` (the key=value rule covers token=, api_key=...).
_QUERY_SECRET = re2.compile(r"([?&](?i:key|sig|signature|auth|pass|pwd)=)([^&#\s\"'<>\\]+)")
# ``mysql -uroot -pSECRET`` (the password glued to -p; ``-p`` alone prompts) and ``sshpass -p SECRET``
_MYSQL_P = re2.compile(r"(\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mysqlshow|mariadb|mariadb-dump)\b"
                       r"[^\n]*?[ \t]-p)([^\s\"'\\]+)")
_SSHPASS = re2.compile(r"(\bsshpass\b[^\n]*?[ \t]-p[ \t]*)([^\s\"'\\]+)")
# Docker's config.json inside a string: "auth":"<base64 of user:password>", quotes escaped or not
_DOCKER_AUTH = re2.compile(r'((?i:\\*"auth\\*")[ \t]*:[ \t]*\\*")([A-Za-z0-9+/=]+)')
# ``api key 3f9a...``: the key word, a space, no separator; a value with a digit
_SPACED_KEY = re2.compile(r"(\b(?i:api|access|secret|private)[ _-]?(?i:key|token)[ \t]+(?:(?i:is)[ \t]+)?)"
                          r"([A-Za-z0-9_-]{16,})")
# A bare AWS secret access key: 40 characters of base64 standing alone. Hex digests (git,
# SHA-1 fingerprints) have no upper-case letter and no /+; the masked value must have upper
# and lower case and a digit.
_AWS_SECRET_BARE = re2.compile(r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)")
_AWS_SECRET_CANDIDATE = (
    r"(?:^|[^A-Za-z0-9/+=])(?:"
    + "|".join(f"[a-z0-9/+]{{{k}}}[A-Z][A-Za-z0-9/+]{{{39 - k}}}" for k in range(40))
    + r")(?:[^A-Za-z0-9/+=]|$)"
)
# base64 of text holding a secret key word (``cGFzc3dvcmQ9...`` is ``password=...``): the
# word's base64 at each of the three alignments, in three cases, finds the candidate run; the
# run is masked when its decoded text has something to mask.
_B64_WORDS = ("password", "passwd", "passwort", "secret", "token", "apikey", "api_key", "authorization", "credential")


def _b64_fragments(word: str) -> set[str]:
    out = set()
    for variant in {word, word.capitalize(), word.upper()}:
        raw = variant.encode()
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + raw).decode()
            start = -(-offset * 8 // 6)  # characters that hold bits of the padding bytes
            end = (offset + len(raw)) * 8 // 6
            fragment = encoded[start:end]
            if len(fragment) >= 5:
                out.add(fragment)
    return out


_B64_FRAGMENTS = sorted(set().union(*(_b64_fragments(w) for w in _B64_WORDS)))
_B64_CANDIDATE = "(?:" + "|".join(re.escape(f) for f in _B64_FRAGMENTS) + ")"
_B64_FRAGMENT = re2.compile(_B64_CANDIDATE)
_B64_RUN = re2.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
# A key spelled with characters a key rule in ASCII does not see: zero-width characters
# (pass\u200bword), fullwidth letters or separators (ｐａｓｓｗｏｒｄ＝), other scripts (пароль).
# The key is judged by is_secret_key, which reads it NFKC-normalised without non-alphanumerics.
_WIDE_SEP = "：＝"
_UNICODE_KEY = re.compile(
    r"(?P<key>[^\s:=" + _WIDE_SEP + r"\"'{},;&<>()\[\]\\]{1,80}?)"
    r"(?P<sep>\\*[\"']?[ \t]*(?:=>|[:=" + _WIDE_SEP + r"])[ \t]*)(?P<q>\\*[\"']?)"
    r"(?P<value>[^\s,;&\"'<>{}\[\]()\\]+)"
)


def _mask_group2(rx: Any, s: str, keep: Any = None) -> str:
    """``s`` with group 2 of each ``rx`` match masked (when ``keep`` does not say otherwise)."""
    return rx.sub(lambda m: m.group(0) if keep is not None and keep(m.group(2)) else m.group(1) + MASK, s)


def _has_digit(value: str) -> bool:
    return any(c.isdigit() for c in value)


def _mask_aws_bare(s: str) -> str:
    spans = []
    pos = 0
    while (m := _AWS_SECRET_BARE.search(s, pos)) is not None:
        value = m.group(1)
        if (any(c.isupper() for c in value) and any(c.islower() for c in value) and _has_digit(value)):
            spans.append(m.span(1))
        pos = m.end(1)  # the character after the value may start the next one's boundary
    return mask_spans(s, spans, MASK)


def _mask_b64(s: str) -> str:
    spans = []
    for m in _B64_RUN.finditer(s):
        run = m.group(0)
        if _B64_FRAGMENT.search(run) is None:
            continue
        body = run.rstrip("=")
        try:
            decoded = base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4))
            text = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if _default_mask_text(text) != text:
            spans.append(m.span())
    return mask_spans(s, spans, MASK)


def _sub_unicode_key(m: re.Match[str]) -> str:
    key, sep = m.group("key"), m.group("sep")
    if (key.isascii() and sep.isascii()) or not is_secret_key(key):
        return m.group(0)
    return key + sep + m.group("q") + MASK


def _sub_cli_flag(m: re.Match[str]) -> str:
    return m.group("head") + MASK


def _sub_basic(m: re.Match[str]) -> str:
    b64 = m.group("b64")
    try:
        decoded = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        return m.group(0)
    # user:password, printable: "Basic authentication" and other words decode to noise
    if b":" in decoded and all(32 <= c < 127 for c in decoded):
        return m.group("head") + MASK
    return m.group(0)


def _sub_k8s_env(m: re.Match[str]) -> str:
    if not is_secret_key(m.group("name")):
        return m.group(0)
    return m.group("head") + MASK + m.group("q")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _sub_key_value(m: re.Match[str]) -> str:
    scheme = m.group("escheme")
    if scheme is not None:
        return f'{m.group("key")}{m.group("sep")}{m.group("eopen")}{scheme}{MASK}{m.group("eclose")}'
    scheme = m.group("dscheme")
    if scheme is not None:
        return f'{m.group("key")}{m.group("sep")}"{scheme}{MASK}"'
    scheme = m.group("sscheme")
    if scheme is not None:
        return f"{m.group('key')}{m.group('sep')}'{scheme}{MASK}'"
    return f"{m.group('key')}{m.group('sep')}{m.group('scheme')}{MASK}"


def _sub_url(m: re.Match[str]) -> str:
    return f"{m.group('head')}:{MASK}@"


def _sub_bearer(m: re.Match[str]) -> str:
    return m.group("head") + MASK


def _sub_pem(m: re.Match[str]) -> str:
    return f"{m.group('head')}{MASK}{m.group('tail') or ''}"


def _sub_card(m: re.Match[str]) -> str:
    digits = _NOT_DIGIT.sub("", m.group(0))
    return MASK if _luhn_ok(digits) else m.group(0)


# One RE2 set finds, in a single linear pass, which kinds of secret may be present; the
# precise (Python ``re``) rule for a kind runs only when its candidate was seen. Most log
# lines match nothing and cost one pass. Order here is the order the rules are applied.
_CANDIDATES = (
    ("pem", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY"),
    ("url", r"://[^:/?#@\s\"']*:[^@/?#\s\"']*@"),
    ("key_value", r"(?i:" + _KEY_WORD_RE + r")[\w.-]{0,64}\\*[\"']?[ \t]*(?:=>|[:=])"),
    ("bearer", r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]"),
    ("jwt", r"eyJ[A-Za-z0-9_-]*\.eyJ"),
    ("aws_key_id", r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}"),
    ("card", r"[2-6](?:[ -]?[0-9]){12,18}"),
    ("cli_flag", r"(?i)-(?:" + _FLAG_WORDS + r")[ \t]+[^\s\"'-]"),
    ("cli_user", r"(?:-u|--user)[ \t]+[^\s:\"']+:[^\s\"']"),
    ("basic", r"(?i:basic)[ \t]+[A-Za-z0-9+/]{6}"),
    ("k8s_env", r'name\\?"[ \t]*:[ \t]*\\?"[^"\\]{0,100}(?i:pass|secret|token|key|credential|pwd|auth)'),
    # issue 21; a candidate's ^ or $ stands beside a character class a JSON quote matches, so
    # the one pass over a record's text (record_is_clean) still finds what a string would give
    ("query_secret", r"[?&](?i:key|sig|signature|auth|pass|pwd)=[^&#\s\"'<>\\]"),
    ("mysql_p", r"(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mysqlshow|mariadb)[^\n]*[ \t]-p[^\s\"'\\]"),
    ("sshpass", r"sshpass[^\n]*[ \t]-p"),
    ("docker_auth", r'(?i:\\*"auth\\*")[ \t]*:[ \t]*\\*"[A-Za-z0-9+/=]'),
    ("spaced_key", r"(?i:api|access|secret|private)[ _-]?(?i:key|token)[ \t]+(?:(?i:is)[ \t]+)?[A-Za-z0-9_-]{16}"),
    ("aws_secret_bare", _AWS_SECRET_CANDIDATE),
    ("b64_secret", _B64_CANDIDATE),
    ("unicode_key", r"[^\x00-\x7f][^\s:=\"']{0,80}[:=]|[" + _WIDE_SEP + r"]"),
)
# RE2, because Python ``re`` with IGNORECASE and alternation costs ~50 µs per 600 bytes.
_KEYWORD = re2.compile("(?i:" + _KEY_WORD_RE + ")")
_KEY_VALUE_AT = re.compile(_KEY_VALUE.pattern[len(r"(?<![\w.-])") :])
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _mask_key_values(s: str) -> str:
    """``_KEY_VALUE.sub`` without its cost: Python ``re`` tries a pattern with a leading
    look-behind at every position (~65 µs on a 650-byte line). Find each secret key word
    instead, step back to the start of its word, and match there."""
    pieces: list[str] = []
    last = 0
    pos = 0
    for kw in _KEYWORD.finditer(s):
        start = kw.start()
        if start < pos:
            continue  # inside a value already masked
        floor = max(last, start - 64)
        while start > floor and (s[start - 1] in _KEY_CHARS or not s[start - 1].isascii() and s[start - 1].isalnum()):
            start -= 1
        if start > last and (s[start - 1] in _KEY_CHARS or not s[start - 1].isascii() and s[start - 1].isalnum()):
            continue  # the key would be longer than 64 characters: not a key
        m = _KEY_VALUE_AT.match(s, start)
        if m is None:
            continue
        pieces.append(s[last:start])
        pieces.append(_sub_key_value(m))
        last = pos = m.end()
    if not pieces:
        return s
    pieces.append(s[last:])
    return "".join(pieces)


def _apply(kind: str, s: str) -> str:
    if kind == "pem":
        return _PEM.sub(_sub_pem, s)
    if kind == "url":
        return _URL_PASSWORD.sub(_sub_url, s)
    if kind == "key_value":
        return _mask_key_values(s)
    if kind == "bearer":
        return _BEARER.sub(_sub_bearer, s)
    if kind == "jwt":
        return _JWT.sub(MASK, s)
    if kind == "aws_key_id":
        return _AWS_KEY_ID.sub(MASK, s)
    if kind == "card":
        return _CARD.sub(_sub_card, s)
    if kind == "cli_flag":
        return _CLI_FLAG.sub(_sub_cli_flag, s)
    if kind == "cli_user":
        return _CLI_USER.sub(lambda m: m.group("head") + MASK, s)
    if kind == "basic":
        return _BASIC.sub(_sub_basic, s)
    if kind == "k8s_env":
        return _K8S_ENV.sub(_sub_k8s_env, s)
    if kind == "query_secret":
        return _mask_group2(_QUERY_SECRET, s, keep=lambda v: v.startswith(MASK))
    if kind == "mysql_p":
        return _mask_group2(_MYSQL_P, s, keep=lambda v: v == MASK)
    if kind == "sshpass":
        return _mask_group2(_SSHPASS, s, keep=lambda v: v == MASK)
    if kind == "docker_auth":
        return _mask_group2(_DOCKER_AUTH, s)
    if kind == "spaced_key":
        return _mask_group2(_SPACED_KEY, s, keep=lambda v: not _has_digit(v))
    if kind == "aws_secret_bare":
        return _mask_aws_bare(s)
    if kind == "b64_secret":
        return _mask_b64(s)
    return _UNICODE_KEY.sub(_sub_unicode_key, s)


_key_cache: dict[str, bool] = {}
_clean_keys: set[str] = set()
"""Keys in which the built-in rules find nothing to mask (bounded, as ``_key_cache``)."""


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _key_letters(key: str) -> str:
    """The key as it is judged: NFKC-normalised (fullwidth ｐａｓｓ is pass), case-folded, with
    everything but letters and digits removed (separators, zero-width characters)."""
    if key.isascii():
        return _NON_ALNUM.sub("", key.lower())
    return "".join(ch for ch in unicodedata.normalize("NFKC", key).casefold() if ch.isalnum())


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (``db_password``, ``X-Api-Key``, ``Authorization``,
    ``Passwort``, ``contraseña``, ``ｐａｓｓｗｏｒｄ``, ``pass\u200bword``)."""
    hit = _key_cache.get(key)
    if hit is None:
        norm = _key_letters(key)
        hit = norm in _SECRET_KEY_EXACT or any(w in norm for w in _SECRET_KEY_WORDS)
        if len(_key_cache) < 10_000:  # keys repeat; an attacker's unique keys must not grow it
            _key_cache[key] = hit
    return hit


class SecretMasker:
    """Masks secrets in text and in decoded JSON. Build once; safe to share between tasks."""

    __slots__ = ("_extra", "_kinds", "_set")

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        """``extra_patterns`` are RE2 regexes; one that does not compile raises ``ValueError``
        (a settings mistake must stop the service, not silently leak a secret). Extra patterns
        must not match the marker ``***`` itself, or masking is no longer idempotent."""
        extra = []
        for pattern in extra_patterns:
            try:
                extra.append((pattern, re2.compile(pattern)))
            except re2.error as exc:
                raise ValueError(f"mask pattern {pattern!r} does not compile: {exc}") from exc
        self._extra = tuple(rx for _, rx in extra)
        self._set = _candidate_set(p for p, _ in extra) if extra else _BUILTIN_SET
        self._kinds = tuple([kind for kind, _ in _CANDIDATES] + list(TOKEN_RULES) + list(self._extra))

    def mask_text(self, s: str) -> str:
        if not s:
            return s
        hits = self._set.Match(s)
        if hits is None:
            return s
        kinds = self._kinds
        for i in sorted(hits):
            kind = kinds[i]
            if isinstance(kind, str):
                s = _apply(kind, s)
            elif isinstance(kind, TokenRule):
                s = kind.mask(s, MASK)
            else:
                s = _mask_extra(kind, s)
        return s

    def record_is_clean(self, value: bytes) -> bool:
        """:func:`record_is_clean` for this masker: always "maybe" (False) with extra patterns,
        which may use anchors the one-pass proof does not cover."""
        return not self._extra and record_is_clean(value)

    def mask_obj(self, obj: Any) -> Any:
        """Mask a decoded JSON value. Returns ``obj`` itself when nothing needed masking, and
        otherwise new containers: the input is never mutated. The whole value of a key that
        looks secret becomes ``***`` (``None``, ``""`` and booleans are kept: nothing to hide)."""
        if isinstance(obj, dict | list) and not self._extra:
            # Fast path: one RE2 pass over all the strings joined by newlines. No built-in
            # candidate crosses a newline or uses anchors, so a clean join means every string
            # is clean. (Extra patterns may use ^/$, so with extras each string is checked.)
            strings: list[str] = []
            if not _gather(obj, strings) and _BUILTIN_SET.Match("\n".join(strings)) is None:
                return obj
        return self._mask_obj(obj)

    def _mask_obj(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.mask_text(obj)
        if isinstance(obj, dict):
            out = None
            env_secret = _is_secret_env_entry(obj)
            renamed = False
            for k, v in obj.items():
                if (isinstance(k, str) and is_secret_key(k)) or (env_secret and k == "value"):
                    nv = v if v is None or v == "" or isinstance(v, bool) else MASK
                else:
                    nv = self._mask_obj(v)
                # a key is text too: {"ghp_...": 1} or {"password=x": 1} keeps no secret
                nk = self.mask_text(k) if isinstance(k, str) and (self._extra or k not in _clean_keys) else k
                if nv is not v or nk != k:
                    if out is None:
                        out = dict(obj)
                    out[k] = nv
                    renamed = renamed or nk != k
            if renamed:
                out = {(self.mask_text(k) if isinstance(k, str) else k): v for k, v in out.items()}
            return obj if out is None else out
        if isinstance(obj, list):
            out_list = None
            for i, v in enumerate(obj):
                nv = self._mask_obj(v)
                if nv is not v:
                    if out_list is None:
                        out_list = list(obj)
                    out_list[i] = nv
            return obj if out_list is None else out_list
        return obj


def _is_secret_env_entry(obj: dict) -> bool:
    """A Kubernetes env entry (``{"name": "DB_PASSWORD", "value": "..."}``) of a secret."""
    name = obj.get("name") if "value" in obj else None
    return isinstance(name, str) and is_secret_key(name)


def _gather(obj: Any, strings: list[str]) -> bool:
    """Collect the strings under ``obj``; True as soon as a secret-looking key is seen (the
    caller then masks the whole object and ignores ``strings``). Exact-type tests first:
    decoded JSON holds only plain dicts, lists and strings, and this runs over every event."""
    if isinstance(obj, dict):
        cached = _key_cache.get
        for k in obj:
            hit = cached(k)
            if hit is None:
                hit = isinstance(k, str) and is_secret_key(k)
            if hit:
                return True
        if "value" in obj and _is_secret_env_entry(obj):
            return True
        for k in obj:  # keys are masked as text too; most repeat, and are known clean
            if k not in _clean_keys:
                if type(k) is not str or _BUILTIN_SET.Match(k) is not None:
                    return True
                if len(_clean_keys) < 10_000:
                    _clean_keys.add(k)
        values: Any = obj.values()
    elif isinstance(obj, list):
        values = obj
    else:
        return False
    append = strings.append
    for v in values:
        t = type(v)
        if t is str:
            append(v)
        elif t is dict or t is list:
            if _gather(v, strings):
                return True
        elif isinstance(v, str):
            append(v)
        elif isinstance(v, dict | list) and _gather(v, strings):
            return True
    return False


def _builtin_patterns() -> list[str]:
    """The candidates, then the token rules: the order of ``SecretMasker._kinds``."""
    return [pattern for _, pattern in _CANDIDATES] + [rule.pattern for rule in TOKEN_RULES]


def _candidate_set(extra: Iterable[str] = ()) -> Any:
    return compile_set([*_builtin_patterns(), *extra])


_BUILTIN_SET = _candidate_set()


# --- one pass over the record's bytes ---------------------------------------------------------
#
# Most records hold no secret. ``record_is_clean`` proves that from the record's JSON text in one
# RE2 pass, so ingest can skip masking the message, the context, the stack trace and the whole
# object one by one. The proof: with no ``\\`` and no ``\u`` escape in the text, undoing the
# other escapes (``\"``, ``\n``, ``\t``, ``\r``, ``\/``) gives a text in which every decoded
# string (key or value) stands verbatim between two quotes. The built-in candidates use no
# anchors and no word boundaries, so a candidate found in any such string, or in a piece of one
# (the message, a context value), is found in that text too. Keys are judged by what
# :func:`is_secret_key` does: a secret word spelled with any separators between its letters,
# anywhere in the text (keys, and the ``name`` of a Kubernetes env entry), or a whole string
# that is one of the exact secret keys. A candidate found means "maybe": the caller masks the
# usual way, so the result is the same as masking everything, only cheaper when clean.


def _spelled(word: str) -> str:
    """``word`` with any non-alphanumeric characters between its letters, case-insensitively,
    as :func:`is_secret_key` reads a key (it removes them after lower-casing). The separator
    class stays outside ``(?i:...)``: folded, it would refuse the long s, which Python drops."""
    return "[^a-zA-Z0-9]*".join(f"(?i:{re.escape(ch)})" for ch in word)


# Only text with a non-ASCII character can hold it: kept out of the sets every record passes
# through, asked of non-ASCII records alone (most logs are ASCII).
_ASCII_FREE_KINDS = frozenset({"unicode_key"})


def _raw_patterns() -> list[str]:
    patterns = [p for (kind, _), p in zip(_CANDIDATES, _builtin_patterns()) if kind not in _ASCII_FREE_KINDS]
    patterns += _builtin_patterns()[len(_CANDIDATES):]
    patterns += [_spelled(word) for word in _SECRET_KEY_WORDS]
    patterns += ['"[^a-zA-Z0-9]*' + _spelled(word) + '[^a-zA-Z0-9]*"' for word in _SECRET_KEY_EXACT]
    return patterns


def _raw_matchers(parts: int = 2) -> tuple[Any, ...]:
    """The raw patterns as ``parts`` RE2 sets (every other pattern in each), as the C-level
    match functions (bytes in, a list of hits out). Why not one set: its DFA tracks every
    pattern's counters at once (``{32}``, ``{20,50}``...), so on records full of fresh ids it
    keeps building states; two half sets cost ~8 us per 700-byte record where one costs ~13
    (measured over 40,000 unseen bench records after 40,000 of warm-up)."""
    patterns = _raw_patterns()
    return tuple(compile_set(patterns[i::parts])._set.Match for i in range(parts))


_RAW_MATCHERS = _raw_matchers()
_NON_ASCII_MATCH = compile_set([p for kind, p in _CANDIDATES if kind in _ASCII_FREE_KINDS])._set.Match
# Characters whose lower-case form holds an ASCII letter the RE2 folding does not give (U+0130
# lowers to "i" plus a combining dot): a record holding one is masked the usual way.
_FOLD_TRAPS = ("\u0130".encode(),)
_ESCAPES = ((b'\\"', b'"'), (b"\\n", b"\n"), (b"\\t", b"\t"), (b"\\r", b"\r"), (b"\\/", b"/"))


def record_is_clean(value: bytes) -> bool:
    """Whether no string of the JSON record ``value`` (keys included) can need masking by the
    default rules: True means masking every part of the decoded record would change nothing.
    False means "maybe": mask as usual. Callers with extra patterns must not use it."""
    if b"\\" in value:
        if b"\\\\" in value or b"\\u" in value:
            return False
        for escaped, plain in _ESCAPES:
            if escaped in value:
                value = value.replace(escaped, plain)
        if b"\\" in value:  # \b or \f: rare, not worth a rule
            return False
    for trap in _FOLD_TRAPS:
        if trap in value:
            return False
    for match in _RAW_MATCHERS:
        if match(value):
            return False
    if not value.isascii():
        if _NON_ASCII_MATCH(value):
            return False
        # keys are judged NFKC-normalised and case-folded (is_secret_key): ｐａｓｓｗｏｒｄ holds
        # no ASCII letter for the pass above to see, its normal form does
        folded = unicodedata.normalize("NFKC", value.decode("utf-8", "replace")).casefold().encode()
        if folded != value:
            for match in _RAW_MATCHERS:
                if match(folded):
                    return False
    return True


def _mask_extra(rx: Any, s: str) -> str:
    groups = range(1, rx.groups + 1) if rx.groups else (0,)
    return mask_spans(s, (m.span(g) for m in rx.finditer(s) for g in groups), MASK)


_default = SecretMasker()
_default_mask_text = _default.mask_text


def mask_text(s: str) -> str:
    """Mask ``s`` with the default masker (no extra patterns)."""
    return _default.mask_text(s)


def mask_obj(obj: Any) -> Any:
    """Mask a decoded JSON value with the default masker (no extra patterns)."""
    return _default.mask_obj(obj)
