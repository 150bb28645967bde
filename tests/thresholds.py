"""What `score_threshold` means where Qdrant fuses several lists: a similarity each list's matches must
reach before fusion, never a bound on the fused score (an RRF score has no scale a client could know)."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.testing import AsyncTestClient

from service.domain.vectors import IMAGE_VECTORS
from service.store.types import VectorQuery


async def _image_search(client: AsyncTestClient, body: dict) -> list[tuple[str, float]]:
    response = await client.post("/api/v1/search/image", json=body | {"limit": 100})
    assert response.status_code == 200, response.text
    return [(r["anime_id"], r["score"]) for r in response.json()["results"]]


async def assert_threshold_applies_per_list(
    client: AsyncTestClient, body: dict, vector: Sequence[float], vectors: Sequence[str] = IMAGE_VECTORS
) -> None:
    """`body` is an image search whose picture embeds to `vector`: with a threshold between two of the
    similarities the lists hold, exactly the anime that reach it in some list come back."""
    store = client.app.state.runtime.store
    lists = await store.search_many([VectorQuery(name, list(vector), 100, None) for name in vectors])
    similarities = sorted({hit.score for hits in lists for hit in hits}, reverse=True)
    assert len(similarities) >= 3, similarities
    middle = len(similarities) // 2
    threshold = (similarities[middle - 1] + similarities[middle]) / 2
    reaching = {hit.anime_id for hits in lists for hit in hits if hit.score >= threshold}

    everything = await _image_search(client, body)
    cut = await _image_search(client, body | {"score_threshold": threshold})
    assert cut and {a for a, _ in cut} == reaching
    assert len(cut) < len(everything)
    assert [s for _, s in cut] == sorted((s for _, s in cut), reverse=True)
    # Above every similarity: nothing. Below every one: the unthresholded answer.
    assert await _image_search(client, body | {"score_threshold": similarities[0] + 1e-3}) == []
    below = await _image_search(client, body | {"score_threshold": similarities[-1] - 1.0})
    assert [a for a, _ in below] == [a for a, _ in everything]
