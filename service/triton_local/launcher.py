"""Run the real tritonserver shipped in `nvidia-pytriton` on the CPU, over our model repository.

The committed entries target Triton's onnxruntime backend (GPU servers, the NGC container). The
pip-installed server only has the Python backend, so `prepare_cpu_repository` derives a repository
whose entries keep every scheduling setting (max_batch_size, dynamic batching, instances) but run
model.onnx through `onnx_model.py`.
"""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def start(self, timeout_s: float = 180.0) -> LocalTriton:
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
                raise TritonLaunchError(
                    f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TritonLaunchError(f"tritonserver not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

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
