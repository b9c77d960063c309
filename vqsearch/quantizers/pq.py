"""Product quantisers: ``pq`` (Jégou et al. 2011) and ``opq`` (Ge et al. 2013).

The work vector (after the optional RHT, zero-padded to a multiple of ``m``) is split into
``m`` contiguous sub-vectors of ``dsub = d_work/m`` dimensions; sub-vector p is replaced by the
index of its nearest centroid in codebook ``C_p`` (``K = 2^nbits`` entries, trained with faiss
k-means: seeded, ``niter`` iterations, at most 256 training points per centroid).

Code layout ("plain", faiss ``ProductQuantizer`` order): 8-bit codes one byte per
sub-quantiser; 4-bit codes two per byte — sub-quantiser 2j in the low nibble, 2j+1 in the high
nibble (last high nibble 0 when m is odd).  ``code_size = m`` or ``ceil(m/2)``; the codebooks
live in the quantiser state, so ``bits_per_dim = m·nbits/d``.

``opq`` first applies a learned orthogonal rotation R (faiss ``OPQMatrix``: alternating PQ
training and orthogonal Procrustes) to the padded work vector; decode applies Rᵀ.

Search side: :meth:`ProductQuantizer.lut` builds per-query tables in the (rotated) work
domain, and :meth:`~ProductQuantizer.estimate_ip` scans codes with the numba ADC kernels
(:func:`~vqsearch.kernels.pq.adc_scan8` / :func:`~vqsearch.kernels.pq.adc_scan4`).  ADC with
``metric="l2"`` equals ‖q_w − decode_w(code)‖² in the work domain, and ‖q − decode(code)‖² in
the input domain whenever no padding is involved (d divisible by m, RHT of a Hadamard order).

Round trip: a decoded point is a concatenation of centroids, each its own nearest centroid, so
decode∘encode is idempotent on decoded points (up to ties between duplicate centroids), given
an invertible work transform (for ``opq`` and the RHT: no padding).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from .. import parallel
from .._validation import as_code_matrix
from ..errors import InvalidInput, InvalidSpec
from ..kernels.pq import adc_scan, pq_assign, pq_assign_serial
from .base import Quantizer, check_choice
from .registry import register

log = logging.getLogger(__name__)

MetricLike = Literal["ip", "l2"]

#: faiss default: k-means trains on at most this many points per centroid (seeded subsample).
MAX_POINTS_PER_CENTROID = 256
#: faiss warns below 39 points per centroid; we log that once per fit instead of per codebook.
MIN_POINTS_PER_CENTROID = 39
#: Training rows used to learn the OPQ rotation (each outer iteration costs O(n·d²)).
OPQ_MAX_TRAIN = 16384


def _faiss():
    import faiss  # imported lazily: faiss takes a noticeable time to import and only training needs it

    return faiss


class ProductQuantizer(Quantizer):
    """Product quantiser with ``m`` sub-spaces of ``nbits`` bits each.

    Parameters
    ----------
    rht : bool, default False
        Randomized Hadamard transform first.  Off by default: PQ exploits correlations inside
        each sub-space, which the RHT scrambles; on MiniLM embeddings it measured slightly worse
        (relative error 0.2975 → 0.3016 for m=96, 4 bits; 0.2686 → 0.2727 for m=48, 8 bits).
        It helps when a few dimensions carry most of the variance (it balances sub-spaces, the
        cheap cousin of OPQ).
    seed : int, default 0
        Seed of the RHT signs, the k-means initialisation and the training subsample.
    m : int, default 0
        Number of sub-quantisers (code bytes for 8-bit codes).  0 = auto: ``ceil(d_work/4)``
        (4 dimensions per sub-space: 2 bits/dim at 8 bits, 1 bit/dim at 4 bits).  The work
        vector is zero-padded to a multiple of ``m``.
    nbits : {4, 8}, default 8
        Bits per sub-quantiser (K = 16 or 256 centroids).  4-bit codes are packed two per byte
        and scan with 16-entry tables (cache-resident); 8-bit codes are more accurate per
        sub-quantiser but need 256 · m table entries per query.
    niter : int, default 25
        k-means iterations per codebook (faiss default 25); bounds the training time.
    """

    data_free = False
    min_train = 1

    def __init__(self, *, rht: bool = False, seed: int = 0, m: int = 0, nbits: int = 8,
                 niter: int = 25) -> None:
        super().__init__(rht=rht, seed=seed)
        self.nbits = check_choice("nbits", int(nbits), (4, 8))
        self.m = int(m)
        if self.m < 0:
            raise InvalidSpec(f"m must be >= 0 (0 = auto), got {m}")
        self.niter = int(niter)
        if self.niter < 1:
            raise InvalidSpec(f"niter must be >= 1, got {niter}")
        self._centroids: np.ndarray | None = None  # (M, K, dsub) float32
        self._rotation: np.ndarray | None = None  # opq: (d_work, d_work), y = R x
        self._m_auto: int | None = None
        self._tables: tuple[np.ndarray, np.ndarray] | None = None  # cached for assign()

    # ------------------------------------------------------------- layout
    @property
    def M(self) -> int:
        """Number of sub-quantisers actually used (``m``, or the auto value once the dimension is known)."""
        if self.m:
            return self.m
        if self._m_auto is None:
            raise InvalidInput("m=0 (auto) is resolved only once the quantiser knows its dimension")
        return self._m_auto

    @property
    def ksub(self) -> int:
        return 1 << self.nbits

    @property
    def dsub(self) -> int:
        return self._d_work // self.M

    def weight_tile(self) -> None:
        """Any vector length (the work dimension is padded to a multiple of ``m``)."""
        return None

    def _work_dim(self, d_in: int) -> int:
        self._m_auto = -(-d_in // 4)
        m = self.m or self._m_auto
        return -(-d_in // m) * m

    def _code_size(self) -> int:
        return self.M if self.nbits == 8 else (self.M + 1) // 2

    @property
    def centroids(self) -> np.ndarray:
        """Codebooks, float32 (M, K, dsub), in the (rotated) work domain."""
        self._require_fitted()
        return self._centroids

    # ------------------------------------------------------------ training
    def rotate(self, xw: np.ndarray) -> np.ndarray:
        """Work-domain vectors → the codebooks' domain: ``y = R·x`` for ``opq``, unchanged for ``pq``."""
        return xw if self._rotation is None else np.ascontiguousarray(xw @ self._rotation.T)

    def _unrotate(self, yw: np.ndarray) -> np.ndarray:
        return yw if self._rotation is None else np.ascontiguousarray(yw @ self._rotation)

    def _new_faiss_pq(self):
        faiss = _faiss()
        pq = faiss.ProductQuantizer(self._d_work, self.M, self.nbits)
        pq.cp.niter = self.niter
        pq.cp.seed = self.seed
        pq.cp.max_points_per_centroid = MAX_POINTS_PER_CENTROID
        pq.cp.min_points_per_centroid = 1  # silences faiss' per-codebook stderr warning
        pq.cp.verbose = False
        return pq

    def _check_train_size(self, n: int) -> None:
        if n < self.ksub:
            raise InvalidInput(
                f"{self.name} with nbits={self.nbits} needs at least {self.ksub} training vectors "
                f"(one per centroid), got {n}"
            )
        if n < MIN_POINTS_PER_CENTROID * self.ksub:
            log.warning("%s: %d training vectors for %d centroids per codebook; k-means wants >= %d",
                        self.spec, n, self.ksub, MIN_POINTS_PER_CENTROID * self.ksub)

    def _fit(self, xw: np.ndarray) -> None:
        self._check_train_size(xw.shape[0])
        self._train_codebooks(self.rotate(xw))

    def _train_codebooks(self, yw: np.ndarray) -> None:
        faiss = _faiss()
        pq = self._new_faiss_pq()
        with parallel.single_threaded_faiss():  # small k-means problems: see vqsearch.parallel
            pq.train(np.ascontiguousarray(yw, dtype=np.float32))
        cent = faiss.vector_to_array(pq.centroids).reshape(self.M, self.ksub, self.dsub)
        self._centroids = np.ascontiguousarray(cent, dtype=np.float32)
        self._tables = None

    # ----------------------------------------------------------- protocol
    def assign(self, yw: np.ndarray) -> np.ndarray:
        """Nearest-centroid indices uint8 (n, M) of rotated work vectors (exact, numba kernel)."""
        cent_t, cnorm = self._assign_tables()
        kernel = pq_assign if parallel.kernel_parallel(len(yw), yw.size * self.ksub) else pq_assign_serial
        return kernel(np.ascontiguousarray(yw, dtype=np.float32), cent_t, cnorm)

    def _assign_tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tables is None:
            cent = self._centroids
            self._tables = (np.ascontiguousarray(cent.transpose(0, 2, 1)),
                            np.einsum("mkd,mkd->mk", cent, cent).astype(np.float32))
        return self._tables

    def pack(self, idx: np.ndarray) -> np.ndarray:
        """Centroid indices (n, M) → packed codes uint8 (n, code_size)."""
        idx = idx.astype(np.uint8)
        if self.nbits == 8:
            return np.ascontiguousarray(idx)
        if self.M % 2:
            idx = np.concatenate([idx, np.zeros((len(idx), 1), np.uint8)], axis=1)
        return np.ascontiguousarray(idx[:, 0::2] | (idx[:, 1::2] << 4))

    def unpack(self, codes: np.ndarray) -> np.ndarray:
        """Packed codes uint8 (n, code_size) → centroid indices uint8 (n, M)."""
        if self.nbits == 8:
            return codes
        idx = np.empty((len(codes), 2 * codes.shape[1]), dtype=np.uint8)
        idx[:, 0::2] = codes & 15
        idx[:, 1::2] = codes >> 4
        return idx[:, : self.M]

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        return self.pack(self.assign(self.rotate(xw)))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        idx = self.unpack(codes)
        yw = self._centroids[np.arange(self.M)[None, :], idx].reshape(len(codes), self._d_work)
        return self._unrotate(yw)

    def _state(self) -> dict[str, np.ndarray]:
        out = {"centroids": self._centroids}
        if self._rotation is not None:
            out["rotation"] = self._rotation
        return out

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        cent = arrays["centroids"]
        if cent.shape != (self.M, self.ksub, self.dsub):
            raise ValueError(f"centroids must have shape {(self.M, self.ksub, self.dsub)}, got {cent.shape}")
        self._centroids = np.ascontiguousarray(cent, dtype=np.float32)
        self._tables = None

    # ---------------------------------------------------------- search side
    def lut(self, xq: np.ndarray, metric: MetricLike = "ip") -> np.ndarray:
        """Per-query ADC tables, float32 (nq, M, K), in the (rotated) work domain.

        ``"ip"``: ⟨q_p, C_p[j]⟩ (sum over p = ⟨xq, decode(code)⟩); ``"l2"``: ‖q_p − C_p[j]‖²
        (sum = ‖q_w − decode_w(code)‖², see the module docstring for padding).
        """
        metric = check_choice("metric", metric, ("ip", "l2"))
        rotated = self.rotate(self.work_queries(xq))
        sub_queries = rotated.reshape(len(rotated), self.M, self.dsub)
        ip = np.einsum("nmd,mkd->nmk", sub_queries, self._centroids, optimize=True).astype(np.float32)
        if metric == "ip":
            return ip
        query_norms = np.einsum("nmd,nmd->nm", sub_queries, sub_queries)
        centroid_norms = np.einsum("mkd,mkd->mk", self._centroids, self._centroids)
        return (query_norms[:, :, None] - 2.0 * ip + centroid_norms[None]).astype(np.float32)

    def adc(self, lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Scan ``codes`` with tables from :meth:`lut`: Σ_p lut[:, p, code_p], float32 (nq, n)."""
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        lut = np.ascontiguousarray(lut, dtype=np.float32)
        if lut.ndim != 3 or lut.shape[1:] != (self.M, self.ksub):
            raise InvalidInput(f"lut must have shape (nq, {self.M}, {self.ksub}), got {lut.shape}")
        nq = lut.shape[0]
        return adc_scan(lut, codes, self.nbits, parallel.kernel_parallel(nq, nq * codes.shape[0] * self.M))

    def estimate_ip(self, xq: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """⟨xq_i, decode(codes)_j⟩ by ADC (exact up to float32 summation order), float32 (nq, n)."""
        return self.adc(self.lut(xq, "ip"), codes)


@register(aliases=("product",))
class PQ(ProductQuantizer):
    name = "pq"
    codec_id = 5
    description = "product quantiser, m sub-spaces x 4 or 8 bits (faiss k-means), ADC lookup tables"


@register()
class OPQ(ProductQuantizer):
    """PQ after a learned orthogonal rotation (faiss ``OPQMatrix``), stored in the state.

    Extra parameter ``opq_niter`` (default 10; faiss uses 50): outer iterations of alternating
    PQ training and orthogonal Procrustes.  Each costs O(n·d²) (n ≤ ``OPQ_MAX_TRAIN`` rows), and
    most of the gain comes in the first few.
    """

    name = "opq"
    codec_id = 6
    description = "PQ after a learned rotation (faiss OPQMatrix), m x 4 or 8 bits"

    def __init__(self, *, rht: bool = False, seed: int = 0, m: int = 0, nbits: int = 8,
                 niter: int = 25, opq_niter: int = 10) -> None:
        super().__init__(rht=rht, seed=seed, m=m, nbits=nbits, niter=niter)
        self.opq_niter = int(opq_niter)
        if self.opq_niter < 1:
            raise InvalidSpec(f"opq_niter must be >= 1, got {opq_niter}")

    def _fit(self, xw: np.ndarray) -> None:
        faiss = _faiss()
        self._check_train_size(xw.shape[0])
        opq = faiss.OPQMatrix(self._d_work, self.M)
        opq.niter = self.opq_niter
        opq.max_train_points = OPQ_MAX_TRAIN
        opq.verbose = False
        pq = self._new_faiss_pq()  # so that 4-bit OPQ optimises the rotation for 16 centroids
        opq.pq = pq
        xs = xw
        if len(xw) > OPQ_MAX_TRAIN:  # seeded subsample (faiss' own would use its fixed seed)
            rows = np.random.default_rng(self.seed).choice(len(xw), OPQ_MAX_TRAIN, replace=False)
            xs = xw[np.sort(rows)]
        with parallel.single_threaded_faiss():  # small k-means problems: see vqsearch.parallel
            opq.train(np.ascontiguousarray(xs))
        rot = faiss.vector_to_array(opq.A).reshape(self._d_work, self._d_work)
        self._rotation = np.ascontiguousarray(rot, dtype=np.float32)
        self._train_codebooks(self.rotate(xw))

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(arrays)
        rot = arrays["rotation"]
        if rot.shape != (self._d_work, self._d_work):
            raise ValueError(f"rotation must have shape {(self._d_work,) * 2}, got {rot.shape}")
        self._rotation = np.ascontiguousarray(rot, dtype=np.float32)

    @property
    def rotation(self) -> np.ndarray:
        """The learned orthogonal rotation R (y = R·x_work), float32 (d_work, d_work)."""
        self._require_fitted()
        return self._rotation
