"""qdrant-client models <-> qdrant-edge objects: pure translation for `EdgeQdrantClient`.

qdrant-edge (Qdrant's own engine in-process) has its own Python classes; the store speaks
`qdrant_client.models`. Every translation lives here so the client module only deals with folders,
threads and durability. Anything without a faithful translation raises `Unsupported` naming it: a
silently dropped argument would make the embedded store answer differently from a server.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import qdrant_edge as edge
from qdrant_client import models

# Defaults a Qdrant server applies when a request leaves them out.
DEFAULT_LIMIT = 10
DEFAULT_RRF_K = 2
DEFAULT_HNSW = models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10_000)


class Unsupported(NotImplementedError):
    """A qdrant-client argument or model the embedded engine's client does not translate."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not supported by the embedded qdrant-edge store "
            "(set QDRANT_EMBEDDED_ENGINE=local or use a Qdrant server)"
        )


def refuse(**arguments: Any) -> None:
    """Raise for the first argument that is set: callers list what they cannot honour."""
    for name, value in arguments.items():
        if value is not None:
            raise Unsupported(f"argument `{name}`")


def _enum(value: Any, table: Mapping[Any, Any], what: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise Unsupported(f"{what} {value!r}") from None


# -- collection config --------------------------------------------------------------------------

_DISTANCES = {
    models.Distance.COSINE: edge.Distance.Cosine,
    models.Distance.EUCLID: edge.Distance.Euclid,
    models.Distance.DOT: edge.Distance.Dot,
    models.Distance.MANHATTAN: edge.Distance.Manhattan,
}
_DATATYPES = {
    models.Datatype.FLOAT32: edge.VectorStorageDatatype.Float32,
    models.Datatype.FLOAT16: edge.VectorStorageDatatype.Float16,
    models.Datatype.UINT8: edge.VectorStorageDatatype.Uint8,
}
_MEMORY = {
    models.Memory.COLD: edge.Memory.Cold,
    models.Memory.CACHED: edge.Memory.Cached,
    models.Memory.PINNED: edge.Memory.Pinned,
}
_COMPRESSION = {
    models.CompressionRatio.X4: edge.CompressionRatio.X4,
    models.CompressionRatio.X8: edge.CompressionRatio.X8,
    models.CompressionRatio.X16: edge.CompressionRatio.X16,
    models.CompressionRatio.X32: edge.CompressionRatio.X32,
    models.CompressionRatio.X64: edge.CompressionRatio.X64,
}
_BINARY_ENCODING = {
    models.BinaryQuantizationEncoding.ONE_BIT: edge.BinaryQuantizationEncoding.OneBit,
    models.BinaryQuantizationEncoding.TWO_BITS: edge.BinaryQuantizationEncoding.TwoBits,
    models.BinaryQuantizationEncoding.ONE_AND_HALF_BITS: edge.BinaryQuantizationEncoding.OneAndHalfBits,
}
_BINARY_QUERY_ENCODING = {
    models.BinaryQuantizationQueryEncoding.DEFAULT: edge.BinaryQuantizationQueryEncoding.Default,
    models.BinaryQuantizationQueryEncoding.BINARY: edge.BinaryQuantizationQueryEncoding.Binary,
    models.BinaryQuantizationQueryEncoding.SCALAR4BITS: edge.BinaryQuantizationQueryEncoding.Scalar4Bits,
    models.BinaryQuantizationQueryEncoding.SCALAR8BITS: edge.BinaryQuantizationQueryEncoding.Scalar8Bits,
}
PAYLOAD_SCHEMAS = {
    models.PayloadSchemaType.KEYWORD: edge.PayloadSchemaType.Keyword,
    models.PayloadSchemaType.INTEGER: edge.PayloadSchemaType.Integer,
    models.PayloadSchemaType.FLOAT: edge.PayloadSchemaType.Float,
    models.PayloadSchemaType.GEO: edge.PayloadSchemaType.Geo,
    models.PayloadSchemaType.TEXT: edge.PayloadSchemaType.Text,
    models.PayloadSchemaType.BOOL: edge.PayloadSchemaType.Bool,
    models.PayloadSchemaType.DATETIME: edge.PayloadSchemaType.Datetime,
    models.PayloadSchemaType.UUID: edge.PayloadSchemaType.Uuid,
}


def _memory(value: models.Memory | None) -> Any:
    return None if value is None else _enum(value, _MEMORY, "memory placement")


def hnsw_config(
    diff: models.HnswConfigDiff | None, base: models.HnswConfig = DEFAULT_HNSW
) -> models.HnswConfig:
    """A complete HNSW config: the diff's fields over `base` (a server's defaults for a collection)."""
    fields = base.model_dump()
    if diff is not None:
        fields.update(diff.model_dump(exclude_none=True))
    return models.HnswConfig(**fields)


def edge_hnsw(config: models.HnswConfig) -> edge.HnswIndexConfig:
    return edge.HnswIndexConfig(
        m=config.m,
        ef_construct=config.ef_construct,
        full_scan_threshold=config.full_scan_threshold,
        max_indexing_threads=config.max_indexing_threads or 0,
        on_disk=config.on_disk,
        payload_m=config.payload_m,
        inline_storage=config.inline_storage,
        memory=_memory(config.memory),
    )


def edge_quantization(config: Any) -> Any:
    """Scalar, product and binary quantization; TurboQuant and the gRPC forms are refused."""
    if config is None:
        return None
    if isinstance(config, models.ScalarQuantization):
        scalar = config.scalar
        if scalar.type != models.ScalarType.INT8:
            raise Unsupported(f"scalar quantization type {scalar.type!r}")
        return edge.ScalarQuantizationConfig(
            type=edge.ScalarType.Int8,
            quantile=scalar.quantile,
            always_ram=scalar.always_ram,
            memory=_memory(scalar.memory),
        )
    if isinstance(config, models.ProductQuantization):
        product = config.product
        return edge.ProductQuantizationConfig(
            compression=_enum(product.compression, _COMPRESSION, "product quantization compression"),
            always_ram=product.always_ram,
            memory=_memory(product.memory),
        )
    if isinstance(config, models.BinaryQuantization):
        binary = config.binary
        return edge.BinaryQuantizationConfig(
            always_ram=binary.always_ram,
            encoding=None
            if binary.encoding is None
            else _enum(binary.encoding, _BINARY_ENCODING, "binary encoding"),
            query_encoding=None
            if binary.query_encoding is None
            else _enum(binary.query_encoding, _BINARY_QUERY_ENCODING, "binary query encoding"),
            memory=_memory(binary.memory),
        )
    raise Unsupported(f"quantization config {type(config).__name__}")


def _multivector(config: models.MultiVectorConfig | None) -> edge.MultiVectorConfig | None:
    if config is None:
        return None
    if config.comparator != models.MultiVectorComparator.MAX_SIM:
        raise Unsupported(f"multivector comparator {config.comparator!r}")
    return edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)


def edge_vector_params(
    params: models.VectorParams, collection_hnsw: models.HnswConfig
) -> edge.EdgeVectorParams:
    return edge.EdgeVectorParams(
        size=params.size,
        distance=_enum(params.distance, _DISTANCES, "distance"),
        on_disk=params.on_disk,
        multivector_config=_multivector(params.multivector_config),
        datatype=None if params.datatype is None else _enum(params.datatype, _DATATYPES, "vector datatype"),
        quantization_config=edge_quantization(params.quantization_config),
        # A per-vector HNSW diff is applied over the collection's, as a server does.
        hnsw_config=None
        if params.hnsw_config is None
        else edge_hnsw(hnsw_config(params.hnsw_config, collection_hnsw)),
        memory=_memory(params.memory),
    )


def edge_sparse_params(params: models.SparseVectorParams) -> edge.EdgeSparseVectorParams:
    index = params.index or models.SparseIndexParams()
    modifier = params.modifier
    if modifier not in (None, models.Modifier.NONE, models.Modifier.IDF):
        raise Unsupported(f"sparse modifier {modifier!r}")
    return edge.EdgeSparseVectorParams(
        full_scan_threshold=index.full_scan_threshold,
        on_disk=index.on_disk,
        modifier=edge.Modifier.Idf if modifier == models.Modifier.IDF else None,
        datatype=None if index.datatype is None else _enum(index.datatype, _DATATYPES, "sparse datatype"),
        memory=_memory(index.memory),
    )


def edge_config(
    vectors: models.VectorParams | Mapping[str, models.VectorParams] | None,
    sparse_vectors: Mapping[str, models.SparseVectorParams] | None,
    hnsw: models.HnswConfig,
    quantization: Any,
    on_disk_payload: bool | None,
) -> edge.EdgeConfig:
    """The shard config for a new collection (a single VectorParams is the unnamed vector "")."""
    if vectors is not None and not isinstance(vectors, (models.VectorParams, Mapping)):
        raise Unsupported(f"vectors_config of type {type(vectors).__name__}")
    named = {"": vectors} if isinstance(vectors, models.VectorParams) else dict(vectors or {})
    if sparse_vectors is not None and "" in sparse_vectors:
        raise ValueError("Sparse vector name cannot be empty")
    return edge.EdgeConfig(
        vectors={name: edge_vector_params(p, hnsw) for name, p in named.items()},
        sparse_vectors={name: edge_sparse_params(p) for name, p in (sparse_vectors or {}).items()},
        on_disk_payload=on_disk_payload,
        hnsw_config=edge_hnsw(hnsw),
        quantization_config=edge_quantization(quantization),
    )


def edge_payload_schema(schema: Any) -> edge.PayloadSchemaType:
    """A payload index type; the *IndexParams forms (tenants, on-disk, ...) are refused."""
    if isinstance(schema, str) and not isinstance(schema, models.PayloadSchemaType):
        try:
            schema = models.PayloadSchemaType(schema)
        except ValueError:
            raise Unsupported(f"payload index schema {schema!r}") from None
    if not isinstance(schema, models.PayloadSchemaType):
        raise Unsupported(f"payload index schema {type(schema).__name__}")
    return PAYLOAD_SCHEMAS[schema]


def payload_schema_type(schema: edge.PayloadSchemaType) -> models.PayloadSchemaType:
    for ours, theirs in PAYLOAD_SCHEMAS.items():
        if theirs == schema:
            return ours
    raise Unsupported(f"payload index type {schema!r}")


# -- point ids, vectors, points ------------------------------------------------------------------


def point_id(value: Any) -> int | str:
    """A point id as Qdrant takes it: an unsigned int, or a UUID in canonical (lowercase) form."""
    if isinstance(value, bool):
        raise ValueError(f"point id must be an unsigned integer or a UUID, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"point id {value!r} is neither an unsigned integer nor a UUID") from None
    raise Unsupported(f"point id of type {type(value).__name__}")


def from_point_id(value: Any) -> int | str:
    return str(value) if isinstance(value, uuid.UUID) else value


def _floats(values: Any) -> list[float]:
    return [float(x) for x in values]


def edge_vector(value: Any) -> Any:
    """One named vector: dense list, multivector (list of lists) or sparse.

    Lists go to the engine as they are (it reads ints and numpy scalars as floats itself): copying
    ~400k floats per 256-point batch through float() would cost about as much as the write.
    """
    if isinstance(value, models.SparseVector):
        return edge.SparseVector(list(value.indices), list(value.values))
    if hasattr(value, "tolist"):  # numpy arrays
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if value and (isinstance(value[0], (list, tuple)) or hasattr(value[0], "tolist")):
            return [row.tolist() if hasattr(row, "tolist") else row for row in value]  # a multivector
        return value
    raise Unsupported(f"vector of type {type(value).__name__} (inference objects need a server)")


def edge_vectors(value: Any) -> Any:
    """A point's vectors: a dict of named vectors, or one vector for the unnamed ""."""
    if isinstance(value, Mapping):
        return {name: edge_vector(v) for name, v in value.items()}
    return edge_vector(value)


def edge_point(point: models.PointStruct) -> edge.Point:
    if not isinstance(point, models.PointStruct):
        raise Unsupported(f"point of type {type(point).__name__}")
    return edge.Point(point_id(point.id), edge_vectors(point.vector), dict(point.payload or {}))


def batch_points(batch: models.Batch) -> list[models.PointStruct]:
    """A column-wise Batch as PointStructs."""
    vectors = batch.vectors
    count = len(batch.ids)
    if isinstance(vectors, Mapping):
        per_point: list[Any] = [{name: column[i] for name, column in vectors.items()} for i in range(count)]
    else:
        per_point = list(vectors)
    payloads = batch.payloads or [None] * count
    return [
        models.PointStruct(id=pid, vector=vector, payload=payload)
        for pid, vector, payload in zip(batch.ids, per_point, payloads, strict=True)
    ]


def from_edge_vector(value: Any) -> Any:
    if isinstance(value, edge.SparseVector):
        return models.SparseVector.model_construct(indices=list(value.indices), values=_floats(value.values))
    return value


def from_edge_vectors(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {name: from_edge_vector(v) for name, v in value.items()}
    return from_edge_vector(value)


# Built with `model_construct`: the engine's answers are already typed and checked, and validating
# them again costs ~40 µs a point in pydantic, i.e. most of a similarity batch's 4,000 candidates' time.
_RECORD_FIELDS = frozenset({"id", "payload", "vector", "order_value"})
_SCORED_FIELDS = frozenset({"id", "version", "score", "payload", "vector", "order_value"})


def record(found: Any) -> models.Record:
    return models.Record.model_construct(
        _fields_set=_RECORD_FIELDS,
        id=from_point_id(found.id),
        payload=found.payload,
        vector=from_edge_vectors(found.vector),
        shard_key=None,
        order_value=found.order_value,
    )


def scored_point(found: Any) -> models.ScoredPoint:
    return models.ScoredPoint.model_construct(
        _fields_set=_SCORED_FIELDS,
        id=from_point_id(found.id),
        version=found.version,
        score=float(found.score),
        payload=found.payload,
        vector=from_edge_vectors(found.vector),
        shard_key=None,
        order_value=found.order_value,
    )


def with_payload(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, models.PayloadSelectorInclude):
        return edge.PayloadSelector.Include(list(value.include))
    if isinstance(value, models.PayloadSelectorExclude):
        return edge.PayloadSelector.Exclude(list(value.exclude))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(key) for key in value]
    raise Unsupported(f"with_payload of type {type(value).__name__}")


def with_vectors(value: Any) -> bool | list[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(name) for name in value]
    raise Unsupported(f"with_vectors of type {type(value).__name__}")


# -- filters -------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list) else [value]


def edge_filter(flt: models.Filter | None) -> edge.Filter | None:
    if flt is None:
        return None
    if not isinstance(flt, models.Filter):
        raise Unsupported(f"filter of type {type(flt).__name__}")

    def conditions(value: Any) -> list[Any] | None:
        listed = _as_list(value)
        return None if listed is None else [edge_condition(c) for c in listed]

    min_should = None
    if flt.min_should is not None:
        min_should = edge.MinShould(
            conditions=[edge_condition(c) for c in flt.min_should.conditions],
            min_count=flt.min_should.min_count,
        )
    return edge.Filter(
        must=conditions(flt.must),
        should=conditions(flt.should),
        must_not=conditions(flt.must_not),
        min_should=min_should,
    )


def edge_condition(condition: Any) -> Any:
    if isinstance(condition, models.FieldCondition):
        return _field_condition(condition)
    if isinstance(condition, models.Filter):
        return edge_filter(condition)
    if isinstance(condition, models.HasIdCondition):
        return edge.HasIdCondition({point_id(i) for i in condition.has_id})
    if isinstance(condition, models.HasVectorCondition):
        return edge.HasVectorCondition(condition.has_vector)
    if isinstance(condition, models.IsEmptyCondition):
        return edge.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.IsNullCondition):
        return edge.IsNullCondition(condition.is_null.key)
    if isinstance(condition, models.NestedCondition):
        return edge.NestedCondition(condition.nested.key, edge_filter(condition.nested.filter))
    raise Unsupported(f"filter condition {type(condition).__name__}")


def _field_condition(condition: models.FieldCondition) -> edge.FieldCondition:
    return edge.FieldCondition(
        key=condition.key,
        match=None if condition.match is None else _match(condition.match),
        range=None if condition.range is None else _range(condition.range),
        geo_bounding_box=None if condition.geo_bounding_box is None else _geo_box(condition.geo_bounding_box),
        geo_radius=None
        if condition.geo_radius is None
        else edge.GeoRadius(_geo_point(condition.geo_radius.center), condition.geo_radius.radius),
        geo_polygon=None if condition.geo_polygon is None else _geo_polygon(condition.geo_polygon),
        values_count=None
        if condition.values_count is None
        else edge.ValuesCount(**condition.values_count.model_dump()),
        is_empty=condition.is_empty,
        is_null=condition.is_null,
    )


_MATCHES: dict[type, Callable[[Any], Any]] = {
    models.MatchValue: lambda m: edge.MatchValue(m.value),
    models.MatchAny: lambda m: edge.MatchAny(list(m.any)),
    models.MatchExcept: lambda m: edge.MatchExcept(list(m.except_)),
    models.MatchText: lambda m: edge.MatchText(m.text),
    models.MatchTextAny: lambda m: edge.MatchTextAny(m.text_any),
    models.MatchPhrase: lambda m: edge.MatchPhrase(m.phrase),
    models.MatchPrefix: lambda m: edge.MatchPrefix(m.prefix),
    models.MatchSubstring: lambda m: edge.MatchSubstring(m.substring),
}


def _match(match: Any) -> Any:
    convert = _MATCHES.get(type(match))
    if convert is None:
        raise Unsupported(f"match {type(match).__name__}")
    return convert(match)


def _datetime(value: dt.datetime | dt.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)  # a server reads a naive datetime as UTC
    return value.isoformat()


def _range(value: Any) -> Any:
    if isinstance(value, models.Range):
        return edge.RangeFloat(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt)
    if isinstance(value, models.DatetimeRange):
        return edge.RangeDateTime(
            gte=_datetime(value.gte), gt=_datetime(value.gt), lte=_datetime(value.lte), lt=_datetime(value.lt)
        )
    raise Unsupported(f"range {type(value).__name__}")


def _geo_point(point: models.GeoPoint) -> edge.GeoPoint:
    return edge.GeoPoint(lon=point.lon, lat=point.lat)


def _geo_box(box: models.GeoBoundingBox) -> edge.GeoBoundingBox:
    return edge.GeoBoundingBox(_geo_point(box.top_left), _geo_point(box.bottom_right))


def _geo_polygon(polygon: models.GeoPolygon) -> edge.GeoPolygon:
    return edge.GeoPolygon(
        exterior=[_geo_point(p) for p in polygon.exterior.points],
        interiors=None
        if polygon.interiors is None
        else [[_geo_point(p) for p in ring.points] for ring in polygon.interiors],
    )


# -- queries -------------------------------------------------------------------------------------

_QUERY_ONLY_ON_SERVER = (
    models.RecommendQuery,
    models.DiscoverQuery,
    models.ContextQuery,
    models.OrderByQuery,
    models.SampleQuery,
    models.RelevanceFeedbackQuery,
    models.TextQuery,
    models.Document,
    models.Image,
    models.InferenceObject,
)


def _is_vector(value: Any) -> bool:
    return isinstance(value, (list, tuple, models.SparseVector)) or hasattr(value, "tolist")


def edge_query(query: Any, using: str | None) -> Any:
    """A scoring query: nearest (dense, multi, sparse), fusion (RRF, DBSF) or a formula."""
    if query is None:
        return None
    if _is_vector(query):
        return edge.Query.Nearest(edge_vector(query), using=using)
    if isinstance(query, models.NearestQuery):
        if query.mmr is not None:
            raise Unsupported("nearest query with `mmr`")
        return edge.Query.Nearest(edge_vector(query.nearest), using=using)
    if isinstance(query, models.FusionQuery):
        if query.fusion == models.Fusion.RRF:
            return edge.Fusion.Rrf(k=DEFAULT_RRF_K)
        if query.fusion == models.Fusion.DBSF:
            return edge.Fusion.Dbsf()
        raise Unsupported(f"fusion {query.fusion!r}")
    if isinstance(query, models.RrfQuery):
        k = DEFAULT_RRF_K if query.rrf.k is None else query.rrf.k
        return edge.Fusion.Rrf(k=k, weights=None if query.rrf.weights is None else list(query.rrf.weights))
    if isinstance(query, models.FormulaQuery):
        return edge.Formula(edge_expression(query.formula), defaults=dict(query.defaults or {}))
    if isinstance(query, (int, str, uuid.UUID)):
        raise Unsupported("a query by point id")
    if isinstance(query, _QUERY_ONLY_ON_SERVER):
        raise Unsupported(f"query {type(query).__name__}")
    raise Unsupported(f"query of type {type(query).__name__}")


_UNARY: dict[type, tuple[str, Callable[[Any], Any]]] = {
    models.NegExpression: ("neg", edge.Expression.Neg),
    models.AbsExpression: ("abs", edge.Expression.Abs),
    models.SqrtExpression: ("sqrt", edge.Expression.Sqrt),
    models.ExpExpression: ("exp", edge.Expression.Exp),
    models.Log10Expression: ("log10", edge.Expression.Log10),
    models.LnExpression: ("ln", edge.Expression.Ln),
    models.AcoshExpression: ("acosh", edge.Expression.Acosh),
}
_NARY: dict[type, tuple[str, Callable[[Any], Any]]] = {
    models.SumExpression: ("sum", edge.Expression.Sum),
    models.MultExpression: ("mult", edge.Expression.Mult),
    models.MaxExpression: ("max", edge.Expression.Max),
    models.MinExpression: ("min", edge.Expression.Min),
}
_DECAYS: dict[type, tuple[str, Any]] = {
    models.LinDecayExpression: ("lin_decay", edge.DecayKind.Lin),
    models.ExpDecayExpression: ("exp_decay", edge.DecayKind.Exp),
    models.GaussDecayExpression: ("gauss_decay", edge.DecayKind.Gauss),
}
_CONDITIONS = (
    models.FieldCondition,
    models.IsEmptyCondition,
    models.IsNullCondition,
    models.HasIdCondition,
    models.HasVectorCondition,
    models.NestedCondition,
    models.Filter,
)


def edge_expression(expression: Any) -> edge.Expression:
    """A formula's expression tree: constants, variables ("$score", "$score[i]", payload keys),
    conditions (1.0 when true), arithmetic, geo distance, datetimes and decays."""
    if isinstance(expression, bool):
        raise Unsupported("a boolean constant in a formula")
    if isinstance(expression, (int, float)):
        return edge.Expression.Constant(float(expression))
    if isinstance(expression, str):
        return edge.Expression.Variable(expression)
    if isinstance(expression, _CONDITIONS):
        return edge.Expression.Condition(edge_condition(expression))
    kind = type(expression)
    if kind in _NARY:
        field, build = _NARY[kind]
        return build([edge_expression(e) for e in getattr(expression, field)])
    if kind in _UNARY:
        field, build = _UNARY[kind]
        return build(edge_expression(getattr(expression, field)))
    if kind in _DECAYS:
        field, decay = _DECAYS[kind]
        params = getattr(expression, field)
        return edge.Expression.Decay(
            decay,
            edge_expression(params.x),
            target=None if params.target is None else edge_expression(params.target),
            midpoint=params.midpoint,
            scale=params.scale,
        )
    return _other_expression(expression)


def _other_expression(expression: Any) -> edge.Expression:
    if isinstance(expression, models.DivExpression):
        div = expression.div
        return edge.Expression.Div(
            edge_expression(div.left), edge_expression(div.right), by_zero_default=div.by_zero_default
        )
    if isinstance(expression, models.PowExpression):
        return edge.Expression.Pow(
            edge_expression(expression.pow.base), edge_expression(expression.pow.exponent)
        )
    if isinstance(expression, models.GeoDistance):
        params = expression.geo_distance
        return edge.Expression.GeoDistance(_geo_point(params.origin), params.to)
    if isinstance(expression, models.DatetimeExpression):
        return edge.Expression.Datetime(expression.datetime)
    if isinstance(expression, models.DatetimeKeyExpression):
        return edge.Expression.DatetimeKey(expression.datetime_key)
    raise Unsupported(f"formula expression {type(expression).__name__}")


def edge_search_params(params: models.SearchParams | None) -> edge.SearchParams | None:
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        quantization = edge.QuantizationSearchParams(
            ignore=bool(params.quantization.ignore),
            rescore=params.quantization.rescore,
            oversampling=params.quantization.oversampling,
        )
    acorn = None
    if params.acorn is not None:
        acorn = edge.AcornSearchParams(
            enable=bool(params.acorn.enable), max_selectivity=params.acorn.max_selectivity
        )
    return edge.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=bool(params.exact),
        quantization=quantization,
        indexed_only=bool(params.indexed_only),
        acorn=acorn,
        idf=_idf(params.idf),
    )


def _idf(value: Any) -> edge.IdfParams | None:
    if value is None or value == models.IdfScope.GLOBAL:
        return None
    if isinstance(value, models.IdfCorpusParams):
        return edge.IdfParams(corpus=edge_filter(value.corpus))
    raise Unsupported(f"idf scope {value!r}")


def edge_prefetch(prefetch: models.Prefetch) -> edge.Prefetch:
    if not isinstance(prefetch, models.Prefetch):
        raise Unsupported(f"prefetch of type {type(prefetch).__name__}")
    refuse(lookup_from=prefetch.lookup_from)
    return edge.Prefetch(
        limit=DEFAULT_LIMIT if prefetch.limit is None else prefetch.limit,
        query=edge_query(prefetch.query, prefetch.using),
        prefetches=edge_prefetches(prefetch.prefetch),
        params=edge_search_params(prefetch.params),
        filter=edge_filter(prefetch.filter),
        score_threshold=prefetch.score_threshold,
    )


def edge_prefetches(
    prefetch: models.Prefetch | Sequence[models.Prefetch] | None,
) -> list[edge.Prefetch] | None:
    listed = _as_list(prefetch)
    return None if listed is None else [edge_prefetch(p) for p in listed]


def edge_request(
    *,
    query: Any,
    using: str | None,
    prefetch: Any,
    query_filter: models.Filter | None,
    params: models.SearchParams | None,
    limit: int | None,
    offset: int | None,
    with_payload_: Any,
    with_vectors_: Any,
    score_threshold: float | None,
) -> edge.QueryRequest:
    """One Query API request; `query_points` and each request of `query_batch_points` come here."""
    return edge.QueryRequest(
        limit=DEFAULT_LIMIT if limit is None else limit,
        offset=offset,
        query=edge_query(query, using),
        prefetches=edge_prefetches(prefetch),
        with_vector=with_vectors(with_vectors_),
        with_payload=with_payload(with_payload_),
        filter=edge_filter(query_filter),
        score_threshold=score_threshold,
        params=edge_search_params(params),
    )


def edge_batch_request(request: models.QueryRequest) -> edge.QueryRequest:
    if not isinstance(request, models.QueryRequest):
        raise Unsupported(f"batch request of type {type(request).__name__}")
    refuse(shard_key=request.shard_key, lookup_from=request.lookup_from)
    return edge_request(
        query=request.query,
        using=request.using,
        prefetch=request.prefetch,
        query_filter=request.filter,
        params=request.params,
        limit=request.limit,
        offset=request.offset,
        with_payload_=False if request.with_payload is None else request.with_payload,
        with_vectors_=False if request.with_vector is None else request.with_vector,
        score_threshold=request.score_threshold,
    )
