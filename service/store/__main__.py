"""`python -m service.store migrate PATH [--to NEW_PATH]`: convert an earlier release's embedded store
(qdrant-client's local mode) to the qdrant-edge store this release serves.

Exit status: 0 converted (or already a qdrant-edge store), 2 refused (a bad path or target: nothing
was touched), 1 failed (the source is left as it was). Stop the service first: the folder has one owner.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from service.platform.logs import configure_logging, get_logger
from service.store.migrate import AlreadyEdge, Migration, MigrationFailed, MigrationRefused, migrate_folder

_log = get_logger("service.store")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.store", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser(
        "migrate",
        help="convert a qdrant-client local-mode folder (earlier releases) to a qdrant-edge store",
        description="Copy every collection, its settings, metadata, aliases and points into a qdrant-edge "
        "store, compare the point counts, build the indexes, then put it in place.",
    )
    migrate.add_argument("path", type=Path, help="the local-mode folder (the earlier release's QDRANT_PATH)")
    migrate.add_argument(
        "--to",
        dest="target",
        type=Path,
        default=None,
        help="write the qdrant-edge store to this new or empty folder and leave PATH as it is "
        "(default: convert PATH in place, keeping the old folder as PATH.local-backup-<UTC time>)",
    )
    migrate.add_argument("--batch-size", type=_positive, default=256, help="points per write")
    return parser


def _summary(done: Migration) -> str:
    lines = [
        f"migrated {len(done.collections)} collection(s), {done.points} points, from {done.source} "
        f"to the qdrant-edge store {done.store} in {done.seconds:.1f}s"
    ]
    for copied in done.collections:
        lines.append(
            f"  {copied.name}: {copied.points} points, payload indexes {', '.join(copied.payload_indexes)}"
        )
        if not copied.index_settings_kept:
            lines.append("    no index settings recorded (not made by the service): qdrant-edge's defaults")
    for alias, collection in sorted(done.aliases.items()):
        lines.append(f"  alias {alias} -> {collection}")
    if done.backup is not None:
        lines.append(
            f"the local-mode store is kept at {done.backup}: remove it once the service runs on {done.store}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()  # JSON lines on stderr, the summary on stdout
    try:
        done = asyncio.run(migrate_folder(args.path, args.target, batch_size=args.batch_size))
    except AlreadyEdge as exc:
        print(exc)
        return 0
    except MigrationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MigrationFailed as exc:
        if exc.__cause__ is not None:  # an engine or disk error: its detail goes to the log
            _log.error("migration failed", exc_info=exc.__cause__)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_summary(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
