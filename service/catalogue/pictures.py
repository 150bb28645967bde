"""Where an anime's pictures come from at ingest: inline base64, a local folder, or their URLs.

Precedence per slot (picture, thumbnail): the document's `*_data` field, then
`<images_dir>/<anime_id>.<slot>.{jpg,jpeg,png,webp}`, then the document's URL when fetching is on
(one deadline for the whole download, the size cap counted on the bytes received).
A slot with no usable image stays empty: the anime simply has no such vector (never a zero vector).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from service.domain.documents import AnimeDocument
from service.images.checks import ImageError, ImageLimits, ImageTooLarge, decode_base64_image
from service.images.pool import DEFAULT_POOL, DecodePool

# Covers are already compressed; asking for identity keeps a compressed body from inflating far past
# the cap inside one network chunk before the streaming check sees it.
_FETCH_HEADERS = {"Accept-Encoding": "identity", "Accept": "image/jpeg, image/png, image/webp, */*;q=0.1"}


class ImageFetchFailed(ImageError, status_code=422, code="image_fetch_failed"):
    """The URL did not give us a body: unreachable, an HTTP error status, or a bad URL."""


class ImageFetchTimeout(ImageFetchFailed):
    """The whole download (connect, headers and body together) ran past its deadline."""

    code = "image_fetch_timeout"


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
                    except OSError as exc:
                        # A local file that vanished or cannot be read between the check and the open.
                        resolved.problems.append(
                            ImageProblem(doc.anime_id, slot, "image_read_failed", str(exc) or repr(exc))
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
        """GET `url` within `timeout_s` in total and at most `limits.max_bytes`, or an `ImageError`.

        httpx's timeout bounds each socket operation, so a server dripping a byte a second would never
        trip it; the deadline covers the whole exchange instead. The size is counted while streaming:
        a Content-Length that is absent or lies does not get more bytes through.
        """
        cap = self.limits.max_bytes
        try:
            async with asyncio.timeout(self.timeout_s):
                async with client.stream("GET", url, headers=_FETCH_HEADERS) as response:
                    if response.status_code >= 400:
                        raise ImageFetchFailed(
                            f"{url} answered HTTP {response.status_code} {response.reason_phrase}".rstrip(),
                            url=url,
                            status=response.status_code,
                        )
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        # Honest and too big: refuse before reading any of it.
                        raise ImageTooLarge(
                            f"{url} declares {declared} bytes; at most {cap} are accepted",
                            url=url,
                            max_bytes=cap,
                        )
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > cap:
                            raise ImageTooLarge(f"{url} sent more than {cap} bytes", url=url, max_bytes=cap)
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException) as exc:
            # The deadline (asyncio.timeout) or one of httpx's per-operation limits, whichever came first.
            raise ImageFetchTimeout(
                f"{url} did not finish within {self.timeout_s:g}s", url=url, timeout_s=self.timeout_s
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ImageFetchFailed(f"cannot fetch {url}: {str(exc) or type(exc).__name__}", url=url) from exc
        return b"".join(chunks)
