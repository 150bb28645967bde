"""`python -m service.security new-key --name ci-bot --role admin`: a key and its API_KEYS entry."""

from __future__ import annotations

import argparse
import sys

from service.security.auth import ROLES, new_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.security", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new-key", help="generate a random API key")
    make.add_argument("--name", required=True, help="who uses it (appears in logs and rate-limit buckets)")
    make.add_argument("--role", choices=ROLES, required=True)
    args = parser.parse_args(argv)
    if ":" in args.name or "," in args.name:
        print("error: the name cannot contain ':' or ','", file=sys.stderr)
        return 2
    key, entry = new_key(args.name, args.role)
    print(f"key (give it to the client, store it nowhere else): {key}")
    print(f"entry (append to API_KEYS, comma-separated):        {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
