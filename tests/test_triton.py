"""The real tritonserver (nvidia-pytriton's, on CPU): readiness, engine parity, dynamic batching."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import numpy as np
import pytest

from export import triton_config
from service.domain.manifest import CLIP_TEXT_EMBEDDER, IMAGE_EMBEDDER, TEXT_EMBEDDER, load_manifest
from service.encoders.onnx_engine import OnnxRuntimeEngine
from service.encoders.triton_engine import TritonEngine
from service.platform.errors import DependencyUnavailable
from service.triton_local.launcher import free_port, prepare_cpu_repository
from tests.conftest import TINY_ROLE

pytestmark = pytest.mark.triton


def _metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{model="{model}",version="\d+"}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _feed(rows: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 150, size=(rows, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = np.ones_like(ids)
    if rows > 1:
        mask[1, length // 2 :] = 0
        ids[1, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_cpu_repository_keeps_scheduling_and_switches_to_the_python_backend(real_repository, tmp_path):
    names = prepare_cpu_repository(real_repository, tmp_path)
    assert sorted(names) == sorted([TEXT_EMBEDDER, TINY_ROLE, IMAGE_EMBEDDER, CLIP_TEXT_EMBEDDER])
    original = triton_config.read_config(real_repository / TEXT_EMBEDDER)
    derived = triton_config.read_config(tmp_path / TEXT_EMBEDDER)
    assert derived.backend == "python"
    assert derived.max_batch_size == original.max_batch_size
    assert derived.dynamic_batching == original.dynamic_batching
    assert derived.input == original.input and derived.output == original.output
    assert derived.instance_group[0].kind == derived.instance_group[0].KIND_CPU
    assert (tmp_path / TEXT_EMBEDDER / "1" / "model.py").is_file()
    assert (tmp_path / TEXT_EMBEDDER / "1" / "model.onnx").resolve().is_file()


async def test_both_models_are_ready_and_triton_reports_their_batch_limits(local_triton):
    engine = TritonEngine(local_triton.endpoints.grpc_url)
    try:
        assert await engine.model_ready(TEXT_EMBEDDER)
        assert await engine.model_ready(TINY_ROLE)
        assert not await engine.model_ready("no_such_model")
        await engine.refresh_model_info([TEXT_EMBEDDER])
        assert engine.max_batch_size(TEXT_EMBEDDER) == 32
    finally:
        await engine.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_triton_and_in_process_onnxruntime_give_the_same_outputs(
    local_triton, real_repository, protocol
):
    url = local_triton.endpoints.grpc_url if protocol == "grpc" else local_triton.endpoints.http_url
    triton = TritonEngine(url, protocol=protocol)
    graphs = {
        role: load_manifest(real_repository, role)[1] / "model.onnx" for role in (TEXT_EMBEDDER, TINY_ROLE)
    }
    local = OnnxRuntimeEngine(graphs)
    try:
        for role, outputs in ((TEXT_EMBEDDER, ["dense"]), (TINY_ROLE, ["dense", "sparse"])):
            feed = _feed(3, 24, seed=len(role))
            remote = await triton.infer(role, feed, outputs)
            inproc = await local.infer(role, feed, outputs)
            for name in outputs:
                assert remote[name].shape == inproc[name].shape
                np.testing.assert_allclose(remote[name], inproc[name], atol=1e-5)
    finally:
        await triton.close()
        await local.close()


async def test_dynamic_batching_forms_batches_under_concurrent_requests(local_triton):
    """Triton's own counters: fewer executions than inferences means requests were batched."""
    before = _scrape(local_triton.endpoints.metrics_url)
    inferences_before = _metric(before, "nv_inference_count", TEXT_EMBEDDER)
    executions_before = _metric(before, "nv_inference_exec_count", TEXT_EMBEDDER)

    engine = TritonEngine(local_triton.endpoints.grpc_url)
    requests = 96
    try:
        feeds = [_feed(1, 32, seed=i) for i in range(requests)]
        results = await asyncio.gather(*(engine.infer(TEXT_EMBEDDER, f, ["dense"]) for f in feeds))
    finally:
        await engine.close()
    assert all(r["dense"].shape == (1, 384) for r in results)

    deadline = time.monotonic() + 10
    while True:
        after = _scrape(local_triton.endpoints.metrics_url)
        inferences = _metric(after, "nv_inference_count", TEXT_EMBEDDER) - inferences_before
        executions = _metric(after, "nv_inference_exec_count", TEXT_EMBEDDER) - executions_before
        if inferences >= requests or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert inferences == requests
    print(f"{executions:.0f} executions for {inferences:.0f} inferences")
    assert 0 < executions < inferences, f"{executions} executions for {inferences} inferences: no batching"


async def test_unreachable_triton_raises_dependency_unavailable_quickly():
    engine = TritonEngine(f"127.0.0.1:{free_port()}", timeout_s=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(DependencyUnavailable, match="triton is unavailable"):
            await engine.infer(TEXT_EMBEDDER, _feed(1, 8, 0), ["dense"])
    finally:
        await engine.close()
    assert time.monotonic() - started < 5


async def test_unknown_model_is_reported_as_not_ready(local_triton):
    engine = TritonEngine(local_triton.endpoints.grpc_url)
    try:
        with pytest.raises(DependencyUnavailable, match="not ready"):
            await engine.infer("no_such_model", _feed(1, 8, 0), ["dense"])
    finally:
        await engine.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_engine_built_outside_an_event_loop_serves_inside_one(local_triton, protocol):
    # CLIs and fixtures build engines in synchronous code; the aio clients must bind to the loop later.
    url = local_triton.endpoints.grpc_url if protocol == "grpc" else local_triton.endpoints.http_url
    engine = TritonEngine(url, protocol=protocol)

    async def ask() -> bool:
        try:
            return await engine.server_live() and await engine.model_ready(TEXT_EMBEDDER)
        finally:
            await engine.close()

    assert asyncio.run(ask())
