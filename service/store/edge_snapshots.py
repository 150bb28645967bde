"""The embedded store's snapshot files: one collection's record and flushed shard in a tar.

A snapshot holds what a store folder holds for that one collection, `collections/<name>.json` and
`shards/<name>/`, so `tar -xf` of it is a store folder `EdgeQdrantClient` opens as it is.

qdrant-edge preallocates its memory-mapped files as sparse files hundreds of MB long (folders.py), and
a plain tar writes every hole out as zeros. Files with holes go in as GNU sparse members (PAX format
1.0, which GNU tar and Python's tarfile read): a snapshot is about as large as the data on disk, and
unpacking it leaves the holes as holes.

A snapshot is written like every file of the store, to a temporary name, fsynced, renamed, the
directory fsynced, with its SHA-256 beside it in `<name>.checksum` (as a Qdrant server keeps it),
checked before a restore unpacks anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from qdrant_client import models

from service.store.folders import data_extents, fsync_dir

SUFFIX = ".snapshot"
CHECKSUM_SUFFIX = ".checksum"
_COPY_BUFFER = 1 << 20


class UnusableSnapshot(ValueError):
    """The file is missing, not a snapshot of this store, or damaged."""


def new_name(collection: str, now: dt.datetime) -> str:
    """`<collection>-<UTC time to the microsecond>.snapshot`: names sort by creation time."""
    return f"{collection}-{now.astimezone(dt.timezone.utc):%Y-%m-%d-%H-%M-%S-%f}{SUFFIX}"


def check_name(name: str) -> None:
    """A snapshot's name is a plain file name in its collection's folder, never a path."""
    if (
        not name.endswith(SUFFIX)
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name.encode()) > 255
    ):
        raise UnusableSnapshot(f"invalid snapshot name {name!r}")


# -- writing ---------------------------------------------------------------------------------------


def write(
    destination: Path, collection: str, record: Mapping[str, Any], shard: Path
) -> models.SnapshotDescription:
    """Write the snapshot of `collection` (its record, and a flushed copy of its shard at `shard`)."""
    tmp = destination.with_name(f".{destination.name}.tmp")
    try:
        with open(tmp, "wb") as out:
            with tarfile.open(
                fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFFER
            ) as tar:
                _add_bytes(tar, f"collections/{collection}.json", _record_bytes(record))
                _add_tree(tar, shard, f"shards/{collection}")
            out.flush()
            os.fsync(out.fileno())
        checksum = _sha256(tmp)
        # The checksum first: a snapshot that can be listed always has one.
        _write_atomically(_checksum_path(destination), checksum.encode())
        os.replace(tmp, destination)
        fsync_dir(destination.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return describe(destination)


def _record_bytes(record: Mapping[str, Any]) -> bytes:
    # Where a restore put the live shard is no part of the collection's state.
    kept = {key: value for key, value in record.items() if key != "shard"}
    return json.dumps(kept, ensure_ascii=False, indent=1, sort_keys=True).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(dt.datetime.now(dt.timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, folder: Path, name: str) -> None:
    tar.add(folder, name, recursive=False)
    for path in sorted(folder.iterdir()):
        inside = f"{name}/{path.name}"
        if path.is_dir() and not path.is_symlink():
            _add_tree(tar, path, inside)
        elif path.is_file() and not path.is_symlink():
            _add_file(tar, path, inside)
        else:
            raise UnusableSnapshot(f"{path}: only files and folders go into a snapshot")


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    with open(path, "rb") as source:
        stat = os.fstat(source.fileno())
        extents = data_extents(source.fileno(), stat.st_size)
        source.seek(0)  # finding the extents moved the descriptor's offset
        if extents == [(0, stat.st_size)] or stat.st_size == 0:
            tar.addfile(tar.gettarinfo(fileobj=source, arcname=name), source)
            return
        # A GNU sparse member, format 1.0: the map of data runs as decimal lines (count, then offset
        # and length of each run) padded to a block, then the runs. A trailing hole is marked by an
        # empty run at the end of the file, as GNU tar writes it.
        runs = list(extents)
        if not runs or sum(runs[-1]) < stat.st_size:
            runs.append((stat.st_size, 0))
        numbers = [len(runs), *(n for run in runs for n in run)]
        sparse_map = "".join(f"{n}\n" for n in numbers).encode()
        sparse_map += b"\0" * (-len(sparse_map) % tarfile.BLOCKSIZE)
        # Readers that know the format take the name from GNU.sparse.name; this one is what others
        # extract, and stays short so that tarfile adds no `path` record that would override it.
        info = tarfile.TarInfo(f"GNUSparseFile.0/{path.name[:80]}")
        info.size = len(sparse_map) + sum(length for _, length in extents)
        info.mode = stat.st_mode & 0o7777
        info.mtime = int(stat.st_mtime)
        info.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": name,
            "GNU.sparse.realsize": str(stat.st_size),
        }
        tar.addfile(info, _Chunks(_sparse_data(sparse_map, source, extents)))


def _sparse_data(head: bytes, source: IO[bytes], extents: list[tuple[int, int]]) -> Iterator[bytes]:
    yield head
    for start, length in extents:
        source.seek(start)
        while length > 0:
            chunk = source.read(min(_COPY_BUFFER, length))
            if not chunk:
                return  # the file shrank: tarfile reports the short member
            length -= len(chunk)
            yield chunk


class _Chunks:
    """A read-only file over a stream of byte strings (what `TarFile.addfile` copies from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._position == len(self._buffer):
                self._buffer, self._position = next(self._chunks, b""), 0
                if not self._buffer:
                    break
            take = len(self._buffer) - self._position if size < 0 else size - len(out)
            out += self._buffer[self._position : self._position + take]
            self._position = min(len(self._buffer), self._position + take)
        return bytes(out)


def _sha256(path: Path) -> str:
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _checksum_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + CHECKSUM_SUFFIX)


# -- the folder of a collection's snapshots --------------------------------------------------------


def describe(path: Path) -> models.SnapshotDescription:
    """Name, creation time (UTC, as a server gives it), size and SHA-256 (None if not recorded)."""
    stat = path.stat()
    created = dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).replace(tzinfo=None)
    checksum_path = _checksum_path(path)
    checksum = checksum_path.read_text().strip() if checksum_path.is_file() else None
    return models.SnapshotDescription(
        name=path.name,
        creation_time=created.isoformat(timespec="seconds"),
        size=stat.st_size,
        checksum=checksum,
    )


def listing(folder: Path) -> list[models.SnapshotDescription]:
    """The snapshots in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [describe(p) for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.is_file()]
    return sorted(found, key=lambda s: (s.creation_time or "", s.name))


def remove(path: Path) -> None:
    """Delete a snapshot and its checksum, durably."""
    path.unlink()
    _checksum_path(path).unlink(missing_ok=True)
    fsync_dir(path.parent)


def staging(destination: Path) -> Path:
    """Where the shard is copied for the snapshot `destination`, before it is written out."""
    return destination.with_name(f".{destination.name}.shard")


def remove_leftovers(folder: Path) -> None:
    """What snapshots a crash interrupted left: temporary files, shard copies."""
    for tmp in folder.glob("*/.*.tmp"):
        tmp.unlink(missing_ok=True)
    for copy in folder.glob("*/.*.shard"):
        shutil.rmtree(copy, ignore_errors=True)


# -- reading ---------------------------------------------------------------------------------------


def unpack(path: Path, into: Path, checksum: str | None = None) -> tuple[str, dict[str, Any]]:
    """Check and extract the snapshot at `path` into the empty folder `into`, as a store folder.

    Returns the name of the collection it holds and its record; its shard is at `into/shards/<name>`.
    `checksum` (else the one recorded beside the file, if any) must match the file's SHA-256.
    """
    if not path.is_file():
        raise UnusableSnapshot(f"no snapshot file at {path}")
    expected = checksum or (
        _checksum_path(path).read_text().strip() if _checksum_path(path).is_file() else None
    )
    if expected is not None and _sha256(path) != expected.lower():
        raise UnusableSnapshot(f"{path.name} is damaged: its SHA-256 is not the one recorded ({expected})")
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            collection = _collection_in(members, path.name)
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, UnicodeError) as exc:
        raise UnusableSnapshot(f"{path.name} is not a readable snapshot: {exc}") from exc
    try:
        with open(into / "collections" / f"{collection}.json", encoding="utf-8") as source:
            record = json.load(source)
    except ValueError as exc:
        raise UnusableSnapshot(f"{path.name}: the collection's record is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise UnusableSnapshot(f"{path.name}: the collection's record is not an object")
    return collection, record


def _collection_in(members: list[tarfile.TarInfo], snapshot: str) -> str:
    """The one collection a snapshot holds; anything but its record and shard refuses the file."""
    records = [
        m.name.removeprefix("collections/").removesuffix(".json")
        for m in members
        if m.isreg() and m.name.startswith("collections/") and m.name.endswith(".json")
    ]
    if len(records) != 1 or not records[0] or "/" in records[0]:
        raise UnusableSnapshot(
            f"{snapshot} is not a snapshot of the embedded store (no single collection record)"
        )
    collection = records[0]
    shard = f"shards/{collection}"
    for member in members:
        name = member.name.rstrip("/")
        inside = name == f"collections/{collection}.json" or name == shard or name.startswith(shard + "/")
        if not inside or not (member.isreg() or member.isdir()):
            raise UnusableSnapshot(f"{snapshot}: unexpected entry {member.name!r}")
    if not any(m.name.rstrip("/") == shard and m.isdir() for m in members):
        raise UnusableSnapshot(f"{snapshot} holds no shard for collection {collection!r}")
    return collection
