"""The collection's lifecycle: one collection behind an alias, created, checked, swapped and described.

Searches and writes name the alias, never a collection, so a reindex can build a new collection and
make the alias point at it in one atomic request. On first use the aliased collection is created (from
the environment's index settings) or checked against the deployed models; a collection's metadata
keeps what the service must remember about it: the index settings it was built with, each text model
version's calibration and the rollout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from qdrant_client import models

from service.domain.calibration import Calibration
from service.domain.vectors import CALIBRATION_KEY
from service.platform.errors import ModelMismatch
from service.store import schema_check
from service.store.backend import Backend
from service.store.filters import PAYLOAD_INDEXES
from service.store.guard import StoreGuard
from service.store.params import IndexParams
from service.store.slots import slot_names
from service.store.types import VectorSchema


@dataclass(eq=False)
class Collection:
    """The aliased collection and the state the store keeps about it.

    `ready`: the live collection was found or created and fits the models (checked again after an
    outage or a swap). `missing`: the schema's optional vectors it lacks, which writes leave out;
    `checked`: `missing` describes the live collection (kept while the store is down, not after a
    swap). `params`: the index settings searches use, the live collection's once it was read.
    """

    _backend: Backend
    _guard: StoreGuard
    alias: str
    schema: VectorSchema
    params: IndexParams
    # Awaited after an alias swap: every point may have changed (cache invalidation).
    _written: Callable[[], Awaitable[None]]
    ready: bool = field(default=False, init=False)
    missing: frozenset[str] = field(default=frozenset(), init=False)
    checked: bool = field(default=False, init=False)
    # The multivectors whose slots the live collection stores (service/store/slots.py).
    slotted: frozenset[str] = field(default=frozenset(), init=False)
    _calibrations: dict[str, Calibration | None] = field(default_factory=dict, init=False)
    _init_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def ensure_ready(self) -> None:
        """Create the aliased collection on first use, or check the existing one fits the models."""
        if self.ready:
            return
        async with self._init_lock:
            if self.ready:
                return
            collection = await self.live()
            missing: frozenset[str] = frozenset()
            slotted = self.schema.multi
            if collection is None:
                name = self.new_name()
                await self.create(name, self.schema, self.params)
                await self.point_alias(name)
            else:
                info = await self.read(collection)
                missing = schema_check.missing_optional(info, self.schema)
                slotted = schema_check.slotted(info, self.schema)
                shape, distance = schema_check.problems(info, self.schema)
                if shape or distance:
                    # Another metric only needs a copy into a collection built with the configured one;
                    # other vectors need the text re-embedded.
                    body = '{"reembed": true}' if shape else "{}"
                    problems = shape + distance
                    raise ModelMismatch(
                        f"collection '{collection}' (alias '{self.alias}') does not fit the deployed models: "
                        + "; ".join(problems)
                        + f". Rebuild it with POST /api/v1/admin/reindex {body}.",
                        collection=collection,
                        problems=problems,
                    )
                # A collection built before an index was added to the schema gets it now (idempotent).
                absent = {
                    key: kind
                    for key, kind in self.payload_indexes(self.schema).items()
                    if key not in (info.payload_schema or {})
                }
                await self.index_payload(collection, absent)
                # Build-time settings are the live collection's (e.g. rescoring only if it is quantized),
                # not the environment's, which only seed new collections; query-time ones stay ours.
                self.params = self.params_of(info)
            self.missing = missing
            self.slotted = slotted
            self.checked = True
            self.ready = True

    @property
    def leave_out(self) -> frozenset[str]:
        """The vectors writes leave out: optional ones the live collection lacks, and the slots of a
        collection built before them."""
        unslotted = self.schema.multi - self.slotted
        return self.missing | {s for m in unslotted for s in slot_names(m, self.schema.slots[m])}

    def invalidate(self) -> None:
        """Forget the schema check and the calibrations (after a swap); the next call re-reads them."""
        self.ready = False
        self.checked = False
        self._calibrations = {}

    def lost(self) -> None:
        """The store looked down: check the collection again once it answers (`missing` is kept)."""
        self.ready = False

    # -- the alias ----------------------------------------------------------------------------

    async def live(self) -> str | None:
        """The collection behind the alias, without checking its schema (reindex reads any)."""
        aliases = await self._guard.call(self._backend.client.get_aliases(), "listing aliases")
        for alias in aliases.aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        # A plain collection named like the alias (e.g. created by hand) is used as is.
        exists = await self._guard.call(
            self._backend.client.collection_exists(self.alias), "checking collection"
        )
        return self.alias if exists else None

    def new_name(self) -> str:
        return f"{self.alias}_{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M%S%f')}"

    async def point_alias(self, collection: str) -> str | None:
        """Make the alias name `collection`, atomically (one aliases request); returns the old target."""
        previous = await self.live()
        operations: list[Any] = []
        if previous is not None and previous != self.alias:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=self.alias)
            )
        )
        await self._guard.call(
            self._backend.client.update_collection_aliases(change_aliases_operations=operations),
            "alias swap",
        )
        self.invalidate()
        await self._written()
        return previous

    # -- collections --------------------------------------------------------------------------

    async def create(self, name: str, schema: VectorSchema, params: IndexParams) -> None:
        local = self._backend.is_local
        await self._guard.call(
            self._backend.client.create_collection(
                collection_name=name,
                vectors_config=schema_check.vectors_config(schema),
                sparse_vectors_config=schema_check.sparse_vectors_config(schema),
                hnsw_config=params.hnsw(),
                quantization_config=params.quantization_config(),
                on_disk_payload=params.on_disk_payload,
                metadata={schema_check.PARAMS_METADATA_KEY: msgspec.to_builtins(params)},
                **({} if local else {"shard_number": params.shards, "replication_factor": params.replicas}),
            ),
            "creating collection",
        )
        await self.index_payload(name, self.payload_indexes(schema))

    @staticmethod
    def payload_indexes(schema: VectorSchema) -> dict[str, models.PayloadSchemaType]:
        """The filter fields, and the fields score formulas read (as floats)."""
        return PAYLOAD_INDEXES | dict.fromkeys(sorted(schema.score_fields), models.PayloadSchemaType.FLOAT)

    async def index_payload(self, name: str, indexes: dict[str, models.PayloadSchemaType]) -> None:
        # Local mode has no payload indexes (it scans); Qdrant needs them for fast filters and formulas.
        if self._backend.is_local:
            return
        for key, field_schema in indexes.items():
            await self._guard.call(
                self._backend.client.create_payload_index(name, key, field_schema=field_schema, wait=True),
                "create payload index",
            )

    async def drop(self, name: str) -> None:
        await self._guard.call(self._backend.client.delete_collection(name), "deleting collection")

    async def read(self, collection: str) -> models.CollectionInfo:
        return await self._guard.call(self._backend.client.get_collection(collection), "reading collection")

    async def missing_optional(self, collection: str) -> frozenset[str]:
        """The schema's optional vectors `collection` lacks (text versions exported after it was built)."""
        return schema_check.missing_optional(await self.read(collection), self.schema)

    async def schema_problems(self, collection: str, schema: VectorSchema) -> list[str]:
        shape, distance = schema_check.problems(await self.read(collection), schema)
        return shape + distance

    def params_of(self, info: models.CollectionInfo) -> IndexParams:
        """The index settings a collection was built with (ours when it has no record of them), with
        the query-time settings in use now."""
        recorded = schema_check.recorded_params(info)
        return recorded.with_query_time_of(self.params) if recorded is not None else self.params

    async def params_in(self, collection: str) -> IndexParams:
        return self.params_of(await self.read(collection))

    # -- metadata: calibrations, rollout ------------------------------------------------------

    async def metadata(self, key: str, collection: str | None = None) -> Any:
        """One key of a collection's metadata (the live one by default); None when absent."""
        name = collection or await self.live()
        if name is None:
            return None
        return schema_check.metadata_of(await self.read(name)).get(key)

    async def save_metadata(self, key: str, value: Any, collection: str | None = None) -> None:
        """Set one key of a collection's metadata (the live one by default), keeping the others."""
        name = collection or await self.live() or self.alias
        metadata = schema_check.metadata_of(await self.read(name))
        metadata[key] = value
        await self._guard.call(
            self._backend.client.update_collection(name, metadata=metadata), f"saving {key}"
        )

    async def calibration(
        self, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> Calibration | None:
        """A text model version's calibration (`key`) in a collection (the live one by default; cached)."""
        if collection is None and self._calibrations.get(key) is not None:
            return self._calibrations[key]
        recorded = await self.metadata(key, collection)
        try:
            found = msgspec.convert(recorded, Calibration) if recorded is not None else None
        except msgspec.ValidationError:
            found = None  # written by another version of the service: as if there were none
        if collection is None:
            self._calibrations[key] = found
        return found

    async def save_calibration(
        self, calibration: Calibration, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> None:
        """Record `calibration` under `key` in a collection's metadata (the live one by default)."""
        await self.save_metadata(key, msgspec.to_builtins(calibration), collection)
        if collection is None or collection == await self.live():
            self._calibrations[key] = calibration
