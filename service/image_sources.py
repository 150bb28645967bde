"""Where an anime's pictures come from at ingest: inline base64, a local folder, or their URLs.

Precedence per slot (picture, thumbnail): the document's `*_data` field, then
`<images_dir>/<anime_id>.<slot>.{jpg,jpeg,png,webp}`, then the document's URL when fetching is on.
A slot with no usable image stays empty: the anime simply has no such vector (never a zero vector).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from service.decoding import DEFAULT_POOL, DecodePool
from service.documents import AnimeDocument
from service.images import (
    ImageError,
    ImageLimits,
    ImageTooLarge,
    decode_base64_image,
)

SLOTS = ("picture", "thumbnail")
_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ImageProblem:
    anime_id: str
    slot: str
    code: str
    message: str


@dataclass
class ResolvedImages:
    images: dict[str, dict[str, Image.Image]] = field(default_factory=dict)  # anime_id -> slot -> image
    problems: list[ImageProblem] = field(default_factory=list)


@dataclass
class ImageResolver:
    images_dir: Path | None = None
    fetch_urls: bool = False
    limits: ImageLimits = field(default_factory=ImageLimits)
    timeout_s: float = 10.0
    concurrency: int = 8
    decoder: DecodePool = DEFAULT_POOL

    async def resolve(self, documents: Sequence[AnimeDocument]) -> ResolvedImages:
        resolved = ResolvedImages()
        semaphore = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:

            async def one(doc: AnimeDocument, slot: str) -> None:
                async with semaphore:
                    try:
                        image = await self._load(client, doc, slot)
                    except ImageError as exc:
                        resolved.problems.append(ImageProblem(doc.anime_id, slot, exc.code, exc.message))
                        return
                    except (httpx.HTTPError, OSError) as exc:
                        resolved.problems.append(
                            ImageProblem(doc.anime_id, slot, "image_fetch_failed", str(exc))
                        )
                        return
                if image is not None:
                    resolved.images.setdefault(doc.anime_id, {})[slot] = image

            await asyncio.gather(*(one(doc, slot) for doc in documents for slot in SLOTS))
        return resolved

    async def _load(self, client: httpx.AsyncClient, doc: AnimeDocument, slot: str) -> Image.Image | None:
        inline = getattr(doc, f"{slot}_data")
        if inline:
            data = decode_base64_image(inline, self.limits)
            return await self.decoder.decode(data, self.limits)
        if self.images_dir is not None:
            for extension in _EXTENSIONS:
                path = self.images_dir / f"{doc.anime_id}.{slot}.{extension}"
                if path.is_file():
                    return await self.decoder.read_file(path, self.limits)
        url = getattr(doc, slot)
        if self.fetch_urls and url:
            data = await self._download(client, url)
            return await self.decoder.decode(data, self.limits)
        return None

    async def _download(self, client: httpx.AsyncClient, url: str) -> bytes:
        """GET with a timeout and a size cap enforced while streaming (a lying Content-Length is no help)."""
        chunks: list[bytes] = []
        size = 0
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise ImageTooLarge(
                        f"{url} is larger than {self.limits.max_bytes} bytes",
                        max_bytes=self.limits.max_bytes,
                    )
                chunks.append(chunk)
        return b"".join(chunks)
