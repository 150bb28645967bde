"""Copying an embedded store's folder without inflating it.

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


def copy_sparse_file(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """Copy one file's data extents (found with SEEK_DATA/SEEK_HOLE) and keep its length and mode."""
    with open(source, "rb") as src, open(destination, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after `offset`, the rest is one hole
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = src.read(min(_BLOCK, remaining))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            offset = end
        dst.truncate(size)
    shutil.copystat(source, destination)


def copy_folder(source: Path, destination: Path) -> Path:
    """`shutil.copytree` with sparse files kept sparse (plain copy where the OS cannot tell holes)."""
    copy = copy_sparse_file if hasattr(os, "SEEK_DATA") else shutil.copy2
    shutil.copytree(source, destination, copy_function=copy)
    return destination
