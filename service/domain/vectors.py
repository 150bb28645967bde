"""The collection's named vectors, and which of them each version of the text model owns.

Low in the stack on purpose: use cases, ingest and the store all name vectors, and none of them should
import the wiring (`runtime`) to do so.

Versions of the text model are served side by side (an A/B test of a fine-tune against its base): each
version owns its own `title`, `facts` and `synopsis` vectors (and `text_sparse` where the model has a
sparse head), its own synopsis calibration and its own `hubness` payload field, all in the one
collection, so one upsert writes every version at once and a reindex rebuilds them together. Version 1
keeps the plain names it had before versions existed (a collection built then needs no migration);
version N's are suffixed `_vN`. The lexical channel (BM25) does not depend on the model: one for all.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every name of an anime, one vector each, scored by the best match (MaxSim).
TITLE_VECTOR = "title"
# Type, season, genres, themes and studios as one line: what a description of the kind of show meets.
FACTS_VECTOR = "facts"
# Every synopsis, centred on its language's mean (service/domain/calibration.py), scored by the best match.
SYNOPSIS_VECTOR = "synopsis"
# BM25 term weights of all the text (service/encoders/lexical.py), with Qdrant's IDF: every text model.
TEXT_LEXICAL_VECTOR = "text_lexical"
# BGE-m3's learned lexical weights, where the text model has that head.
TEXT_SPARSE_VECTOR = "text_sparse"
PICTURE_VECTOR = "picture"
THUMBNAIL_VECTOR = "thumbnail"
TEXT_DENSE_VECTORS = (TITLE_VECTOR, FACTS_VECTOR, SYNOPSIS_VECTOR)
TEXT_MULTI_VECTORS = (TITLE_VECTOR, SYNOPSIS_VECTOR)
IMAGE_VECTORS = (PICTURE_VECTOR, THUMBNAIL_VECTOR)
# Payload field of an anime's synopsis hubness (service/domain/calibration.py), per text model version.
HUBNESS_FIELD = "hubness"
# Collection metadata key of the synopsis calibration, per text model version.
CALIBRATION_KEY = "avs_calibration"


def versioned(name: str, version: int) -> str:
    """`title` for version 1, `title_v2` for version 2: a version's own copy of a model-bound name."""
    return name if version == 1 else f"{name}_v{version}"


@dataclass(frozen=True)
class TextVectorNames:
    """What one version of the text model owns in the collection."""

    version: int
    title: str
    facts: str
    synopsis: str
    sparse: str
    hubness: str
    calibration_key: str

    @classmethod
    def of(cls, version: int) -> TextVectorNames:
        if version < 1:
            raise ValueError(f"text model versions start at 1, got {version}")
        return cls(
            version=version,
            title=versioned(TITLE_VECTOR, version),
            facts=versioned(FACTS_VECTOR, version),
            synopsis=versioned(SYNOPSIS_VECTOR, version),
            sparse=versioned(TEXT_SPARSE_VECTOR, version),
            hubness=versioned(HUBNESS_FIELD, version),
            calibration_key=versioned(CALIBRATION_KEY, version),
        )

    @property
    def dense(self) -> tuple[str, str, str]:
        return (self.title, self.facts, self.synopsis)

    @property
    def multi(self) -> tuple[str, str]:
        return (self.title, self.synopsis)

    @property
    def slots(self) -> dict[str, int]:
        """How many of each multivector's rows get a graph of their own on a large catalogue
        (service/store/slots.py). An anime has five names at the median, eight at the 90th percentile:
        with six slots the union of their exact lists held 0.998 of the exact top 10 of title queries
        on 50k anime, with four 0.980. A synopsis is in one or two languages: two slots hold it whole."""
        return {self.title: 6, self.synopsis: 2}

    def base_name(self, name: str) -> str:
        """`title_v2` → `title`: the role a name plays whatever its version (weights, explanations)."""
        suffix = f"_v{self.version}"
        return name[: -len(suffix)] if self.version != 1 and name.endswith(suffix) else name
