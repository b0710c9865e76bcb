"""Token shapes of known services, from a maintained rule set, for :mod:`elk_resolver.events.masking`.

The rules come from detect-secrets (Yelp, Apache-2.0: its regex-based plugins, read from the
installed package at start, so an upgrade brings new shapes without touching this file),
translated to RE2 so they join masking's single linear-time candidate pass:

* plugins whose rules need look-behind (the keyword detectors: ``cloudant_password = ...``)
  are left out: masking's own ``key=value`` rule covers that form for every secret word;
* a trailing ``(?!\\w)`` is dropped (RE2 has no look-ahead) and the match is instead
  extended over the token characters that follow, so no tail of a longer token survives;
* repetition bounds above RE2's limit of 1,000 are lowered to it;
* plugins that are not about secrets or that a log line trips on by accident are left out:
  public IP addresses (context, not a secret), Artifactory (``AP`` + 9 letters matches
  ordinary upper-case words), and the shapes masking already handles with more care (JWTs,
  private-key blocks).

A few shapes detect-secrets does not know are added here (:data:`EXTRA_SHAPES`), each a
published token format: Google API keys, npm access tokens, GitHub fine-grained tokens, and,
after gitleaks' rules (MIT), OpenAI/Anthropic ``sk-`` keys and HashiCorp Vault tokens.

Each rule masks its secret group when the plugin marks one (a password in a URL, the token
in an ``.npmrc`` line, an AWS secret after its key name), else the whole match.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

# detect-secrets plugin classes left out, and why (see the module docstring).
EXCLUDED_PLUGINS = frozenset({
    "IPPublicDetector",  # not a secret; the context masking must keep
    "ArtifactoryDetector",  # AP[0-9A-F] + 8 letters: ordinary words such as APDUException
    "JwtTokenDetector",  # masking's own JWT rule is stricter (two eyJ parts)
    "PrivateKeyDetector",  # matches the BEGIN line only; masking's PEM rule masks the block
})
# Single rules left out: masking's own AWS key id rule has the same prefixes with word
# boundaries (a 21-character AKIA... word is not a key id).
EXCLUDED_RULES = frozenset({"AWSKeyDetector[0]"})
# Plugins whose first group is the secret (the rest of the match is context to keep).
SECRET_GROUP_PLUGINS = frozenset({"AWSKeyDetector", "BasicAuthDetector", "NpmDetector", "CloudantDetector",
                                  "SoftlayerDetector"})

EXTRA_SHAPES = (
    ("google_api_key", r"AIza[0-9A-Za-z_-]{35}"),
    ("npm_token", r"npm_[A-Za-z0-9]{36}"),
    ("github_fine_grained", r"github_pat_[A-Za-z0-9_]{22,}"),
    ("slack_app_token", r"xapp-[0-9]+-[A-Za-z0-9]+-[0-9]+-[A-Za-z0-9]+"),
    # After gitleaks' rules (MIT; config/gitleaks.toml), widened where gitleaks narrows for
    # precision in source code: its openai-api-key wants the T3BlbkFJ marker, which project
    # and service-account keys (sk-proj-..., the service's own LLM key) need not show; an
    # upper-case letter keeps lower-case names such as a pod "sk-prod-worker-7d9f8" out.
    # Its anthropic-api-key shape (sk-ant-api03-...) is covered by the same rule.
    ("openai_api_key", r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[a-z0-9_-]{0,80}[A-Z][A-Za-z0-9_-]{15,}"),
    # vault-service-token / vault-batch-token: hvs. (service), hvb. (batch), hvr. (recovery)
    ("vault_token", r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"),
)

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class TokenRule:
    name: str
    pattern: str
    """RE2 syntax, also added to masking's candidate set."""
    group: int = 0
    """0: mask the whole match (extended over following token characters); n: group n only."""
    regex: Any = field(default=None, compare=False, repr=False)

    def mask(self, s: str, marker: str) -> str:
        return mask_spans(s, (self._span(m, s) for m in self.regex.finditer(s)), marker)

    def _span(self, m: Any, s: str) -> tuple[int, int]:
        start, end = m.span(self.group)
        if self.group == 0 and start >= 0:
            while end < len(s) and s[end] in _TOKEN_CHARS:
                end += 1
        return start, end


def mask_spans(s: str, spans: Iterable[tuple[int, int]], marker: str) -> str:
    """``s`` with each ``(start, end)`` span (in order) replaced by ``marker``; empty,
    missing (-1) or overlapping spans are skipped."""
    pieces: list[str] = []
    last = 0
    for start, end in spans:
        if start < 0 or end <= start or start < last:
            continue
        pieces.append(s[last:start])
        pieces.append(marker)
        last = end
    if not pieces:
        return s
    pieces.append(s[last:])
    return "".join(pieces)


def _to_re2(pattern: str) -> str:
    if pattern.endswith("(?!\\w)"):
        pattern = pattern[: -len("(?!\\w)")]
    return re.sub(r"\{(\d+),(\d+)\}", lambda m: "{%s,%s}" % (m[1], min(int(m[2]), 1000)), pattern)


def _compile(name: str, pattern: str, group: int) -> TokenRule | None:
    options = re2.Options()
    options.log_errors = False
    try:
        regex = re2.compile(pattern, options)
    except re2.error:
        return None
    if group > regex.groups:
        group = 0
    return TokenRule(name, pattern, group, regex)


def detect_secrets_rules() -> list[TokenRule]:
    """The regex-based detect-secrets plugins that compile in RE2, in a stable order."""
    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    rules: list[TokenRule] = []
    for info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{plugins.__name__}.{info.name}")
        for cls_name, cls in sorted(inspect.getmembers(module, inspect.isclass)):
            if (cls.__module__ != module.__name__ or not issubclass(cls, RegexBasedDetector)
                    or cls is RegexBasedDetector or cls_name in EXCLUDED_PLUGINS):
                continue
            for i, rx in enumerate(cls().denylist):
                pattern = _to_re2(rx.pattern)
                if rx.flags & re.IGNORECASE:
                    pattern = f"(?i:{pattern})"
                group = 1 if cls_name in SECRET_GROUP_PLUGINS and rx.groups else 0
                rule = _compile(f"{cls_name}[{i}]", pattern, group)
                if rule is not None and rule.name not in EXCLUDED_RULES:
                    rules.append(rule)
    return rules


def _all_rules() -> tuple[TokenRule, ...]:
    rules = detect_secrets_rules()
    for name, pattern in EXTRA_SHAPES:
        rule = _compile(name, pattern, 0)
        assert rule is not None, name
        rules.append(rule)
    return tuple(rules)


TOKEN_RULES: tuple[TokenRule, ...] = _all_rules()
