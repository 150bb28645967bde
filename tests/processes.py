"""Running the real service as a separate process (uvicorn, as deployed) for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import httpx

from service.triton_local.launcher import PortTaken, listens_on

if TYPE_CHECKING:
    from litestar import Litestar

    from service.runtime import Runtime
    from service.settings import Settings

_T = TypeVar("_T")


def start_service(
    env: dict[str, str],
    port: int,
    log: Path,
    timeout_s: float = 180.0,
    scheme: str = "http",
    verify: bool | ssl.SSLContext = True,
    poll_s: float = 0.2,
) -> subprocess.Popen[bytes]:
    """`python -m service` on 127.0.0.1:`port`; returns once /health answers 200 from this process.

    /health is asked every `poll_s`: what a start-up time measured around this call can be off by.

    `port` comes from `free_port` (locked against our other runs, outside the ephemeral range); the
    answer is still checked to come from the child (`listens_on`), so a stray server on the port fails
    the start instead of standing in for the service.
    """
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env={
                **os.environ,
                "LOG_LEVEL": "WARNING",
                **env,
                "SERVICE_PORT": str(port),
                "SERVICE_HOST": "127.0.0.1",
            },
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{scheme}://127.0.0.1:{port}/health", timeout=2, verify=verify).status_code == 200:
                if listens_on(process.pid, port):
                    return process
                process.terminate()
                raise PortTaken(f"another process answers on port {port}, not the service started there")
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    process.terminate()
    raise RuntimeError(f"service not healthy after {timeout_s:.0f}s: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


REDIS_SERVER = (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else shutil.which("redis-server")
)


class RedisServer:
    """A throwaway redis-server: no persistence, its own port and directory, stoppable and restartable."""

    # Enough for one database per test that needs its own (conftest's `redis_url`).
    DATABASES = 64

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, ready_timeout_s: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                str(self.DATABASES),
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                error = PortTaken if "already in use" in stderr.lower() else RuntimeError
                raise error(f"redis-server exited with {self.process.returncode}: {stderr}")
            if self._answers_ping():
                if listens_on(self.process.pid, self.port):
                    return
                self.stop()
                raise PortTaken(f"another process answers PING on port {self.port}, not our redis-server")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


class ServiceThread:
    """The façade under uvicorn on a real port, in a thread of the test process.

    Same server as `python -m service`, but the test can reach the live runtime (for instance to
    point the store at another endpoint mid-run) on the server's own event loop.
    """

    def __init__(self, settings: Settings, port: int = 0) -> None:
        import uvicorn

        from service.app import create_app

        # uvicorn serves on a socket we bind here and hand over, so no other process can take the
        # port between choosing it and listening on it (port 0: the kernel picks one).
        self._socket = socket.create_server(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self.app: Litestar = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=f"service:{port}", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self._socket]))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    def start(self, timeout_s: float = 180.0) -> ServiceThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the service stopped during startup (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not started after {timeout_s:.0f}s")
            time.sleep(0.05)
        return self

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout_s: float = 30.0) -> _T:
        """Run `coroutine` on the server's loop, between its requests (no torn state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()
            self._socket.close()

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class StallingServer:
    """A TCP endpoint that accepts connections and then never completes a response.

    `silent`: reads nothing, answers nothing (a hung process, a black-holed route).
    `trickle`: answers HTTP headers, then one body byte per `interval_s` for ever, so no single read
    ever waits long: only a deadline on the whole call ends it (a server stuck in GC, swapping).
    """

    def __init__(self, mode: Literal["silent", "trickle"], interval_s: float = 0.2) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._closing = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StallingServer:
        self._threads[0].start()
        return self

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._connections.append(connection)
            if self.mode == "trickle":
                thread = threading.Thread(target=self._trickle, args=(connection,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _trickle(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(5)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
            )
            while not self._closing.wait(self.interval_s):
                connection.sendall(b" ")
        except OSError:
            return

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> StallingServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


class Answer(NamedTuple):
    """One search of `Load`: when it was sent, its status (0: no answer), how long it took, the error
    code, and the circuit that refused it when an open circuit did (error.details.circuit)."""

    start: float
    status: int
    seconds: float
    code: str | None
    circuit: str | None


class Load(threading.Thread):
    """Back-to-back searches against a running service, each recorded as an `Answer`."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.records: list[Answer] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(
                        "/api/v1/search", json={"query": f"giant robots {i % 7}", "limit": 5}
                    )
                except httpx.TransportError as exc:  # the façade itself is gone (a test kills it)
                    self.records.append(
                        Answer(started, 0, time.monotonic() - started, type(exc).__name__, None)
                    )
                    time.sleep(0.05)
                    continue
                code = circuit = None
                if response.status_code != 200:
                    error = response.json().get("error", {})
                    code, circuit = error.get("code"), (error.get("details") or {}).get("circuit")
                self.records.append(
                    Answer(started, response.status_code, time.monotonic() - started, code, circuit)
                )
                i += 1
                time.sleep(0.02)

    def wait_for(self, condition: Callable[[Answer], bool], timeout_s: float, count: int = 1) -> Answer:
        """The `count`-th answer meeting `condition`, waiting for it (an event, not a guess at a
        duration: a loaded machine answers fewer searches per second, never fewer in all)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [a for a in list(self.records) if condition(a)]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.02)
        raise AssertionError(
            f"not {count} answers met the condition in {timeout_s:.0f}s: {self.records[-5:]}"
        )
