"""A process's resident memory as the benchmarks report it (Linux /proc; the measures are Linux's)."""

from __future__ import annotations

from pathlib import Path


def rss_mib(pid: int | None = None) -> float | None:
    """The resident memory (VmRSS) of `pid`, this process by default; None once it is gone, or where
    /proc is not."""
    status = Path(f"/proc/{'self' if pid is None else pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
