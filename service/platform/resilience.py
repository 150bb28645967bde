"""Circuit breakers, on one library (purgatory), for every dependency: encoder engine, store, cache.

After `threshold` consecutive failures a circuit opens: calls are refused at once instead of each
waiting for a timeout. After `reset_s` the circuit half-opens and lets a call through; if it
succeeds the circuit closes and traffic resumes, with no restart. What counts as a failure is the
caller's choice (the engine and store count outages only, the cache any error).

purgatory's state machine (`Context` and its states) counts failures and decides the transitions
closed → opened and half-opened → closed | opened. What it does not offer is added here, and nothing
else: a clock of the caller's choosing (purgatory reads `time.time()`, which tests cannot drive and
which jumps with the wall clock), so the opened → half-opened step is taken here on that clock; a
half-open state that lets a single probe through (the cache's choice; purgatory lets every call
through, which the engine and store keep); and a cancelled call counting for nothing (it says nothing
about the dependency; purgatory would count it as a failure, or as a success once excluded).

Imports only the standard library, purgatory and `service.platform`: every layer above may use it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, Context, HalfOpenedState, OpenedState, State

from service.platform.errors import DependencyUnavailable

__all__ = ["CLOSED", "HALF_OPENED", "OPENED", "Breakers", "Circuit", "CircuitOpen"]

_T = TypeVar("_T")


class CircuitOpen(Exception):
    """Raised by `Circuit.call` instead of running the call: the circuit refuses it now."""

    def __init__(self, circuit: str) -> None:
        super().__init__(f"circuit '{circuit}' is open")
        self.circuit = circuit


class _ClockedContext(Context):
    """purgatory's context, with the time a circuit opened read from the caller's clock."""

    def __init__(
        self,
        name: str,
        threshold: int,
        ttl: float,
        clock: Callable[[], float],
        counts: Callable[[Exception], bool],
    ) -> None:
        # purgatory's exclude list: an excluded exception ends the call as a success would.
        super().__init__(name, threshold, ttl, exclude=[(Exception, lambda exc: not counts(exc))])
        self.clock = clock

    def set_state(self, state: State) -> None:
        # Every transition goes through here, including purgatory's own closed/half-opened → opened,
        # so the stamp is restamped before anyone reads it.
        if isinstance(state, OpenedState):
            state.opened_at = self.clock()
        super().set_state(state)


def _any_error(exc: Exception) -> bool:
    return True


class Circuit:
    """One dependency's circuit.

    `call` runs a coroutine through it or raises `CircuitOpen` without running it. A call that is
    cancelled says nothing about the dependency, so it changes nothing. `bypass=True` runs the call
    whatever the state and still records its outcome: a health check sees the truth, and its
    success closes an open circuit.
    """

    def __init__(
        self,
        name: str,
        *,
        threshold: int,
        reset_s: float,
        counts: Callable[[Exception], bool] = _any_error,
        single_probe: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_s = reset_s
        self.single_probe = single_probe
        self._clock = clock
        self._on_change = on_change
        self._context = _ClockedContext(name, threshold, reset_s, clock, counts)
        self._probing = False

    @property
    def state(self) -> str:
        """closed | opened | half-opened (purgatory's names)."""
        return self._context.state

    def refusing(self) -> bool:
        """Whether a call made now would be refused (without making it, or changing anything)."""
        if self.state == OPENED:
            return not self._cooled_down()
        return self.state == HALF_OPENED and self.single_probe and self._probing

    async def call(self, run: Callable[[], Awaitable[_T]], *, bypass: bool = False) -> _T:
        if not bypass and self.refusing():
            raise CircuitOpen(self.name)
        if self.state == OPENED:
            # Cooled down, or bypassing: purgatory's half-open rules decide on this call's outcome.
            self._transition(partial(self._context.set_state, HalfOpenedState()))
        self._context.handle_new_request()
        took_probe = self.state == HALF_OPENED and not self._probing
        if took_probe:
            self._probing = True
        try:
            result = await run()
        except Exception as exc:
            self._transition(partial(self._context.handle_exception, exc))
            raise
        finally:
            if took_probe:
                self._probing = False
        self._transition(self._context.handle_end_request)
        return result

    def _cooled_down(self) -> bool:
        opened_at = self._context.opened_at
        return opened_at is None or self._clock() >= opened_at + self.reset_s

    def _transition(self, step: Callable[[], None]) -> None:
        before = self.state
        step()
        # purgatory queues an event per step for its message bus; nobody listens here.
        self._context.messages.clear()
        if self._on_change is not None and self.state != before:
            self._on_change(before, self.state)


def _is_outage(exc: Exception) -> bool:
    # UpstreamError subclasses DependencyUnavailable but is about one request, not the dependency.
    return isinstance(exc, DependencyUnavailable) and exc.status_code == 503


class Breakers:
    """The named circuits of the engine (one per model) and the store: outages open them, and an open
    one answers with a 503 naming the dependency."""

    def __init__(
        self, threshold: int = 5, reset_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._circuits: dict[str, tuple[Circuit, str]] = {}

    def _circuit(self, circuit: str, dependency: str) -> Circuit:
        if circuit not in self._circuits:
            made = Circuit(
                circuit, threshold=self.threshold, reset_s=self.reset_s, counts=_is_outage, clock=self._clock
            )
            self._circuits[circuit] = (made, dependency)
        return self._circuits[circuit][0]

    def _open(self, circuit: str, dependency: str) -> DependencyUnavailable:
        return DependencyUnavailable(
            dependency,
            f"circuit '{circuit}' is open after {self.threshold} consecutive failures; "
            f"the next try goes through within {self.reset_s:g}s",
            circuit=circuit,
        )

    async def call(self, circuit: str, dependency: str, run: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await self._circuit(circuit, dependency).call(run)
        except CircuitOpen as exc:
            raise self._open(circuit, dependency) from exc

    async def refuse_if_open(self, circuit: str) -> None:
        """Raise the open circuit's 503 now, before work that would be wasted on the way to it (a
        query's encoding when the store is down). Leaves the half-open probe to `call`."""
        known = self._circuits.get(circuit)
        if known is not None and known[0].refusing():
            raise self._open(circuit, known[1])

    async def states(self) -> dict[str, str]:
        """circuit -> closed | opened | half-opened, for the circuits used so far."""
        return {circuit: known.state for circuit, (known, _) in self._circuits.items()}
