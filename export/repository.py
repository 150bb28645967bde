"""Writing one Triton model entry: `<role>/config.pbtxt`, `<role>/<version>/{model.onnx, manifest, ...}`.

A version folder appears only when complete (built aside, then renamed into place), so Triton and
the façade never load a half-written export.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_version(repository: Path, role: str, version: int) -> Iterator[Path]:
    """Yield a scratch folder; on success it becomes `<repository>/<role>/<version>`."""
    model_dir = repository / role
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    staging = model_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = model_dir / f".{version}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if final.exists():
        final.rename(retired)
    staging.rename(final)
    shutil.rmtree(retired, ignore_errors=True)
