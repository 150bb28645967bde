"""GET /api/v1/facets: what a browser fills its filter controls with, counted over what a search returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.domain.documents import AnimeDocument
from service.schemas import FacetsResponse
from service.search.facets import facets_response
from service.security.auth import new_key
from service.settings import load_settings
from service.store.types import FacetCount
from service.triton_local.launcher import free_port
from tests.builders import ingest_documents
from tests.test_api import DOCS as API_DOCS

SEARCH_KEY, SEARCH_ENTRY = new_key("web", "search")

LIVE_ACTION = AnimeDocument(
    anime_id="eva-live",
    title="Evangelion (live action)",
    genres=["Sci-Fi", "Horror"],
    themes=["Mecha"],
    type="LIVE_ACTION",
    status="FINISHED",
    year=2030,
)
DOCS = [
    *API_DOCS,
    AnimeDocument(
        anime_id="gundam",
        title="Mobile Suit Gundam",
        genres=["Action", "Sci-Fi", "Drama"],
        themes=["Mecha", "Military", "Space"],
        type="TV",
        status="FINISHED",
        year=1979,
    ),
    AnimeDocument(
        anime_id="frieren",
        title="Frieren",
        genres=["Adventure", "Drama", "Fantasy"],
        type="TV",
        status="ONGOING",
        year=2023,
    ),
    AnimeDocument(
        anime_id="untitled-ova",
        title="An OVA without a year",
        genres=["Mystery"],
        themes=["School"],
        type="OVA",
        status="UPCOMING",
    ),
    LIVE_ACTION,
]
SEARCHABLE = [d for d in DOCS if d.type != "LIVE_ACTION"]


def counted(values: list[list[str]] | list[str]) -> list[dict]:
    """How many documents hold each value, most frequent first, ties by value."""
    counts = Counter(v for held in values for v in ([held] if isinstance(held, str) else set(held)))
    return [{"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


@pytest.fixture(scope="module")
def index(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("facets-index")
    ingest_documents(load_settings({}, model_repository=tiny_repository, qdrant_path=folder), DOCS)
    return folder


@pytest.fixture
async def client(tiny_repository: Path, index: Path) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=index)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def facets(client: AsyncTestClient, **params: object) -> dict:
    response = await client.get("/api/v1/facets", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_counts_are_the_documents_a_search_can_return_most_frequent_first(client):
    assert (await client.get("/")).json()["store"] == "qdrant-edge"  # the embedded default engine
    body = await facets(client)
    assert body == {
        "genres": counted([d.genres for d in SEARCHABLE]),
        "themes": counted([d.themes for d in SEARCHABLE]),
        "types": counted([d.type for d in SEARCHABLE]),
        "statuses": counted([d.status for d in SEARCHABLE]),
        "year_min": 1979,
        "year_max": 2023,
        "total": len(SEARCHABLE),
    }
    # Spelled out: equal counts in value order; the live-action entry counts nowhere.
    assert body["genres"][:3] == [
        {"value": "Drama", "count": 3},
        {"value": "Sci-Fi", "count": 3},
        {"value": "Action", "count": 2},
    ]
    assert body["themes"][0] == {"value": "Mecha", "count": 2}
    assert "Horror" not in {g["value"] for g in body["genres"]}
    assert "LIVE_ACTION" not in {t["value"] for t in body["types"]}
    assert body["total"] == 7


async def test_every_listed_value_finds_as_many_anime_as_its_count(client):
    """What the page does with a value: filter a search by it. The count is how many that finds."""
    body = await facets(client)
    for facet, field in (("genres", "genres"), ("themes", "themes")):
        for entry in body[facet]:
            found = await client.post(
                "/api/v1/search", json={"query": "anime", "limit": 100, "filters": {field: [entry["value"]]}}
            )
            assert found.json()["total"] == entry["count"], (facet, entry)


async def test_limit_caps_each_list_but_not_the_years_or_total(client):
    full = await facets(client)
    body = await facets(client, limit=2)
    for facet in ("genres", "themes", "types", "statuses"):
        assert body[facet] == full[facet][:2]
    assert (body["year_min"], body["year_max"], body["total"]) == (1979, 2023, 7)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
async def test_a_limit_out_of_bounds_is_a_422_envelope(client, limit):
    response = await client.get("/api/v1/facets", params={"limit": limit})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_with_keys_facets_need_a_search_key(tiny_repository, index):
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=index, api_keys=SEARCH_ENTRY)
    async with AsyncTestClient(create_app(settings)) as client:
        missing = await client.get("/api/v1/facets")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        keyed = await client.get("/api/v1/facets", headers={"authorization": f"Bearer {SEARCH_KEY}"})
        assert keyed.status_code == 200 and keyed.json()["total"] == 7


async def test_an_empty_collection_has_no_values_and_no_years(tiny_repository, tmp_path):
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=tmp_path / "empty")
    async with AsyncTestClient(create_app(settings)) as client:
        assert await facets(client) == {
            "genres": [],
            "themes": [],
            "types": [],
            "statuses": [],
            "year_min": None,
            "year_max": None,
            "total": 0,
        }


async def test_an_unreachable_store_is_a_503_naming_it(tiny_repository):
    settings = load_settings(
        {}, model_repository=tiny_repository, qdrant_url=f"http://127.0.0.1:{free_port()}", qdrant_timeout_s=2
    )
    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.get("/api/v1/facets")
        assert response.status_code == 503
        assert response.json()["error"]["details"]["dependency"] == "qdrant"


def test_years_come_from_the_year_counts_and_values_keep_the_store_order():
    answer = facets_response(
        {
            "genres": [FacetCount("Drama", 2), FacetCount("Action", 1)],
            "themes": [],
            "types": [FacetCount("TV", 3)],
            "statuses": [FacetCount("FINISHED", 3)],
        },
        [FacetCount(1995, 2), FacetCount(2024, 1), FacetCount(1979, 1)],
        3,
    )
    assert isinstance(answer, FacetsResponse)
    assert [(v.value, v.count) for v in answer.genres] == [("Drama", 2), ("Action", 1)]
    assert (answer.year_min, answer.year_max, answer.total) == (1979, 2024, 3)
    empty = facets_response({k: [] for k in ("genres", "themes", "types", "statuses")}, [], 0)
    assert (empty.year_min, empty.year_max) == (None, None)
