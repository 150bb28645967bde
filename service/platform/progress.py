"""Progress for long work (export, ingest, benchmarks): a live bar on a terminal, plain lines in logs.

Redirected output (CI, `kubectl logs`) gets a line per step or per tenth of the work instead of
hundreds of carriage-return redraws.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


def _interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def counter(title: str, total: int, unit: str = "item") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; reports rate and ETA."""
    interactive = _interactive()
    bar = tqdm(
        total=total, desc=title, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not interactive
    )
    done = 0
    started = time.monotonic()
    next_report = 0.1
    if not interactive:
        print(f"[{title}] starting: {total} {unit}", file=sys.stderr, flush=True)

    def advance(n: int) -> None:
        nonlocal done, next_report
        done += n
        bar.update(n)
        if not interactive and total and (done / total >= next_report or done == total):
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed else 0.0
            eta = (total - done) / rate if rate else 0.0
            print(
                f"[{title}] {done}/{total} ({done / total:.0%}) {rate:.1f} {unit}/s, eta {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            while next_report <= done / total:
                next_report += 0.1

    try:
        yield advance
    finally:
        bar.close()


@contextmanager
def steps(title: str, total: int) -> Iterator[Callable[[str], None]]:
    """Yield `step(description)`; each call finishes the previous step and starts the next."""
    interactive = _interactive()
    bar = tqdm(
        total=total, desc=title, unit="step", file=sys.stderr, dynamic_ncols=True, disable=not interactive
    )
    number = 0

    def step(description: str) -> None:
        nonlocal number
        if number:
            bar.update(1)
        number += 1
        bar.set_postfix_str(description)
        if not interactive:
            print(f"[{title}] {number}/{total} {description}", file=sys.stderr, flush=True)

    try:
        yield step
        if number:
            bar.update(1)
    finally:
        bar.close()
