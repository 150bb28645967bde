"""Running the real service as a separate process (uvicorn, as deployed) for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_service(
    env: dict[str, str],
    port: int,
    log: Path,
    timeout_s: float = 180.0,
    scheme: str = "http",
    verify: bool | ssl.SSLContext = True,
) -> subprocess.Popen[bytes]:
    """`python -m service` on 127.0.0.1:`port`; returns once /health answers 200."""
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
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
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
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {stderr}")
            if self._answers_ping():
                return
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
