"""What every encoder is, read from its model's manifest: the role it serves and the width of its vectors.

The text and image encoders differ in what they feed the engine (tokens, pixels), not in this; the
manifest (frozen) stays the one source of both, so an encoder cannot disagree with the model it runs.
"""

from __future__ import annotations

from service.domain.manifest import ModelManifest


class ManifestedEncoder:
    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        # The name the engine serves the model under (`text_embedder`, `image_embedder`...).
        self.role: str = manifest.role
        self.dim: int = manifest.dim
