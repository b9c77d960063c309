"""The calibration sample: a few hundred queries with their exact nearest rows, kept with the index.

The index stores codes, not the float vectors, so the exact neighbours of a query can only be computed
while the floats of a batch are in memory.  The sample is therefore drawn the first time floats pass by
(:meth:`vqsearch.Index.train` or the first ``add``) and its exact neighbour lists are kept up to date at
every later write, from that write's floats:

* ``queries``: up to :data:`SAMPLE_QUERIES` prepared vectors (rows of the first batch, or of the training
  sample);
* ``self_ids``: the id of the row each query is (``-1`` while unknown: a training vector is matched to
  its row when an identical row is written), excluded from its own neighbours and from the results;
* ``truth_ids`` / ``truth_scores``: the best :data:`TRUTH_DEPTH` rows by exact ranking score (:mod:`.metric`),
  best first;
* ``bound``: every row whose score is above it is in the list.  Merging a batch keeps the best rows of the
  list and the batch rows above the bound, so the list stays exact under additions.  Rewritten ids
  (upsert, re-add after delete) leave the list before their new vectors are merged; deleted ids are
  skipped when the sample is read (:meth:`CalibrationSample.exact_top`), and the live rows of a list are
  still the exact best live rows as long as at least ``k`` remain.

The cost of a write is one (sample × batch) matrix product, and the sample is one store blob that
blob of neighbour lists changes only when a write changes one of them (blobs are stored by content hash;
the query vectors are a blob of their own, written once).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptData
from .metric import Metric

#: Queries in the sample: enough for a recall estimate within about ±0.01 (standard error of the mean over
#: queries), small enough that measuring a recall curve stays a fraction of the build time.
SAMPLE_QUERIES = 512
#: Exact neighbours kept per query: the recall@10 that the index reports, plus headroom for deletions.
TRUTH_DEPTH = 20
#: Batch rows scored against the sample at once (bounds the temporary score matrix).
MERGE_CHUNK = 16_384
#: Store blobs holding the sample's neighbour lists and its query vectors.
BLOB = "calibration"
QUERIES_BLOB = "calibration_queries"


@dataclass
class CalibrationSample:
    """Sample queries and their exact neighbour lists (see the module docstring)."""

    queries: np.ndarray  # float32 (m, d), prepared for the metric
    self_ids: np.ndarray  # int64 (m,), -1 = not (yet) a row of the index
    truth_ids: np.ndarray  # int64 (m, TRUTH_DEPTH), -1 = empty
    truth_scores: np.ndarray  # float32 (m, TRUTH_DEPTH), ranking scores (higher = nearer), -inf = empty
    bound: np.ndarray  # float32 (m,): every row scoring above it is in the list

    @classmethod
    def draw(cls, x: np.ndarray, ids: np.ndarray | None = None, *, seed: int = 0) -> CalibrationSample:
        """Up to :data:`SAMPLE_QUERIES` rows of the prepared batch ``x`` as queries (``ids``: their row ids
        when ``x`` is being written; ``None`` for a training sample), with empty neighbour lists."""
        n = x.shape[0]
        pick = np.arange(n) if n <= SAMPLE_QUERIES else np.sort(
            np.random.default_rng(seed).choice(n, SAMPLE_QUERIES, replace=False))
        m = pick.shape[0]
        self_ids = np.full(m, -1, np.int64) if ids is None else np.asarray(ids, np.int64)[pick]
        return cls(np.ascontiguousarray(x[pick], dtype=np.float32), self_ids,
                   np.full((m, TRUTH_DEPTH), -1, np.int64), np.full((m, TRUTH_DEPTH), -np.inf, np.float32),
                   np.full(m, -np.inf, np.float32))

    @property
    def size(self) -> int:
        return int(self.queries.shape[0])

    # ------------------------------------------------------------ keeping the lists exact
    def merged(self, x: np.ndarray, ids: np.ndarray, metric: Metric) -> CalibrationSample:
        """The sample after writing prepared rows ``x`` with ``ids`` (new rows or replacements)."""
        ids = np.asarray(ids, np.int64)
        truth_ids, truth_scores = self.truth_ids.copy(), self.truth_scores.copy()
        rewritten = np.isin(truth_ids, ids)  # their old vectors no longer exist
        truth_ids[rewritten], truth_scores[rewritten] = -1, -np.inf
        self_ids = self.self_ids.copy()
        for start in range(0, x.shape[0], MERGE_CHUNK):
            chunk, chunk_ids = x[start:start + MERGE_CHUNK], ids[start:start + MERGE_CHUNK]
            ip = self.queries @ chunk.T
            self._match_self(self_ids, ip, chunk, chunk_ids)
            scores = metric.score(ip, metric.row_norms(chunk)[None, :]) if metric.uses_norms else ip
            scores = np.asarray(scores, np.float32)
            scores[chunk_ids[None, :] == self_ids[:, None]] = -np.inf
            scores[scores <= self.bound[:, None]] = -np.inf
            width = min(TRUTH_DEPTH, scores.shape[1])
            best = np.argpartition(-scores, width - 1, axis=1)[:, :width]
            best_scores = np.take_along_axis(scores, best, 1)
            truth_ids, truth_scores = _best(
                np.concatenate([truth_ids, np.where(np.isfinite(best_scores), chunk_ids[best], -1)], axis=1),
                np.concatenate([truth_scores, best_scores], axis=1))
        full = (truth_ids >= 0).all(axis=1)
        bound = np.where(full, np.maximum(self.bound, truth_scores[:, -1]), self.bound).astype(np.float32)
        return CalibrationSample(self.queries, self_ids, truth_ids, truth_scores, bound)

    def _match_self(self, self_ids: np.ndarray, ip: np.ndarray, chunk: np.ndarray, chunk_ids: np.ndarray) -> None:
        """Set ``self_ids`` of training-sample queries that equal a row of ``chunk`` (``ip``: their products)."""
        unknown = np.flatnonzero(self_ids < 0)
        if unknown.size == 0:
            return
        query_norms = np.einsum("ij,ij->i", self.queries[unknown], self.queries[unknown])[:, None]
        row_norms = np.einsum("ij,ij->i", chunk, chunk)[None, :]
        near = query_norms + row_norms - 2 * ip[unknown] <= 1e-5 * (query_norms + row_norms)
        for q, row in zip(*np.nonzero(near)):  # float32 rounding: confirm equality exactly
            if self_ids[unknown[q]] < 0 and np.array_equal(self.queries[unknown[q]], chunk[row]):
                self_ids[unknown[q]] = chunk_ids[row]

    # ------------------------------------------------------------ reading
    def exact_top(self, k: int, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(query numbers, ids, scores)`` of the exact best ``k`` live rows of every query that still has
        ``k`` live rows in its list; ``live`` is a bool mask over ``truth_ids`` (rows still in the index)."""
        keep = (self.truth_ids >= 0) & live
        usable = np.flatnonzero(keep.sum(axis=1) >= k)
        order = np.argsort(~keep[usable], axis=1, kind="stable")[:, :k]  # live entries first, in rank order
        ids = np.take_along_axis(self.truth_ids[usable], order, 1)
        scores = np.take_along_axis(self.truth_scores[usable], order, 1)
        return usable, ids, scores

    # ------------------------------------------------------------ serialisation
    def to_blobs(self) -> dict[str, bytes]:
        """Store blobs: the query vectors (written once) and the neighbour lists (rewritten when they change)."""
        return {QUERIES_BLOB: _npz(queries=self.queries),
                BLOB: _npz(self_ids=self.self_ids, truth_ids=self.truth_ids, truth_scores=self.truth_scores,
                           bound=self.bound)}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes]) -> CalibrationSample | None:
        """The sample stored by :meth:`to_blobs`, or ``None`` when the index has none."""
        if BLOB not in blobs or QUERIES_BLOB not in blobs:
            return None
        try:
            with np.load(io.BytesIO(blobs[QUERIES_BLOB]), allow_pickle=False) as q, \
                    np.load(io.BytesIO(blobs[BLOB]), allow_pickle=False) as f:
                sample = cls(q["queries"], f["self_ids"], f["truth_ids"], f["truth_scores"], f["bound"])
        except (ValueError, OSError, KeyError) as exc:
            raise CorruptData(f"the calibration sample is unreadable: {exc}") from None
        m = sample.queries.shape[0]
        if (sample.queries.ndim != 2 or sample.self_ids.shape != (m,) or sample.bound.shape != (m,)
                or sample.truth_ids.shape != sample.truth_scores.shape or sample.truth_ids.shape[0] != m):
            raise CorruptData("the calibration sample has inconsistent shapes")
        return sample


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _best(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best :data:`TRUTH_DEPTH` of each row of ``(ids, scores)``, best first; empty slots (-1, -inf)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :TRUTH_DEPTH]
    scores = np.take_along_axis(scores, order, 1)
    ids = np.where(np.isfinite(scores), np.take_along_axis(ids, order, 1), -1)
    return ids, scores.astype(np.float32)
