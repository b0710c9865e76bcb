"""A second held-out grouping corpus: log lines from the published format strings of real software.

The ten LogHub-2k systems and the PostgreSQL corpus have been looked at while rules were
written; this corpus has not. Its events are real programs' message formats: the ``msgid`` s
of the gettext catalogs Debian ships (``/usr/share/locale/*/LC_MESSAGES/NAME.mo``: git,
Kerberos, shadow and PAM, dpkg and apt, GnuPG), each system a file in LogHub's structured
columns (``bench.grouping --corpus bench/data`` reads them). A line is one format string filled
with values the way a program's values come: per slot a handful of distinct values (1 to 12),
one of them dominant, sometimes a long tail (scanner user names, generated ids), drawn by what
the text around the slot names (a user, a file, a package, a host, a key, a ref...), numbers
for numeric conversions. Events are Zipf-distributed, as in a log.

Truth: a line's EventId is its format string, except at a slot filled from a closed set
(states, verbs, HTTP methods, directions: a small vocabulary that several unrelated formats
share), where the word is part of the event, as LogHub's labels make it (``session opened``
and ``session closed`` are two events): a merge that joins them is an over-merge. Such slots
are a minority, chosen at random among the ``%s`` slots whose text names no value class.

Seeded and deterministic for one set of catalogs:

    python -m bench.gettext_corpus            # writes bench/data/<System>_gettext.log_structured.csv
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import random
import re
from pathlib import Path

from bench.pg_corpus import _CONVERSION, read_mo

DATA = Path(__file__).resolve().parent / "data"
# system name -> catalogs (their msgids are the system's formats)
SYSTEMS = {
    "Git": ("git",),
    "Kerberos": ("mit-krb5",),
    "Auth": ("shadow", "Linux-PAM", "adduser"),
    "Packages": ("dpkg", "apt", "libapt-pkg6.0"),
    "GnuPG": ("gnupg2",),
}
LINES = 1000
EVENTS = 50
CLOSED_SHARE = 0.12  # of the %s slots that name no value class

USERS = ["root", "alice", "deploy", "postgres", "www-data", "ubuntu", "jenkins", "backup", "svc_billing", "mkowalski",
         "admin", "test", "oracle", "guest", "ftpuser", "nagios", "git", "ansible", "j.smith", "devops"]
GROUPS = ["wheel", "sudo", "docker", "staff", "adm", "users", "developers", "audio", "ssl-cert"]
PATHS = ["/etc/passwd", "/var/lib/dpkg/status", "/home/alice/.gnupg/pubring.kbx", "/srv/data/export.csv", "/tmp/tmp.Xk2f9",
         "/var/log/auth.log", "/usr/share/doc/README", "src/main.c", "docs/index.md", "/etc/krb5.conf", "/run/lock/apt",
         "C:\\Users\\build\\repo", "./configure", "/opt/app/config.yml", "/var/cache/apt/archives/partial"]
PACKAGES = ["openssl", "libssl3", "nginx", "openssh-server", "python3-apt", "linux-image-6.1.0-18-amd64", "curl",
            "postgresql-15", "ca-certificates", "tzdata", "libc6", "systemd", "git-man", "gnupg", "vim-tiny"]
HOSTS = ["db01.example.com", "10.0.3.17", "kdc.corp.internal", "github.com", "192.168.1.20", "mirror.hetzner.de",
         "localhost", "keys.openpgp.org", "fe80::1ff:fe23:4567:890a", "build-agent-7", "ldap"]
KEYS = ["0x4AEE18F83AFDEB23", "A1B2C3D4", "rsa4096/0F3B2C1D", "ed25519", "DEADBEEFCAFE0042", "3AA5C34371567BD2",
        "8D81803C0EBFCD88", "alice@example.org", "Debian Archive Automatic Signing Key"]
REFS = ["main", "master", "origin/main", "feature/login", "v2.3.1", "HEAD", "refs/heads/dev", "release-2024.03",
        "a3f9c2e", "hotfix", "origin", "upstream", "bugfix/JIRA-1432"]
PRINCIPALS = ["alice@EXAMPLE.COM", "host/web01.example.com@EXAMPLE.COM", "krbtgt/EXAMPLE.COM@EXAMPLE.COM",
              "HTTP/api.example.com@EXAMPLE.COM", "kadmin/admin@EXAMPLE.COM", "bob@EXAMPLE.COM"]
NAMES = ["nginx", "postgres", "redis", "scheduler", "worker", "api-gateway", "billing", "cron", "sshd", "kubelet",
         "eth0", "wlan0", "sda1", "nvme0n1p2", "vg0-root", "br-lan", "mydomain", "upload_queue", "PaymentService",
         "com.example.App", "default", "core", "utf-8", "libfoo.so.2"]
OPTIONS = ["core.autocrlf", "user.email", "gpg.program", "Dir::Cache", "APT::Get::Assume-Yes", "keyserver",
           "default_realm", "ticket_lifetime", "UMASK", "PASS_MAX_DAYS", "--force-depends", "--no-verify"]
VERSIONS = ["1.0", "2.39.2", "3.0.11-1~deb12u2", "1:9.2p1-2", "6.1.76-1", "2.2.40-1.1", "0.9.8"]
# closed sets: small vocabularies several unrelated formats share; the word is the event
CLOSED = [
    ["started", "stopped", "failed", "restarted"],
    ["GET", "POST", "PUT", "DELETE"],
    ["enabled", "disabled"],
    ["read", "write", "append"],
    ["up", "down"],
    ["accepted", "rejected", "deferred"],
]
# what the words before a slot name (the nearest first) -> where its values come from
KINDS = (
    (re.compile(r"user|login|account|owner|uid|username", re.I), USERS),
    (re.compile(r"group|gid", re.I), GROUPS),
    (re.compile(r"file|directory|dir|path|open|read|write|stat|create|remove|unlink|rename|archive|log", re.I), PATHS),
    (re.compile(r"package|pkg", re.I), PACKAGES),
    (re.compile(r"host|server|address|connect\w*|remote|url|from", re.I), HOSTS),
    (re.compile(r"key|fingerprint|signature|subkey|keyid", re.I), KEYS),
    (re.compile(r"branch|ref|commit|tag|revision|object|upstream", re.I), REFS),
    (re.compile(r"principal|client|service|realm|ticket", re.I), PRINCIPALS),
    (re.compile(r"option|variable|setting|parameter|config\w*", re.I), OPTIONS),
    (re.compile(r"version", re.I), VERSIONS),
)


def kind_of(before: str) -> list[str] | None:
    """The value pool the nearest of the two words before a slot names, if any."""
    for word in reversed(re.findall(r"[A-Za-z]+", before)[-2:]):
        for rule, pool in KINDS:
            if rule.fullmatch(word):
                return pool
    return None


def formats_of(catalogs: tuple[str, ...]) -> list[str]:
    """Single-line format strings with at least one conversion and some words of their own."""
    out: set[str] = set()
    for name in catalogs:
        paths = sorted(glob.glob(f"/usr/share/locale/*/LC_MESSAGES/{name}.mo"))
        if paths:  # the msgids are the same in every language's catalog: one is enough
            out.update(read_mo(Path(paths[0])))
    keep = []
    for msgid in sorted(out):
        text = msgid.strip()
        if "\n" in text or "\t" in text or not _CONVERSION.search(text) or len(text) > 140:
            continue
        literal = _CONVERSION.sub(" ", text)
        if len(re.findall(r"[A-Za-z]{3,}", literal)) < 2 or "%*" in text or "usage" in text.lower():
            continue
        if any(m.group(5) in "cpm" or m.group(2) == "*" for m in _CONVERSION.finditer(text)):
            continue
        keep.append(text)
    return keep


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


class Slot:
    """Where one conversion of one format takes its values from, and how often each."""

    def __init__(self, rng: random.Random, kind: str, before: str) -> None:
        self.closed = False
        if kind in "diux":
            span = rng.choice([10, 100, 5000, 70000, 2**31])
            self.draw = (lambda: format(rng.randrange(span), "x")) if kind == "x" else (lambda: str(rng.randrange(span)))
            return
        if kind in "eEfgG":
            self.draw = lambda: f"{rng.uniform(0, 500):.{rng.choice([1, 2, 3])}f}"
            return
        pool = kind_of(before)
        if pool is None and rng.random() < CLOSED_SHARE:
            self.closed = True
            pool = rng.choice(CLOSED)
        pool = pool or NAMES
        distinct = min(len(pool), rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12]))
        values = rng.sample(pool, distinct)
        weights = [rng.uniform(0.6, 0.97)] + [w * 0.1 for w in _zipf_weights(distinct - 1, 1.0)] if distinct > 1 else [1.0]
        tail = not self.closed and rng.random() < 0.25  # an open set that keeps growing
        def draw() -> str:
            if tail and rng.random() < 0.15:
                return rng.choice(pool) + (f"{rng.randrange(100)}" if rng.random() < 0.5 else rng.choice(["x", "_old", "2"]))
            return rng.choices(values, weights)[0]
        self.draw = draw


class Event:
    def __init__(self, rng: random.Random, msgid: str) -> None:
        self.msgid = msgid
        self.pieces: list[str] = []
        self.slots: list[Slot] = []
        pos = 0
        for m in _CONVERSION.finditer(msgid):
            if m.group(5) == "%":
                continue
            self.pieces.append(msgid[pos : m.start()].replace("%%", "%"))
            self.slots.append(Slot(rng, m.group(5), msgid[max(0, m.start() - 40) : m.start()]))
            pos = m.end()
        self.pieces.append(msgid[pos:].replace("%%", "%"))

    def line(self) -> tuple[str, str, str]:
        """(content, event id, template)."""
        values = [slot.draw() for slot in self.slots]
        content = "".join(p + v for p, v in zip(self.pieces, values)) + self.pieces[-1]
        label = [self.msgid] + [v for s, v in zip(self.slots, values) if s.closed]
        template = "".join(p + (v if s.closed else "<*>") for p, s, v in zip(self.pieces, self.slots, values)) + self.pieces[-1]
        event = "G" + hashlib.sha256("\x1f".join(label).encode()).hexdigest()[:10]
        return " ".join(content.split()), event, " ".join(template.split())


def build(system: str, catalogs: tuple[str, ...], seed: int, lines: int = LINES, events: int = EVENTS) -> list[tuple[str, str, str]]:
    rng = random.Random(f"{seed}:{system}")
    formats = formats_of(catalogs)
    if not formats:
        raise FileNotFoundError(f"no catalog of {catalogs} under /usr/share/locale (apt-get install the packages)")
    chosen = [Event(rng, m) for m in rng.sample(formats, min(events, len(formats)))]
    weights = _zipf_weights(len(chosen), 1.1)
    return [rng.choices(chosen, weights)[0].line() for _ in range(lines)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args(argv)
    for system, catalogs in SYSTEMS.items():
        rows = build(system, catalogs, args.seed)
        path = args.out / f"{system}_gettext.log_structured.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["LineId", "Content", "EventId", "EventTemplate"])
            for n, (content, event, template) in enumerate(rows, 1):
                writer.writerow([n, content, event, template])
        print(f"{path}: {len(rows)} lines, {len({r[1] for r in rows})} events")


if __name__ == "__main__":
    main()
