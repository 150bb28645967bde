"""Triton engine: tritonclient's asyncio clients (gRPC by default, HTTP as an option)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from service.domain.manifest import split_ref
from service.platform.errors import DependencyUnavailable

_DEFAULT_MAX_BATCH = 32


class UpstreamError(DependencyUnavailable):
    """Triton answered, but with an error for this request."""

    status_code = 502
    code = "upstream_error"


class TritonEngine:
    name = "triton"

    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = 10.0) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol not in ("grpc", "http"):
            raise ValueError(f"unknown Triton protocol {protocol!r} (grpc or http)")
        if protocol == "grpc":
            from tritonclient.grpc import aio as client_module
        else:
            from tritonclient.http import aio as client_module  # type: ignore[no-redef]
        self._module: Any = client_module
        # Created on first use: the aio clients bind to the running event loop, so an engine built in
        # synchronous code (a CLI, a test fixture) would otherwise fail at construction.
        self._client_instance: Any = None
        self._max_batch: dict[str, int] = {}

    @property
    def _client(self) -> Any:
        if self._client_instance is None:
            self._client_instance = self._new_client()
        return self._client_instance

    def _new_client(self) -> Any:
        if self.protocol == "http":
            return self._module.InferenceServerClient(url=self.url, conn_timeout=self.timeout_s)
        from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

        # gRPC's reconnect backoff grows to 120 s by default: after a Triton restart the façade
        # would keep failing for minutes. Cap it so recovery takes seconds.
        channel_args = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        return self._module.InferenceServerClient(url=self.url, channel_args=channel_args)

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        request_inputs = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request_inputs.append(tensor)
        requested = [self._module.InferRequestedOutput(name) for name in outputs]
        name, version = split_ref(model)
        result = await self._call(
            model,
            self._client.infer(name, request_inputs, model_version=str(version or ""), outputs=requested),
        )
        return {name: result.as_numpy(name) for name in outputs}

    async def _call(self, model: str, awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout=self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise DependencyUnavailable(
                "triton", f"no answer from {self.url} within {self.timeout_s:g}s", model=model
            ) from exc
        except InferenceServerException as exc:
            raise self._translate(model, exc) from exc
        except OSError as exc:  # HTTP client: connection refused / reset
            raise DependencyUnavailable("triton", f"cannot reach {self.url}: {exc}", model=model) from exc

    def _translate(self, model: str, exc: InferenceServerException) -> DependencyUnavailable:
        status = str(exc.status() or "")
        message = exc.message() or str(exc)
        unreachable = "UNAVAILABLE" in status or "failed to connect" in message.lower() or status == "None"
        if unreachable and "model" not in message.lower():
            return DependencyUnavailable("triton", f"cannot reach {self.url}: {message}", model=model)
        if (
            "not found" in message.lower()
            or "not ready" in message.lower()
            or "unknown model" in message.lower()
        ):
            return DependencyUnavailable("triton", f"model '{model}' is not ready on {self.url}", model=model)
        if "DEADLINE_EXCEEDED" in status:
            return DependencyUnavailable("triton", f"deadline exceeded on {self.url}", model=model)
        return UpstreamError("triton", message, model=model, status=status)

    async def model_ready(self, model: str) -> bool:
        try:
            name, version = split_ref(model)
            ready = self._client.is_model_ready(name, str(version or ""))
            return bool(await asyncio.wait_for(ready, timeout=self.timeout_s))
        except (asyncio.TimeoutError, InferenceServerException, OSError):
            return False

    async def server_live(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.is_server_live(), timeout=self.timeout_s))
        except (asyncio.TimeoutError, InferenceServerException, OSError):
            return False

    async def refresh_model_info(self, models: Sequence[str]) -> None:
        """Learn each model's max_batch_size from Triton; keeps the default where Triton is down."""
        for model in models:
            try:
                name, version = split_ref(model)
                config = await asyncio.wait_for(
                    self._client.get_model_config(
                        name, str(version or ""), **({"as_json": True} if self.protocol == "grpc" else {})
                    ),
                    timeout=self.timeout_s,
                )
            except (asyncio.TimeoutError, InferenceServerException, OSError):
                continue
            body = config.get("config", config)
            size = int(body.get("max_batch_size", 0) or 0)
            if size > 0:
                self._max_batch[model] = size

    def max_batch_size(self, model: str) -> int:
        return self._max_batch.get(model, _DEFAULT_MAX_BATCH)

    async def close(self) -> None:
        if self._client_instance is not None:
            await self._client_instance.close()
            self._client_instance = None
