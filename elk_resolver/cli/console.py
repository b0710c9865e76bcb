"""``elk-resolver console hash-password`` and ``elk-resolver console new-token NAME``: the values
the console's settings hold (``ELK_RESOLVER_CONSOLE_USERS``, ``ELK_RESOLVER_CONSOLE_TOKENS``),
made without the secret ever being written anywhere but the terminal."""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elk_resolver.settings import Settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    console = subparsers.add_parser("console", help="make password hashes and API tokens for the web console")
    actions = console.add_subparsers(dest="action", required=True)
    hashing = actions.add_parser("hash-password", help="scrypt hash of a password (asked for, or read from stdin)")
    hashing.add_argument("user", nargs="?", help="print the ELK_RESOLVER_CONSOLE_USERS entry for this user")
    token = actions.add_parser("new-token", help="a random API token and its ELK_RESOLVER_CONSOLE_TOKENS entry")
    token.add_argument("user")


def run(args: argparse.Namespace, _settings: Settings) -> int:
    from elk_resolver.console.auth import hash_password, token_hash

    if args.action == "new-token":
        value = secrets.token_urlsafe(32)
        print(f"token (give it to {args.user}; it is not stored): {value}")
        print(f"ELK_RESOLVER_CONSOLE_TOKENS entry: {json.dumps({args.user: token_hash(value)})}")
        return 0
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("error: an empty password", file=sys.stderr)
        return 2
    hashed = hash_password(password)
    print(json.dumps({args.user: hashed}) if args.user else hashed)
    return 0
