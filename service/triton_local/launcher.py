"""Run the real tritonserver shipped in `nvidia-pytriton` on the CPU, over our model repository.

The committed entries target Triton's onnxruntime backend (GPU servers, the NGC container). The
pip-installed server only has the Python backend, so `prepare_cpu_repository` derives a repository
whose entries keep every scheduling setting (max_batch_size, dynamic batching, instances) but run
model.onnx through `onnx_model.py`.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from export.triton_config import read_config, render
from service.domain.manifest import version_dirs

_RUNNER = Path(__file__).with_name("onnx_model.py")


class TritonLaunchError(RuntimeError):
    pass


def _pytriton_dist() -> tuple[Path, Path]:
    """(tritonserver distribution folder, bundled shared libraries) of the installed nvidia-pytriton."""
    try:
        import pytriton
    except ImportError as exc:
        raise TritonLaunchError(
            "the local Triton needs nvidia-pytriton: pip install '.[triton-local]'"
        ) from exc
    package = Path(pytriton.__file__).parent
    dist = package / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    if not (dist / "bin" / "tritonserver").is_file():
        raise TritonLaunchError(f"no tritonserver binary under {dist}")
    return dist, libs


# Ports handed out by `free_port`, each held by an advisory lock for the life of this process.
_PORT_LOCKS: dict[int, int] = {}
_PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "avs-ports"
# Below the kernel's ephemeral range: a port there is never given to an outgoing connection's source or
# to another program's bind(0), the two ways a port found free is taken before the child binds it.
_FIRST_PORT = 10000


class PortTaken(TritonLaunchError):
    """A child could not listen on the port it was given, or another process answers there."""


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port for a child process to listen on (or, unused, a port where nothing listens).

    Binding port 0 and closing the socket hands out a port that anything may take before the child
    binds it. Instead: a port below the ephemeral range, free now, and locked (`flock` on a file named
    after it) so no other process using this function, a parallel test run included, is given it
    while this process lives. The health waits then check that the child itself answers (`listens_on`).
    """
    _PORT_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    ceiling = _ephemeral_floor()
    if ceiling - _FIRST_PORT < 1000:  # an unusual port range: fall back to the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = random.randrange(_FIRST_PORT, ceiling)
        if port in _PORT_LOCKS:
            continue
        fd = os.open(_PORT_LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another live process holds it
            os.close(fd)
            continue
        if _bindable(port):
            _PORT_LOCKS[port] = fd
            return port
        os.close(fd)  # in use by something that does not take our locks
    raise PortTaken(f"no free port found between {_FIRST_PORT} and {ceiling}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address, IPv4 or IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 the inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on `port`: that the answer on a port we
    handed a child comes from that child, not from whatever else took the port."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def prepare_cpu_repository(
    source: Path,
    destination: Path,
    models: list[str] | None = None,
    ort_threads: int = 0,
    dynamic_batching: bool = True,
) -> list[str]:
    """Derive a Python-backend repository from `source`; returns the model names it holds."""
    destination.mkdir(parents=True, exist_ok=True)
    prepared = []
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        if models is not None and model_dir.name not in models:
            continue
        versions = [v for v in version_dirs(model_dir) if (model_dir / str(v) / "model.onnx").is_file()]
        if not versions:
            continue
        config = read_config(model_dir)
        config.backend = "python"
        config.platform = ""
        config.ClearField("optimization")
        for group in config.instance_group:
            group.kind = group.KIND_CPU
            del group.gpus[:]
        if ort_threads:
            config.parameters["ORT_INTRA_OP_THREADS"].string_value = str(ort_threads)
        if not dynamic_batching:  # for side-by-side benchmarks: every request its own execution
            config.ClearField("dynamic_batching")
        target = destination / model_dir.name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / "config.pbtxt").write_text(render(config), encoding="utf-8")
        for version in versions:
            version_target = target / str(version)
            version_target.mkdir()
            shutil.copy2(_RUNNER, version_target / "model.py")
            for item in (model_dir / str(version)).iterdir():
                if item.name.startswith("model.onnx"):
                    (version_target / item.name).symlink_to(item.resolve())
        prepared.append(model_dir.name)
    return prepared


@dataclass(frozen=True)
class TritonEndpoints:
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


class LocalTriton:
    """A tritonserver process on the CPU; a context manager that waits for readiness."""

    def __init__(
        self,
        model_repository: Path,
        *,
        workdir: Path | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        models: list[str] | None = None,
        ort_threads: int = 0,
        log_file: Path | None = None,
        dynamic_batching: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="local-triton-"))
        # Ports we chose may be chosen again if another process took one first; given ones may not.
        self._chosen_ports = not (http_port or grpc_port or metrics_port)
        self.endpoints = TritonEndpoints(
            http_port or free_port(), grpc_port or free_port(), metrics_port or free_port()
        )
        self.models = models
        self.ort_threads = ort_threads
        self.dynamic_batching = dynamic_batching
        self.log_file = log_file or self.workdir / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.loaded: list[str] = []

    def _backends(self) -> Path:
        dist, _ = _pytriton_dist()
        backends = self.workdir / "backends"
        python_backend = backends / "python"
        if not python_backend.exists():
            shutil.copytree(dist / "backends" / "python", python_backend)
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
            if not stub.is_file():
                raise TritonLaunchError(f"nvidia-pytriton has no Python backend stub for Python {version}")
            shutil.copy2(stub, python_backend / "triton_python_backend_stub")
        return backends

    def _environment(self) -> dict[str, str]:
        _, libs = _pytriton_dist()
        env = dict(os.environ)
        # The stub must load *this* interpreter's libpython (not Debian's older one) and the CUDA/
        # protobuf libraries bundled in the wheel; the venv's bin on PATH gives it our site-packages.
        lib_dirs = [str(sysconfig.get_config_var("LIBDIR")), str(libs)]
        env["LD_LIBRARY_PATH"] = ":".join([*lib_dirs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", str(self.ort_threads or os.cpu_count() or 1))
        return env

    def start(self, timeout_s: float = 180.0, attempts: int = 3) -> LocalTriton:
        """Start and wait until ready; on a port collision, again on fresh ports (when we chose them)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout_s)
            except PortTaken:
                self.stop()
                if not self._chosen_ports or attempt == attempts - 1:
                    raise
                self.endpoints = TritonEndpoints(free_port(), free_port(), free_port())
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> LocalTriton:
        dist, _ = _pytriton_dist()
        repository = self.workdir / "model_repository"
        self.loaded = prepare_cpu_repository(
            self.model_repository, repository, self.models, self.ort_threads, self.dynamic_batching
        )
        if not self.loaded:
            raise TritonLaunchError(
                f"no exported model (config.pbtxt + <version>/model.onnx) in {self.model_repository}"
            )
        command = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={self._backends()}",
            f"--http-port={self.endpoints.http_port}",
            f"--grpc-port={self.endpoints.grpc_port}",
            f"--metrics-port={self.endpoints.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
        ]
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self._environment(), start_new_session=True
        )
        log.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.endpoints.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_tail()
                error = PortTaken if "address already in use" in tail.lower() else TritonLaunchError
                raise error(f"tritonserver exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        self._check_ports_are_ours()
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TritonLaunchError(f"tritonserver not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def _check_ports_are_ours(self) -> None:
        """A 200 on the port proves only that something answers: check our tritonserver holds all three."""
        assert self.process is not None
        e = self.endpoints
        taken = [p for p in (e.http_port, e.grpc_port, e.metrics_port) if not listens_on(self.process.pid, p)]
        if taken:
            raise PortTaken(f"another process listens on port(s) {taken} given to tritonserver")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # The Python-backend stubs are children of the server: signal the whole process group.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would: for failure tests."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
