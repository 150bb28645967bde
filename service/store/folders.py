"""Copying an embedded store's folder without inflating it, and making directory changes durable.

qdrant-edge preallocates its memory-mapped files (32 MiB vector chunks, WAL segments) as sparse files:
a collection of ten anime takes ~420 MB of address space and ~5 MB of disk. `shutil.copytree` writes
every hole out as zeros, so each copy really costs the 420 MB — a test suite that copies an index per
test filled a CI disk that way. This copy moves only the data extents and leaves the holes as holes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_BLOCK = 1 << 20


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of each run of data in an open file, found with SEEK_DATA/SEEK_HOLE; one run
    covering the file where the OS cannot tell holes."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)] if size else []
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after `offset`, the rest is one hole
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end - start))
        offset = end
    return extents


def copy_sparse_file(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """Copy one file's data extents and keep its length and mode."""
    with open(source, "rb") as src, open(destination, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        for start, length in data_extents(src.fileno(), size):
            src.seek(start)
            dst.seek(start)
            remaining = length
            while remaining > 0:
                chunk = src.read(min(_BLOCK, remaining))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
        dst.truncate(size)
    shutil.copystat(source, destination)


def copy_folder(source: Path, destination: Path) -> Path:
    """`shutil.copytree` with sparse files kept sparse (plain copy where the OS cannot tell holes)."""
    copy = copy_sparse_file if hasattr(os, "SEEK_DATA") else shutil.copy2
    shutil.copytree(source, destination, copy_function=copy)
    return destination


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a rename, a new or removed file) survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
