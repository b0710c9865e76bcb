"""Error fingerprint: SHA-256 over the error type and a template of the message.

Two messages that differ only in volatile values (ids, addresses, numbers, paths, times) are
the same error, so the ``template`` fingerprint hashes the message with those values replaced
by ``<*>``. ``normalize`` is one general rule set, stateless and deterministic: every consumer
in a group computes the same template for the same message, with no learned state to share.
It runs on the ingest hot path, so every pattern is compiled at import and each rule is
skipped unless a cheap substring test says it can match.

The hash is ``sha256(error_type + "\\x1f" + text)``: the design document's rule (SHA-256 of
error type + error message) with the ASCII unit separator between the two, so that
("a", "b c") and ("a b", "c") cannot collide.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from elk_resolver.events.re2_sets import compile_set

VERSIONS = ("exact", "template")
RULE_VERSION = "rule"  # made by a pattern's fingerprint_fields, not by a setting
DEFAULT_VERSION = "template"
SEPARATOR = "\x1f"
PLACEHOLDER = "<*>"  # one placeholder for every kind: the same slot may hold an IP or a name

_P = PLACEHOLDER
# Common top-level and private-network suffixes: a dotted name ending in one is a host.
# Short file extensions (.py .sh .so .rs .pl...) are left out on purpose.
_TLD = (
    r"(?:com|net|org|edu|gov|mil|int|io|co|uk|de|jp|cn|hk|tw|kr|fr|ru|br|in|au|ca|us|eu|nl|it"
    r"|es|ch|se|info|biz|asia|local|internal|lan|localdomain|svc|cluster)"
)
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_UNIT = r"(?:[KMGTP]i?B|B|bytes|ms|us|ns|sec|secs|s|min|h)"
# Kubernetes' rand.SafeEncodeString alphabet (pod-template-hash and pod name suffixes).
_K8S = "[bcdfghjklmnpqrstvwxz2456789]"
_NO_VOWEL = "[b-df-hj-np-tv-xzB-DF-HJ-NP-TV-XZ]"
# Characters that end a value written as key=value.
_VALUE_END = r"\s,;(){}\[\]<"

# (gate, pattern, replacement), applied in order; a rule runs only if its gate is a substring
# of the text (a C-speed test that skips most rules for most messages). A tuple gate needs
# all of its parts; its part _CD stands for "a colon followed by a digit somewhere", which
# every time rule and the host:port rule require, and which the need set below answers (the
# gates' text is part of rules_digest, so it stays as written).
_CD = ":\\d"
# Order matters: whole entities (URLs, times, hosts, paths) go before the generic digit rule
# would cut them into pieces, and the clean-up rules come last.
_RULES: tuple[tuple[str | tuple[str, ...], re.Pattern[str], str], ...] = (
    # scheme://anything up to a space or quote is one value (URLs, JDBC/akka/spark addresses).
    ("://", re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s\"'<>]+"), _P),
    ("@", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), _P),
    # ISO-8601 and ctime/syslog timestamps are one value, not five numbers and a month name.
    ((_CD, "-"), re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), _P),
    (
        (_CD,),
        re.compile(
            # Starts with a character class, not an alternation, so the engine can skip ahead.
            rf"[A-Z][a-z]{{2}}(?<=\b{_WEEKDAY}|\b{_MONTH})(?:,?\s+{_MONTH})?\s+\d{{1,2}}"
            r"(?:,?\s+\d{4})?\s+\d{1,2}:\d{2}"
            r"(?::\d{2})?(?:\s+[A-Z]{3,4})?(?:\s+\d{4})?\b"
        ),
        _P,
    ),
    # Host names (with an optional port): the same slot holds names and IPs. A listed suffix may
    # be followed by a country code (wsi.edu.pl, example.co.uk); the name must end there.
    (
        ".",
        re.compile(
            rf"(?<![\w.-])(?=[A-Za-z][\w-]*\.)[A-Za-z][\w-]*(?:\.[\w-]+)*\.{_TLD}(?:\.[a-z]{{2}})?\b(?![.-]?\w)"
            r"(?::\d+)?"
        ),
        _P,
    ),
    # Dotted lower-case name with a port, whatever its suffix (db.prod:5432). A dot is required:
    # a bare word:number is far more often key:value (memory:1024) than a host.
    (
        (_CD, "."),
        re.compile(r"(?<![\w.-])(?=[a-z][a-z0-9-]*\.)[a-z][a-z0-9-]*+(?:\.[a-z0-9-]+)++:\d{2,5}\b(?![.:\w])"),
        _P,
    ),
    # Kubernetes generated names, by the way Kubernetes makes them: a ReplicaSet is
    # <deployment>-<pod-template-hash> and its pods add a 5-character suffix; DaemonSet and
    # Job pods add the suffix to their owner's name; a CronJob's Job adds the scheduled minute
    # (digits) first. Hash and suffix are drawn from rand.SafeEncodeString's alphabet
    # (bcdfghjklmnpqrstvwxz2456789: no vowels, no 0/1/3), so they often hold no digit and the
    # digit rule alone would keep them: one crash loop became one error per pod. The whole
    # name is one value, as the digit rule makes it when the hash holds a digit (StatefulSet
    # ordinals, web-0, are digits and so already values), kubelet's pod_namespace included. The last segment has no vowel, so
    # English hyphenated words (read-write, non-blocking) are left alone.
    (
        "-",
        re.compile(
            # (the name may hold the ReplicaSet hash; the first character is matched before
            # the boundary check, so the engine can skip ahead on the character class)
            rf"[a-z](?<![\w.-][a-z])[a-z0-9-]*-{_K8S}{{5,10}}(?:_[\w-]*+)?(?![A-Za-z0-9-]|\.\w)"
        ),
        _P,
    ),
    # The word after "user" names someone: "session opened for user alice", 'for user "pg"'.
    (
        "ser",
        re.compile(
            r"\b([Uu]ser(?:name)?)\s+"
            r"(?!(?:is|was|has|had|not|from|to|by|for|with|in|on|at|of|unknown)\b)"
            r"(?:\"[^\"]*\"|'[^']*'|[\w.@-]+)"
        ),
        r"\1 " + _P,
    ),
    # A quoted value after '=' is one value, spaces included: tag="View Lock".
    ("=", re.compile(r"""(=\s*)(?:"[^"]*"|'[^']*')"""), r"\1" + _P),
    # Windows paths (C:\Windows\..., \\server\share\...): the same class as Unix paths.
    ("\\", re.compile(r"(?<![\w\\])(?:[A-Za-z]:|\\\\[\w.$-]+)\\[^\s\"'<>|,;()\[\]]*"), _P),
    # MAC addresses (six hex pairs with colons): the digit rule takes one whose first pair has
    # a digit whole, but cuts one that starts with letters (aa:bb:...:f1).
    (":", re.compile(r"[0-9A-Fa-f](?<![\w:-][0-9A-Fa-f])[0-9A-Fa-f](?::[0-9A-Fa-f]{2}){5}(?![\w:-])"), _P),
    # File paths: absolute, ./relative, ~/home, with a query string if it is a URL path.
    ("/", re.compile(r"(?<![\w./])(?:\.{1,2}|~)?/[\w.\-/%?&=+]+"), _P),
    # Any other token with a slash inside a word (pkg/Class, a/b/c.txt, HTTP/1.1).
    ("/", re.compile(r"(?<![^\s(\[{=,:])[\w.-]*\w/[\w.][^\s\"'()\[\]{},;]*"), _P),
    # key=value where the value is more than a plain word (dots, colons...): a dotted name,
    # an address, a version. Plain-word values (state=ok, user=root) often are the event.
    ("=", re.compile(rf"=(?=[^{_VALUE_END}]*[^\w{_VALUE_END}])[^{_VALUE_END}]+"), "=" + _P),
    # The workhorse: a word with a digit in it is an id, a count, a version or an address,
    # including its dotted/colon continuation (1.2.3.4:80, blk_-42, v2.app) and a trailing
    # unit (17.7 GB, 250 ms). Letters before the first digit belong to the token
    # (container_01 -> <*>) so ids with and without a sign or prefix agree. A leading < > ~
    # (lifetime <1 sec) is part of the value. Possessive: no backtracking on the hot path.
    (
        "",
        re.compile(
            r"(?<![\w-])[<>~]?[A-Za-z_-]*+\d[\w-]*+(?:\.[\w-]+|:(?=\d)[\w-]+|:[0-9A-Fa-f]{2}\b)*+"
            rf"(?:\s?{_UNIT}\b)?"
        ),
        _P,
    ),
    # A word of six or more letters without a vowel (y counts as one) is not a word of any
    # language a log is written in but a generated token: a random id, a base32/consonant
    # suffix, a mangled name. Judged by its characters alone; with a digit it is gone already.
    ("", re.compile(rf"{_NO_VOWEL}(?<![\w.-]{_NO_VOWEL}){_NO_VOWEL}{{5,}}(?![\w-]|\.\w)"), _P),
    # Eight or more hex letters are a hash or a mask even without a digit (mask=ffffffff);
    # those with a digit are gone already. The boundary check sits after the first character
    # so the engine can skip ahead on the character class.
    ("", re.compile(r"[a-fA-F](?<![\w][a-fA-F])[a-fA-F]{7,}(?!\w)"), _P),
    # An empty () is a value that happened to be empty: "from 1.2.3.4 ()" vs "(host.name)".
    ("()", re.compile(r"\(\)"), "(" + _P + ")"),
    # "1024 bytes (1 KB)": a value restated in brackets is still one value.
    ("<*> (<*>)", re.compile(r"<\*> \(<\*>\)"), _P),
    # Adjacent placeholders joined by light punctuation or a space are one value (lists,
    # ranges, a.b.c, "3 4 5", "@0x7fe @0x7ff"): a list of 2 and a list of 5 ids are the same.
    ("<*>", re.compile(r"<\*>(?:(?:[.:,_/-]{0,2}|,? [@#]?)<\*>)+"), _P),
    # A word a program put in quotes is a value it inserted: a table, constraint, user, key
    # or input (relation "orders", constraint 'users_pkey', Go's %q, Python's repr). One
    # quoted token only: a quoted phrase may hold the event (an HTTP request line's method).
    ('"', re.compile(r'"(?<![^\s(\[{=,:]")(?!<\*>")[^\s"\'`]+"(?=[\s)\]},.;:]|$)'), '"' + _P + '"'),
    ("'", re.compile(r"'(?<![^\s(\[{=,:]')(?!<\*>')[^\s\"'`]+'(?=[\s)\]},.;:]|$)"), "'" + _P + "'"),
)


# What a rule needs somewhere in the message before it can match, for the rules whose own
# pattern is slow to fail (a look-behind at every letter, or no literal to skip ahead to): one
# RE2 set answers them all in a single linear pass over the message as it came in. That answer
# stays true along the chain, because no gate below can match the characters a replacement
# inserts (``<*>``, a space, ``=``, brackets), so a replacement only splits old text: a "no"
# is never turned into a "yes". A digit is any ASCII digit or any non-ASCII character (Python's
# ``\d`` takes every Unicode decimal digit; RE2's tables may be of another Unicode version).
_DIGIT = r"[0-9\x{80}-\x{10FFFF}]"
_NEEDS = {
    "colon_digit": ":" + _DIGIT,
    "month_or_day": rf"{_WEEKDAY}|{_MONTH}",
    "tld": rf"\.{_TLD}",
    "k8s_suffix": rf"-{_K8S}{{5}}",
    "mac": r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}",
    "digit": _DIGIT,
    "consonants": rf"{_NO_VOWEL}{{6}}",
    "hex_letters": r"[a-fA-F]{8}",
}
# rule index -> the needs (all of them) of that rule, besides colon_digit, which a rule whose
# gate names _CD needs
_RULE_NEEDS = {
    3: ("month_or_day",),
    4: ("tld",),
    6: ("k8s_suffix",),
    10: ("mac",),
    14: ("digit",),
    15: ("consonants",),
    16: ("hex_letters",),
}


_NEED_MATCH = compile_set(_NEEDS.values())._set.Match  # bytes -> indices, one linear pass
_NEED_BIT = {name: 1 << i for i, name in enumerate(_NEEDS)}


def _plan_entry(i: int, gate: str | tuple[str, ...]) -> tuple[str, int]:
    """(substring gate or "", needs bit mask or 0) of rule ``i``."""
    needs = _RULE_NEEDS.get(i, ())
    if gate.__class__ is not str:
        needs = ("colon_digit", *needs)
        gate = gate[1] if len(gate) > 1 else ""
    return gate, sum(_NEED_BIT[n] for n in needs)


# (substring gate or "", needs bit mask or 0, pattern, replacement), in the order of _RULES
_PLAN = tuple((*_plan_entry(i, gate), pattern, replacement) for i, (gate, pattern, replacement) in enumerate(_RULES))


# Whole-token variables. A rule masks the part of a token it recognises (the digits of
# ``blk_-42``, the version inside ``org.apache.v2.app.JobEvent``, the id after ``Monitor@``),
# and what stays beside the placeholder looks constant only because this message's value had
# that shape: the same slot holds ``Vendor-Name~<*>~<*>`` in one message and a bare id in the
# next, and one event becomes two templates. A token whose placeholder is glued to name
# characters (letters, digits, ``_ - . ~ $ @ # +``) is therefore one value as a whole. What
# stays is structure: a key before ``=``, ``:``, a dotted leader (``depth.....<*>``) or an
# opening bracket (``chdir(<*>)``, ``WorkSource{<*>}``: the name is a function or a type,
# and the value its argument), and the punctuation that wraps the token.
_GLUED = re.compile(r"\S*?(?:[\w~$@#+.-]<\*>|<\*>(?:[\w~$@#+-]|\.\w))\S*")
# the same test anchored on the placeholder (a literal the engine skips ahead to): most
# templates have no glued placeholder and are done after it
_GLUE_AT = re.compile(r"<\*>(?:(?<=[\w~$@#+.-]<\*>)|(?=[\w~$@#+-]|\.\w))")
_TOKEN_PARTS = re.compile(
    r"([(\[{\"']*)"  # wrapping punctuation before
    r"((?:[^\s=:(\[{<]*?(?:=|:|\.{2,}|[(\[{]))?)"  # a key or a name with its argument bracket
    r"(.*?)"  # the value
    r"([)\]}\"',;:.!?]*)$"  # wrapping punctuation after
)


_JOIN = next(pattern for gate, pattern, _ in _RULES if gate == "<*>")


def _whole(match: re.Match[str]) -> str:
    before, key, value, after = _TOKEN_PARTS.match(match.group(0)).groups()
    if PLACEHOLDER not in value:  # the placeholder sits in the key: the token is one value
        return before + PLACEHOLDER + after
    return before + key + PLACEHOLDER + after


def whole_tokens(template: str) -> str:
    """``template`` with every token whose placeholder is glued to name characters made one
    placeholder (keys, argument brackets and wrapping punctuation stay)."""
    if PLACEHOLDER not in template or _GLUE_AT.search(template) is None:
        return template
    # a token made one value may now stand beside another: one value, as the rules join them
    return _JOIN.sub(_P, _GLUED.sub(_whole, template))


def normalize(message: str) -> str:
    """The message with its volatile values replaced by ``<*>``, each variable token whole."""
    return whole_tokens(mask_values(message))


def mask_values(message: str, plan=_PLAN) -> str:
    """The message with the values the rules recognise replaced by ``<*>``, where they are
    (a piece of a token may be masked): :func:`normalize` before its whole-token step.
    ``plan``: the rules (a benchmark passes a subset, to measure each rule's worth)."""
    have = 0
    for i in _NEED_MATCH(message.encode()):
        have |= 1 << i
    for gate, needs, pattern, replacement in plan:
        if gate and gate not in message:
            continue
        if needs and needs & have != needs:
            continue
        message = pattern.sub(replacement, message)
    return message


def rules_text() -> str:
    """Everything a template depends on, as text: the rules and the whole-token step. Its
    digest (merge_pass.rules_digest) tells the merge pass that stored hashes were made by
    other rules, and it remaps them."""
    rules = "\x1e".join(f"{gate}\x1f{pattern.pattern}\x1f{replacement}" for gate, pattern, replacement in _RULES)
    return rules + "\x1e" + "\x1f".join((_GLUED.pattern, _GLUE_AT.pattern, _TOKEN_PARTS.pattern))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    hash: str  # sha256 hex digest, 64 characters
    template: str  # the text that was hashed with the error type
    version: str


@lru_cache(maxsize=4096)
def fingerprint(error_type: str, message: str, version: str = DEFAULT_VERSION) -> Fingerprint:
    """Dedup key of one error: ``exact`` hashes the raw message, ``template`` its template.

    Pure, so its results are cached (bounded: 4,096 recent keys, a few MB at most): the
    same error message often arrives many times in a row, and its template and hash are
    then one dictionary lookup. An unknown version raises each time (errors are not cached)."""
    if version == "exact":
        template = message
    elif version == "template":
        template = normalize(message)
    else:
        raise ValueError(f"unknown fingerprint version {version!r}; expected one of {VERSIONS}")
    digest = hashlib.sha256(f"{error_type}{SEPARATOR}{template}".encode()).hexdigest()
    return Fingerprint(hash=digest, template=template, version=version)


# --- fingerprint rules per pattern ------------------------------------------------------------

_OWNER_RULES = (
    re.compile(rf"^(.+)-\d{{6,}}-{_K8S}{{5}}$"),  # CronJob -> Job -> pod
    re.compile(rf"^(.+)-{_K8S}{{6,10}}-{_K8S}{{5}}$"),  # Deployment -> ReplicaSet -> pod
    re.compile(r"^(.+)-\d+$"),  # StatefulSet ordinal
    re.compile(rf"^(.+)-{_K8S}{{5}}$"),  # DaemonSet or Job pod
)
RULE_FIELDS = ("pattern", "error_type", "template", "workload", "namespace", "pod", "container", "deployment",
               "service", "host", "index", "file")


def owner_workload(pod: str) -> str:
    """The workload a Kubernetes pod name was generated for (``web-7d9f8b6c5-x2k4q`` -> ``web``)."""
    for rule in _OWNER_RULES:
        m = rule.match(pod)
        if m:
            return m.group(1)
    return pod


@lru_cache(maxsize=256)
def _captures(regex: str):
    import re2  # the patterns' engine: linear time on any input

    from elk_resolver.events.classify import to_re2_syntax

    return re2.compile(to_re2_syntax(regex))


def rule_fingerprint(error_type: str, pattern, message: str, context: dict[str, str]) -> Fingerprint:
    """Fingerprint of an error whose pattern names its fields (``error_patterns.fingerprint_fields``),
    as error trackers' server-side fingerprinting: e.g. ``{pattern,namespace,workload}`` makes
    one error per pattern, namespace and owning workload, whatever the message says. Fields:
    ``pattern`` (the row), ``error_type``, ``template`` (the message template), ``workload``
    (the deployment, else the owner of the pod name), any event context field (namespace, pod,
    container, deployment, service, host, index, file), or ``capture:NAME`` (a named group of
    the pattern's regex). A missing field is empty."""
    parts = []
    for name in pattern.fingerprint_fields:
        if name == "pattern":
            value = str(pattern.id)
        elif name == "error_type":
            value = error_type
        elif name == "template":
            value = normalize(message)
        elif name == "workload":
            value = context.get("deployment") or owner_workload(context.get("pod") or "")
        elif name.startswith("capture:"):
            m = _captures(pattern.pattern_regex).search(message)
            value = (m.groupdict().get(name[8:]) or "") if m else ""
        else:
            value = context.get(name) or ""
        parts.append(f"{name}={value}")
    template = "rule " + " ".join(parts)
    digest = hashlib.sha256(f"{error_type}{SEPARATOR}{template}".encode()).hexdigest()
    return Fingerprint(hash=digest, template=template, version=RULE_VERSION)
