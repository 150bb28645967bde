"""The query side of each encoder: one query (a text, or a picture's base64) in, its embedding out.

Each adapter has the `QueryEncoder` interface of service/cache/policy.py, so the embedding cache
(`CachedQueryEncoder`, same interface) can wrap it from outside; `QueryEncoders` holds them, wrapped
as the wiring (service/search/search_service.py) says.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from service.cache.policy import QueryEmbedding, QueryEncoder
from service.encoders.image import ImageEncoder
from service.encoders.text import TextEncoder
from service.images.checks import ImageLimits, decode_base64_image
from service.images.pool import DecodePool
from service.platform.errors import DependencyUnavailable
from service.runtime import Runtime, TextModel


class TextQueryEncoder:
    """A text model's query embedding: dense, learned sparse where the model has that head, and the
    token count and truncation the answer reports."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    @property
    def model_version(self) -> str:
        return self.encoder.manifest.model_version

    async def embed(self, query: str) -> QueryEmbedding:
        e = await self.encoder.encode([query], kind="query")
        return QueryEmbedding(
            e.dense[0], e.sparse[0] if e.sparse else None, e.token_counts[0], e.truncated[0]
        )


class ClipTextQueryEncoder(TextQueryEncoder):
    """CLIP's text tower: a text in the pictures' space (dense only)."""

    async def embed(self, query: str) -> QueryEmbedding:
        return QueryEmbedding((await self.encoder.encode([query], kind="query")).dense[0])


class PictureQueryEncoder:
    """base64 -> checked, oriented RGB picture -> its vector; bad pictures raise ImageError (4xx)."""

    def __init__(self, encoder: ImageEncoder, decoder: DecodePool, limits: ImageLimits) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.limits = limits

    @property
    def model_version(self) -> str:
        return self.encoder.manifest.model_version

    async def embed(self, query: str) -> QueryEmbedding:
        image = await decode_picture(query, self.decoder, self.limits)
        return QueryEmbedding((await self.encoder.encode([image]))[0])


async def decode_picture(data: str, decoder: DecodePool, limits: ImageLimits) -> Image.Image:
    return await decoder.decode(decode_base64_image(data, limits), limits)


class QueryEncoders:
    """Every query encoder the deployment has, each wrapped once by `wrap` (the wiring passes the
    embedding cache; the use cases never see it)."""

    def __init__(self, runtime: Runtime, wrap: Callable[[QueryEncoder], QueryEncoder]) -> None:
        self.runtime = runtime
        self._text = {
            version: wrap(TextQueryEncoder(m.encoder)) for version, m in runtime.text_models.items()
        }
        # CLIP's text tower is only of use beside the picture vectors it shares a space with.
        self._clip_text = (
            wrap(ClipTextQueryEncoder(runtime.clip_text))
            if runtime.clip_text is not None and runtime.image is not None
            else None
        )
        self._picture = (
            wrap(PictureQueryEncoder(runtime.image, runtime.decoder, runtime.image_limits))
            if runtime.image is not None
            else None
        )

    async def text(self, query: str, model: TextModel) -> QueryEmbedding:
        return await self._text[model.version].embed(query)

    async def clip_text(self, query: str) -> np.ndarray | None:
        """The query in the pictures' space; None where no CLIP text tower is deployed."""
        if self._clip_text is None:
            return None
        return (await self._clip_text.embed(query)).dense

    async def picture(self, data: str) -> np.ndarray:
        """The picture's vector; decoding (and its 4xx answers) only happens on a cache miss."""
        if self._picture is None:
            # Bad pictures are still the client's 4xx, not our 503.
            await decode_picture(data, self.runtime.decoder, self.runtime.image_limits)
            raise DependencyUnavailable(
                "image_embedder", "no image model is deployed: export one with `python -m export clip`"
            )
        return (await self._picture.embed(data)).dense
