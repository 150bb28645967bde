"""A reindex's writes to its new collection while the live one keeps serving: the store's reindex state.

While a reindex builds a new collection (the "shadow") and copies the live one into it, every write
also goes to the shadow, so the alias swap loses nothing acknowledged in between. Two writers meet
there, the service's writes and the reindex's copier, and the newer must win: ids written directly
since the reindex began are remembered, the copier leaves them alone, and one lock orders the two (and
the swap itself, so no write is half-way between the collections when the alias moves).

This module holds only that state and its ordering; the Qdrant calls are handed to it as functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

_P = TypeVar("_P")


class DualWrites:
    def __init__(self) -> None:
        self._target: str | None = None
        self._touched: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def target(self) -> str | None:
        """The collection being built (None: no reindex is copying). Read it before a live write: a
        write that lands in the old collection must reach the new one even if the alias swaps while
        it is in flight."""
        return self._target

    def start(self, target: str) -> None:
        """From now on writes reach `target` too."""
        self._target, self._touched = target, set()

    def stop(self) -> None:
        """The reindex ended (swapped, failed or cancelled): writes go to the live collection only."""
        self._target = None

    async def mirror(
        self, target: str, anime_ids: Iterable[str], write: Callable[[], Awaitable[object]]
    ) -> None:
        """Apply a live write to `target` as well (`write` does it), after the live write succeeded.

        A failure is swallowed when the reindex ended meanwhile (a server answers 404 for a dropped
        collection, local mode raises ValueError): if it swapped, the write is already in the live
        collection; if it failed, its half-built collection is gone. Either way nothing was lost.
        """
        async with self._lock:
            self._touched.update(anime_ids)
            try:
                await write()
            except Exception:
                if self._target == target:
                    raise

    async def copy(
        self,
        points: Sequence[_P],
        anime_id: Callable[[_P], str],
        write: Callable[[list[_P]], Awaitable[object]],
    ) -> None:
        """The copier's write of `points` (`write` does it), less those written directly since the
        reindex began: those are newer than the copy."""
        async with self._lock:
            await write([p for p in points if anime_id(p) not in self._touched])

    async def swap(self, point_alias: Callable[[], Awaitable[object]]) -> None:
        """Move the alias (`point_alias` does it) with no write in between, and stop mirroring."""
        async with self._lock:
            await point_alias()
            self._target = None
