"""Small HTTP helpers the API tests share: a JSON call that must succeed, result ids, a reindex wait."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient


async def post(client: AsyncTestClient, path: str, body: dict, status: int = 200) -> dict:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def ids(body: dict) -> list[str]:
    return [r["anime_id"] for r in body["results"]]


async def wait_for_reindex(client: AsyncTestClient, job_id: str) -> dict:
    """The job's view once it is no longer running (polled, 30 s at most)."""
    for _ in range(600):
        job = (await client.get(f"/api/v1/admin/reindex/{job_id}")).json()
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("reindex did not finish")
