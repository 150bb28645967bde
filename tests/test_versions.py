"""Text model versions side by side: a fine-tune exported as version 2 of the tiny model, served beside
version 1 to its share of clients, overridden by admins only, promoted by the rule and rolled back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from benchmarks.relevance.evaluate import Evaluation, Row, as_dict
from export.cli import main as export_cli
from finetune.__main__ import main as finetune_cli
from service.admin.versions import main as versions_cli
from service.app import create_app
from service.domain.manifest import TEXT_EMBEDDER, load_manifest
from service.domain.rollout import Rollout, RolloutError, bucket, parse_split, promotion_verdict
from service.settings import load_settings
from tests.api_calls import wait_for_reindex
from tests.builders import story_documents

ADMIN_KEY = "avs_admin-key-for-tests"
SEARCH_KEY = "avs_search-key-for-tests"
KEYS = ",".join(
    f"{name}:{role}:{hashlib.sha256(key.encode()).hexdigest()}"
    for name, role, key in (("ops", "admin", ADMIN_KEY), ("web", "search", SEARCH_KEY))
)
QUERY = {"query": "a boy pilots a giant robot", "limit": 5}


# -- the split and the rule, pure -----------------------------------------------------------------------


def test_a_client_always_gets_the_same_version_and_shares_hold_over_many_clients():
    rollout = Rollout(1, {2: 0.25})
    clients = [f"client-{i}" for i in range(4000)]
    picks = [rollout.pick(c) for c in clients]
    assert picks == [rollout.pick(c) for c in clients]
    assert 0.22 < picks.count(2) / len(picks) < 0.28
    assert rollout.pick(None) == 1  # anonymous: the default
    assert all(rollout.pick(c) == (2 if bucket(c) < 0.25 else 1) for c in clients[:50])
    assert Rollout(1, {}).pick("anyone") == 1


def test_promotion_keeps_the_history_that_rollback_walks_back():
    promoted = Rollout(1, {2: 0.1, 3: 0.2}).promoted(2)
    assert promoted == Rollout(2, {3: 0.2}, (1,))
    assert promoted.rolled_back() == Rollout(1, {3: 0.2}, ())
    with pytest.raises(RolloutError, match="no earlier default"):
        Rollout(1).rolled_back()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2", "version:share"),
        ("two:0.1", "version:share"),
        ("2:1.5", r"\[0, 1\]"),
        ("2:0.6,3:0.5", "more than 1"),
    ],
)
def test_a_malformed_split_names_the_variable(text: str, problem: str):
    with pytest.raises(RolloutError, match=f"TEXT_MODEL_SPLIT.*{problem}"):
        parse_split(text)


def _comparison(query_set: str, metric: str, delta: float, low: float) -> dict:
    return {"query_set": query_set, "metric": metric, "delta": delta, "low": low, "high": delta + 0.05}


def test_the_rule_wants_a_sure_gain_on_plot_queries_and_no_loss_elsewhere():
    gain = _comparison("plot-en", "hit10", 0.15, 0.05)
    assert promotion_verdict([gain, _comparison("title-ja", "hit10", -0.01, -0.03)]).promote
    unsure = _comparison("plot-en", "hit10", 0.05, -0.02)
    assert not promotion_verdict([unsure]).promote
    verdict = promotion_verdict([gain, _comparison("title-zh", "ndcg", -0.05, -0.08)])
    assert not verdict.promote and any("title-zh ndcg loses 0.050" in r for r in verdict.reasons)
    assert not promotion_verdict([_comparison("title-ja", "hit10", 0.2, 0.1)]).promote  # no plot-en row


# -- the service with two versions ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versioned(tiny_checkpoint: Path, tiny_repository: Path, tmp_path_factory) -> tuple[Path, str]:
    """The tiny model as version 1 and a LoRA fine-tune of it (a few steps) as version 2; the run id."""
    root = tmp_path_factory.mktemp("versions")
    documents = root / "documents.json"
    documents.write_bytes(msgspec.json.encode(story_documents()))
    run = root / "run"
    args = ["text", "--base", str(tiny_checkpoint), "--documents", str(documents), "--out", str(run)]
    assert finetune_cli([*args, "--steps", "4", "--batch-size", "4", "--rank", "4", "--alpha", "8"]) == 0
    repository = root / "repo"
    shutil.copytree(tiny_repository, repository)
    assert export_cli(["text", str(run / "merged"), "--out", str(repository), "--version", "next"]) == 0
    manifest, _ = load_manifest(repository, TEXT_EMBEDDER, 2)
    assert manifest.lineage is not None
    return repository, manifest.lineage.run_id


def _app(repository: Path, qdrant: Path, **settings: object):
    return create_app(load_settings({}, model_repository=repository, qdrant_path=qdrant, **settings))


async def _fill(client: AsyncTestClient, headers: dict[str, str] | None = None) -> None:
    documents = msgspec.to_builtins(story_documents(copies=2))
    response = await client.post(
        "/api/v1/admin/vectors/upsert", json={"documents": documents}, headers=headers
    )
    assert response.status_code == 200, response.text[:500]


async def _version_of(client: AsyncTestClient, headers: dict[str, str] | None = None, **body: object) -> int:
    response = await client.post("/api/v1/search", json=QUERY | body, headers=headers)
    assert response.status_code == 200, response.text[:500]
    return response.json()["query_info"]["text_version"]


@pytest.fixture
async def split_client(versioned, tmp_path) -> AsyncIterator[AsyncTestClient]:
    repository, _ = versioned
    async with AsyncTestClient(_app(repository, tmp_path / "q", text_model_split="2:0.5")) as client:
        await _fill(client)
        yield client


async def test_each_client_is_answered_by_its_version_and_both_versions_are_stored(split_client):
    clients = [f"shop-{i}" for i in range(12)]
    seen = {c: await _version_of(split_client, {"X-Client-Id": c}) for c in clients}
    assert seen == {c: Rollout(1, {2: 0.5}).pick(c) for c in clients}
    assert set(seen.values()) == {1, 2}
    assert await _version_of(split_client) == 1  # anonymous: the default
    # One upsert wrote both versions' vectors: each version's names, side by side.
    record = (await split_client.get("/api/v1/search/by-id/anime-0-1")).json()
    assert {"title", "synopsis", "title_v2", "synopsis_v2", "text_lexical"} <= set(record["vectors"])
    assert not any(key.startswith("hubness") for key in record["document"])
    listing = (await split_client.get("/api/v1/admin/models/text")).json()
    assert [(v["version"], v["in_collection"], v["share"]) for v in listing["versions"]] == [
        (1, True, 0.5),
        (2, True, 0.5),
    ]
    info = (await split_client.get("/")).json()
    served = [(m["version"], m["default"], m["lineage_run"] is not None) for m in info["models"]]
    assert served == [(1, True, False), (2, False, True)]
    metrics = (await split_client.get("/metrics")).text
    assert 'avs_text_version_requests_total{endpoint="search",outcome="ok",version="2"}' in metrics


async def test_similarity_compares_the_chosen_versions_vectors(split_client):
    two = next(c for c in (f"c{i}" for i in range(100)) if Rollout(1, {2: 0.5}).pick(c) == 2)
    response = await split_client.get("/api/v1/similarity/anime/anime-0-1", headers={"X-Client-Id": two})
    info = response.json()["query_info"]
    assert (
        info["text_version"] == 2 and "synopsis_v2" in info["vectors"] and "synopsis" not in info["vectors"]
    )


async def test_only_admins_may_ask_for_a_version(versioned, tmp_path):
    repository, _ = versioned
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    search = {"Authorization": f"Bearer {SEARCH_KEY}"}
    async with AsyncTestClient(_app(repository, tmp_path / "q", api_keys=KEYS)) as client:
        await _fill(client, admin)
        assert await _version_of(client, admin, model_version=2) == 2
        refused = await client.post("/api/v1/search", json=QUERY | {"model_version": 2}, headers=search)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        unknown = await client.post("/api/v1/search", json=QUERY | {"model_version": 9}, headers=admin)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_version_not_served"
        # Version 2 is a fine-tune: until it is promoted nobody gets it without asking.
        assert await _version_of(client, search) == 1


def _evidence(run_id: str, base_source: str, plot_gain: float, title_loss: float) -> dict:
    """A report shaped as `benchmarks.relevance --finetuned --json` writes it (its own code builds it)."""
    evaluation = Evaluation()
    for system, plot, title in (("base hybrid", 0.0, 1.0), ("tuned hybrid", plot_gain, 1.0 - title_loss)):
        for query_set, value in (("plot-en", plot), ("title-ja", title)):
            hits = tuple([1.0] * round(value * 40) + [0.0] * (40 - round(value * 40)))
            per_query = {"hit1": hits, "hit10": hits, "ndcg": hits, "mrr": hits}
            evaluation.rows.append(Row(query_set, system, 40, per_query=per_query))
    evaluation.compare("base hybrid", "tuned hybrid")
    compared = {"base": {"source": base_source}, "candidate": {"run_id": run_id}}
    return msgspec.json.decode(msgspec.json.encode(as_dict(evaluation) | {"compared": compared}))


async def test_promotion_follows_the_rule_survives_a_restart_and_rolls_back(versioned, tmp_path):
    repository, run_id = versioned
    base_source = load_manifest(repository, TEXT_EMBEDDER, 1)[0].source
    promote = "/api/v1/admin/models/text/promote"
    async with AsyncTestClient(_app(repository, tmp_path / "q")) as client:
        await _fill(client)
        losing = await client.post(
            promote, json={"version": 2, "evidence": _evidence(run_id, base_source, 0.5, 0.25)}
        )
        assert losing.status_code == 409 and losing.json()["error"]["code"] == "promotion_refused"
        assert "title-ja" in losing.json()["error"]["message"]
        other_run = await client.post(
            promote, json={"version": 2, "evidence": _evidence("another-run", base_source, 0.5, 0.0)}
        )
        assert other_run.status_code == 409 and "another-run" in other_run.json()["error"]["message"]
        junk = await client.post(promote, json={"version": 2, "evidence": {"comparisons": "everything"}})
        assert junk.status_code == 422
        assert await _version_of(client) == 1

        good = await client.post(
            promote, json={"version": 2, "evidence": _evidence(run_id, base_source, 0.5, 0.0)}
        )
        assert good.status_code == 200 and good.json()["promoted"]
        assert good.json()["versions"]["default"] == 2 and good.json()["versions"]["history"] == [1]
        assert await _version_of(client) == 2
    # The promotion is in the collection: a restarted replica serves it too.
    async with AsyncTestClient(_app(repository, tmp_path / "q")) as client:
        assert await _version_of(client) == 2
        back = await client.post("/api/v1/admin/models/text/rollback")
        assert back.status_code == 200 and back.json()["default"] == 1
        assert await _version_of(client) == 1
        again = await client.post("/api/v1/admin/models/text/rollback")
        assert again.status_code == 409


async def test_a_version_exported_later_is_served_once_a_reembedding_reindex_fills_it(versioned, tmp_path):
    repository, _ = versioned
    everyone = "2:1.0"  # every identified client to version 2, once the collection has it
    async with AsyncTestClient(_app(repository, tmp_path / "q", text_model_versions="1")) as client:
        await _fill(client)
    async with AsyncTestClient(_app(repository, tmp_path / "q", text_model_split=everyone)) as client:
        client_id = {"X-Client-Id": "shop-1"}
        assert await _version_of(client, client_id) == 1  # version 2 has no vectors yet: the default answers
        asked = await client.post("/api/v1/search", json=QUERY | {"model_version": 2})
        assert asked.status_code == 404 and "reindex" in asked.json()["error"]["message"]
        listing = (await client.get("/api/v1/admin/models/text")).json()
        assert [v["in_collection"] for v in listing["versions"]] == [True, False]
        job = await client.post("/api/v1/admin/reindex", json={"reembed": True})
        assert job.status_code == 202
        assert (await wait_for_reindex(client, job.json()["job_id"]))["state"] == "succeeded"
        assert await _version_of(client, client_id) == 2
        record = (await client.get("/api/v1/search/by-id/anime-0-1")).json()
        assert {"title_v2", "synopsis_v2"} <= set(record["vectors"])


def test_the_cli_lists_promotes_by_the_same_rule_and_rolls_back(versioned, tmp_path, monkeypatch, capsys):
    repository, run_id = versioned
    qdrant = tmp_path / "q"

    async def fill() -> None:
        async with AsyncTestClient(_app(repository, qdrant)) as client:
            await _fill(client)

    asyncio.run(fill())
    monkeypatch.setenv("MODEL_REPOSITORY", str(repository))
    monkeypatch.setenv("QDRANT_PATH", str(qdrant))
    assert versions_cli(["list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["default"] == 1 and [v["version"] for v in listed["versions"]] == [1, 2]
    base_source = load_manifest(repository, TEXT_EMBEDDER, 1)[0].source
    losing = tmp_path / "losing.json"
    losing.write_text(json.dumps(_evidence(run_id, base_source, 0.05, 0.0)))
    assert versions_cli(["promote", "2", "--evidence", str(losing)]) == 2
    assert "not better by the rule" in capsys.readouterr().err
    winning = tmp_path / "winning.json"
    winning.write_text(json.dumps(_evidence(run_id, base_source, 0.5, 0.0)))
    assert versions_cli(["promote", "2", "--evidence", str(winning)]) == 0
    assert json.loads(capsys.readouterr().out)["versions"]["default"] == 2
    assert versions_cli(["rollback"]) == 0
    assert json.loads(capsys.readouterr().out)["default"] == 1
