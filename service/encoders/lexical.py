"""The lexical channel: BM25 term weights as sparse vectors, for every text model.

Titles in native script are exact strings, and a dense model alone misses many of them. Qdrant's own
BM25 embedder (`qdrant_edge.Bm25`, the same code and configuration as the server's BM25 inference)
turns text into term-frequency weights with its multilingual tokenizer, which segments Japanese and
Chinese into words (`進撃の巨人` -> 進撃 / の / 巨人) where a whitespace tokenizer sees one token. The
IDF half of BM25 is Qdrant's: the collection's sparse vector is created with the IDF modifier, so the
statistics follow the catalogue as it changes instead of being frozen at ingest.

The configuration is part of what a stored vector means: `version` names it, points are stamped with
it, and a change needs a re-embedding reindex like a new model.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.sparse import SparseVector


@dataclass(frozen=True)
class LexicalConfig:
    k: float = 1.2
    b: float = 0.75
    # Expected document length in tokens for BM25's length normalisation: about the catalogue's mean
    # (the composed lexical text of a bangumi anime is ~180 multilingual tokens).
    avg_len: float = 180.0
    language: str = "english"

    @property
    def version(self) -> str:
        return f"bm25-multilingual:k={self.k:g},b={self.b:g},avg_len={self.avg_len:g},{self.language}"


class LexicalEncoder:
    """Text -> BM25 sparse vectors (documents: saturated term frequencies; queries: each term once)."""

    def __init__(self, config: LexicalConfig | None = None) -> None:
        from qdrant_edge import Bm25, Bm25Config, TokenizerType

        self.config = config or LexicalConfig()
        self._bm25 = Bm25(
            Bm25Config(
                k=self.config.k,
                b=self.config.b,
                avg_len=self.config.avg_len,
                tokenizer=TokenizerType.Multilingual,
                language=self.config.language,
            )
        )

    @property
    def version(self) -> str:
        return self.config.version

    def documents(self, texts: list[str]) -> list[SparseVector]:
        return [_sparse(self._bm25.embed_document(text)) for text in texts]

    def query(self, text: str) -> SparseVector:
        return _sparse(self._bm25.embed_query(text))


def _sparse(vector) -> SparseVector:
    # qdrant_edge hands out one entry per distinct term; sorted indices make equal texts equal vectors.
    pairs = sorted(zip(vector.indices, vector.values, strict=True))
    return SparseVector([int(i) for i, _ in pairs], [float(v) for _, v in pairs])
