"""The three metrics of an index, and everything that differs between them.

Internally every search ranks by a *score*, higher = nearer, built from inner products:

* ``ip``: score = ⟨q, x⟩, reported as is (similarity; missing results ``-inf``);
* ``cosine``: vectors and queries are L2-normalised on the way in, then as ``ip``;
* ``l2``: score = 2⟨q, x⟩ − ‖x‖² (the squared distance ‖q − x‖² = ‖q‖² − score), so the scan and the
  rescoring stay inner-product machinery; the exact ‖x‖² of every row is stored at write time and the
  reported distance is ‖q‖² − score, clamped at 0 (lower = nearer; missing results ``+inf``).

The scan's per-row affine terms, the IVF centroid ranking and the final conversion all come from here,
so no other module of the index branches on the metric's name.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InvalidInput

MetricLike = Literal["cosine", "ip", "l2"]


class Metric:
    """Inner-product ranking (the ``ip`` metric); subclasses change what differs."""

    name: str = "ip"
    #: True when results are similarities (best first = largest); False for distances.
    higher_is_better: bool = True
    #: True when the index stores each row's exact squared norm (extra column ``norm2``).
    uses_norms: bool = False
    #: True when IVF k-means should keep centroids on the unit sphere.
    spherical: bool = False

    # --------------------------------------------------------------- writes and queries
    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Vectors and queries as the index stores and searches them: C-contiguous float32."""
        return np.ascontiguousarray(x, dtype=np.float32)

    def row_norms(self, x: np.ndarray) -> np.ndarray:
        """The per-row value stored at write time when :attr:`uses_norms` (``‖x‖²``, float32)."""
        return np.einsum("ij,ij->i", x, x).astype(np.float32)

    # --------------------------------------------------------------- ranking score
    @property
    def scan_scale(self) -> float:
        """Factor on the scan estimate's per-query constant: score = scale·⟨q, x⟩ + per-row term."""
        return 1.0

    def scan_row_terms(self, offset: np.ndarray, scale: np.ndarray, norms: np.ndarray | None,
                       n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-row terms of the scan estimate ⟨q, x⟩ ≈ c_q + offset + scale·S turned into the ranking score's
        (empty arrays mean 0 and 1)."""
        return offset, scale

    def score(self, ip: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
        """Ranking score from inner products ⟨q, x⟩ (and the rows' stored norms when :attr:`uses_norms`)."""
        return ip

    def probe_bias(self, centroid_norms: np.ndarray) -> np.ndarray:
        """Per-centroid bias b such that ⟨q, c⟩ + b orders IVF lists nearest first (float32)."""
        return np.zeros(centroid_norms.shape[0], dtype=np.float32)

    @property
    def graph_space(self) -> str:
        """hnswlib space of the IVF centroid graph."""
        return "ip"

    # --------------------------------------------------------------- results
    @property
    def missing(self) -> float:
        """Reported distance of a missing result (FAISS convention)."""
        return -np.inf

    def distances(self, xq: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Reported distances (float32) of ranking scores; ``valid`` is False where a result is missing."""
        return np.where(valid, scores, -np.inf).astype(np.float32)

    def __repr__(self) -> str:
        return f"<Metric {self.name}>"


class Cosine(Metric):
    """Cosine similarity: inner product of L2-normalised vectors."""

    name = "cosine"
    spherical = True

    def prepare(self, x: np.ndarray) -> np.ndarray:
        # Norms in float64: float32 squares overflow above ~1e19.  Zero vectors stay zero.
        norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        x = (x / np.where(norms > 0, norms, 1)).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)


class SquaredL2(Metric):
    """Squared Euclidean distance, ranked as 2⟨q, x⟩ − ‖x‖² (see the module docstring)."""

    name = "l2"
    higher_is_better = False
    uses_norms = True

    @property
    def scan_scale(self) -> float:
        return 2.0

    def scan_row_terms(self, offset: np.ndarray, scale: np.ndarray, norms: np.ndarray | None,
                       n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        offset = 2 * offset - norms if offset.size else -norms
        scale = 2 * scale if scale.size else np.full(n_rows, 2, np.float32)
        return offset, scale

    def score(self, ip: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
        return 2 * ip - norms

    def probe_bias(self, centroid_norms: np.ndarray) -> np.ndarray:
        # ⟨q, c⟩ − ‖c‖²/2 is half the ranking score 2⟨q, c⟩ − ‖c‖²: the same order.
        return (-0.5 * centroid_norms).astype(np.float32)

    @property
    def graph_space(self) -> str:
        return "l2"

    @property
    def missing(self) -> float:
        return np.inf

    def distances(self, xq: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        query_norms = np.einsum("ij,ij->i", xq, xq)[:, None]
        return np.where(valid, np.maximum(query_norms - scores, 0), np.inf).astype(np.float32)


METRICS: dict[str, Metric] = {m.name: m for m in (Cosine(), Metric(), SquaredL2())}


def get_metric(metric: str | Metric) -> Metric:
    """The :class:`Metric` named ``metric`` (case-insensitive); raises ``InvalidInput`` listing the names."""
    if isinstance(metric, Metric):
        return metric
    found = METRICS.get(str(metric).lower())
    if found is None:
        raise InvalidInput(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return found
