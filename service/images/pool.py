"""Where pictures are decoded: a small thread pool of their own.

At the pixel budget one decode holds a few hundred MB (the decoded picture and its RGB copy). Decoding
on the event loop's default executor would let every concurrent request or ingest slot decode at
once, multiplying that; a pool of `IMAGE_DECODE_THREADS` bounds the memory pictures can take in a
process while the work stays off the event loop.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from PIL import Image

from service.images.checks import ImageLimits
from service.images.decoding import load_image, read_image_file


class DecodePool:
    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="image-decode")

    async def decode(self, data: bytes, limits: ImageLimits) -> Image.Image:
        """`load_image` on the pool: an upright RGB picture, or an `ImageError`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(load_image, data, limits))

    async def read_file(self, path: str | os.PathLike[str], limits: ImageLimits) -> Image.Image:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(read_image_file, path, limits))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# For callers without a runtime (the ingest CLI's resolver before one exists, scripts).
DEFAULT_POOL = DecodePool()
