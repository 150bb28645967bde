"""Service info and health."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from service import __version__
from service.admin.health import check_health
from service.domain.manifest import TEXT_EMBEDDER
from service.platform.metrics import CONTENT_TYPE
from service.runtime import Runtime
from service.schemas import (
    HealthResponse,
    ModelInfo,
    ModelPrompts,
    ReferenceParityInfo,
    ServiceInfo,
)
from service.security.guards import limit_rate, requires_role_unless_public


@get(
    "/",
    operation_id="serviceInfo",
    tags=["system"],
    summary="Service info: version, engine, store and the models behind each role",
    guards=[limit_rate(None)],
)
async def service_info(state: State) -> ServiceInfo:
    runtime: Runtime = state.runtime
    rollout = await runtime.current_rollout()
    # Every served text version (the default first), then the other roles.
    text = sorted(runtime.text_models.values(), key=lambda t: (t.version != rollout.default, t.version))
    entries = [(t.manifest, t.version, t.version == rollout.default) for t in text]
    entries += [(m, None, None) for role, m in runtime.manifests.items() if role != TEXT_EMBEDDER]
    return ServiceInfo(
        name="anime-vector-service",
        version=__version__,
        engine=runtime.engine.name,
        store=runtime.store.engine,
        collection=runtime.store.alias,
        models=[
            ModelInfo(
                role=m.role,
                source=m.source,
                architecture=m.architecture,
                dim=m.dim,
                pooling=m.pooling,
                sparse=m.has_sparse,
                max_length=m.tokenizer.max_length if m.tokenizer else None,
                model_version=m.model_version,
                parity_max_abs_diff=m.parity_max_abs_diff,
                license=m.license,
                upstream=m.upstream,
                weights_note=m.weights_note,
                prompts=ModelPrompts(query=m.prompts.query, document=m.prompts.document)
                if m.kind == "text"
                else None,
                reference_parity=ReferenceParityInfo(
                    engine=m.reference_parity.engine,
                    texts=m.reference_parity.texts,
                    min_cosine=m.reference_parity.min_cosine,
                    token_ids_identical=m.reference_parity.token_ids_identical,
                )
                if m.reference_parity
                else None,
                precision=m.precision,
                quantized_min_cosine=m.quantization.min_cosine_to_fp32 if m.quantization else None,
                version=version,
                default=default,
                lineage_run=m.lineage.run_id if m.lineage else None,
            )
            for m, version, default in entries
        ],
    )


@get(
    "/health",
    operation_id="health",
    tags=["system"],
    summary="Dependency health: ok, degraded (a model is down; named in components) or down (store; 503)",
    responses={503: ResponseSpec(data_container=HealthResponse, description="a required dependency is down")},
    guards=[requires_role_unless_public("health")],  # probes are never rate limited
)
async def health(state: State) -> Response[HealthResponse]:
    report = await check_health(state.runtime)
    return Response(report, status_code=503 if report.status == "down" else 200)


@get(
    "/metrics",
    operation_id="metrics",
    tags=["system"],
    summary="Prometheus metrics (text exposition format)",
    media_type=CONTENT_TYPE,
    guards=[requires_role_unless_public("metrics")],
)
async def prometheus_metrics(state: State) -> Response[bytes]:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
