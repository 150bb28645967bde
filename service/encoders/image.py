"""Image encoder: decoded pictures -> manifest-driven preprocessing -> engine -> embeddings."""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image

from service.domain.manifest import ModelManifest
from service.encoders.base import InferenceEngine
from service.encoders.manifested import ManifestedEncoder
from service.images.preprocessing import preprocess_batch


class ImageEncoder(ManifestedEncoder):
    def __init__(self, manifest: ModelManifest, engine: InferenceEngine) -> None:
        if manifest.kind != "image" or manifest.image is None:
            raise ValueError(f"{manifest.role} is not an image model")
        super().__init__(manifest)
        self.spec = manifest.image
        self.engine = engine
        self.output = manifest.dense_output

    async def encode(self, images: list[Image.Image]) -> np.ndarray:
        """[len(images), dim] embeddings; resizing runs off the event loop (it is CPU work)."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        chunk = max(1, self.engine.max_batch_size(self.role))
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            pixels = await asyncio.to_thread(preprocess_batch, part, self.spec)
            result = await self.engine.infer(self.role, {"pixel_values": pixels}, [self.output])
            out[start : start + len(part)] = result[self.output]
        return out
