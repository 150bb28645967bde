"""What every benchmark writes beside its numbers: the machine and the command that produced them."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}


def write_results(path: Path, module: str, argv: list[str] | None, results: dict[str, Any]) -> None:
    """`results` as JSON at `path`, with the environment and the exact command line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    document = {"environment": environment(), "command": command, **results}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False))


def portable_source(source: str) -> str:
    """A checkpoint's manifest `source` as a report may show it: a Hub id as is, a local path without
    the machine's layout (results are published, and compared across machines)."""
    path = Path(source)
    if not path.is_absolute():
        return source
    for marker in ("site-packages", "dist-packages"):
        if marker in path.parts:
            # An installed package's data: the package name says which model it is.
            return Path(*path.parts[path.parts.index(marker) + 1 :]).as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name
