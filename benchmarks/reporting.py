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
