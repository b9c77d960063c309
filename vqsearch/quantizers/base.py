"""The quantiser protocol and the shared machinery behind it.

A quantiser maps float32 vectors (n, d) to packed uint8 codes (n, code_size) and
back.  Families implement only the core maths on a "work" matrix; this base does
input validation, the optional randomized Hadamard transform (RHT), padding to
the family's block size, byte-shape checks and serialisation.

Subclass contract (all on the work domain, i.e. after RHT and padding):

* ``name``, ``codec_id``, ``description`` class attributes, and the class decorated with
  :func:`vqsearch.quantizers.registry.register` in its own module (the package imports every module
  of its folder, so a new family needs no other file to be found).
* ``__init__`` takes keyword-only parameters and calls ``super().__init__(rht=..., seed=...)``;
  ``params()`` returns them (JSON-able) so that ``type(q)(**q.params())`` rebuilds an unfitted copy.
* ``_work_dim(d_in)``: padded dimension the core needs (default: unchanged).
* ``_fit(xw)``, ``_code_size()``, ``_encode(xw)``, ``_decode(codes)``.
* ``_state()`` / ``_load_state(arrays)``: fitted arrays for serialisation.

Capabilities other layers use (public, documented below; a family overrides what applies to it):
:attr:`Quantizer.work_dim`, :meth:`Quantizer.work_queries`, :meth:`Quantizer.decode_work`,
:meth:`Quantizer.rotate`, :meth:`Quantizer.scan_terms`, :meth:`Quantizer.estimate_ip` and
:meth:`Quantizer.ip_pairs`.  No module outside this package reads a quantiser's ``_private`` names.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .. import parallel
from .._validation import as_code_matrix, as_float_matrix
from ..errors import DimensionMismatch, EmptyInput, InvalidSpec, NotFitted
from ..rht import RandomizedHadamard

_EMPTY_F32 = np.zeros(0, dtype=np.float32)
_EMPTY_F32.setflags(write=False)


class ScanTerms(NamedTuple):
    """Per-row terms of a first-stage estimate ⟨q, x_i⟩ ≈ c_q + offset_i + scale_i · S_q(code_i).

    ``S_q`` is what a lookup-table or popcount kernel sums over the code bytes and ``c_q`` a per-query
    constant; ``offset``/``scale`` are float32 ``(n,)`` or empty (meaning 0 and 1).  ``error``, when the
    estimator has an error bound, is the per-row scale of its deviation from the exact inner product per
    unit query norm (the confidence half-width is a multiple of ``‖q‖·error_i``), else ``None``.
    """

    offset: np.ndarray = _EMPTY_F32
    scale: np.ndarray = _EMPTY_F32
    error: np.ndarray | None = None


class Quantizer:
    """Base class of all quantisers (see module docstring for the subclass contract)."""

    name: ClassVar[str] = ""
    codec_id: ClassVar[int] = 0
    format_version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    #: True when ``fit`` learns nothing from the data beyond its dimension.
    data_free: ClassVar[bool] = False
    #: Smallest number of training vectors ``fit`` accepts.
    min_train: ClassVar[int] = 1

    def __init__(self, *, rht: bool = False, seed: int = 0) -> None:
        self.rht = bool(rht)
        self.seed = int(seed)
        self.d: int | None = None
        self._transform: RandomizedHadamard | None = None
        self._d_work: int | None = None
        self._fitted = False

    # ------------------------------------------------------------------ spec
    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-able); ``type(q)(**q.params())`` is an unfitted copy."""
        out = {}
        for pname in inspect.signature(type(self).__init__).parameters:
            if pname != "self":
                out[pname] = getattr(self, pname)
        return out

    @property
    def spec(self) -> str:
        """Spec string that :func:`vqsearch.quantizers.get` turns back into an unfitted copy."""
        body = ",".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{self.name}:{body}" if body else self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} d={self.d}>"

    # ----------------------------------------------------------- dimensions
    def _work_dim(self, d_in: int) -> int:
        return d_in

    def _setup(self, d: int) -> None:
        if d < 1:
            raise DimensionMismatch(f"dimension must be >= 1, got {d}")
        self.d = int(d)
        d_in = d
        if self.rht:
            self._transform = RandomizedHadamard(d, seed=self.seed)
            d_in = self._transform.n
        self._d_work = self._work_dim(d_in)

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def work_dim(self) -> int:
        """Dimension of the work domain (after the RHT and the family's padding): the width of
        :meth:`work_queries` and :meth:`decode_work`."""
        self._require_fitted()
        return self._d_work

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector."""
        self._require_fitted()
        return self._code_size()

    def code_size_for(self, d: int) -> int:
        """Bytes per vector for input dimension ``d``, known before fitting.

        Code sizes depend only on the dimension and the parameters, never on training data, so
        storage can declare its column widths when an index is created, before any vector exists.
        """
        probe = type(self)(**self.params())
        probe._setup(int(d))
        return probe._code_size()

    @property
    def bits_per_dim(self) -> float:
        """Code bits per input dimension (everything stored per vector counted)."""
        return 8.0 * self.code_size / self.d

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFitted(f"{self.spec} must be fitted before use (call .fit(x))")

    # ------------------------------------------------------------ transform
    def to_work(self, x: np.ndarray) -> np.ndarray:
        """Validated (n, d) input → (n, d_work) work matrix (RHT, then zero padding)."""
        if self._transform is not None:
            x = self._transform.forward(x)
        if x.shape[1] != self._d_work:
            xw = np.zeros((x.shape[0], self._d_work), dtype=np.float32)
            xw[:, : x.shape[1]] = x
            return xw
        return np.ascontiguousarray(x, dtype=np.float32)

    def from_work(self, xw: np.ndarray) -> np.ndarray:
        """(n, d_work) → (n, d): drop padding, undo RHT."""
        if self._transform is not None:
            return self._transform.inverse(xw[:, : self._transform.n])
        return np.ascontiguousarray(xw[:, : self.d], dtype=np.float32)

    # ------------------------------------------------------------ protocol
    def fit(self, x: np.ndarray) -> Quantizer:
        """Train on ``x`` (float32, (n, d)); returns self.  Data-free quantisers only record ``d``."""
        x = as_float_matrix(x, name="training data")
        if x.shape[0] < self.min_train:
            raise EmptyInput(
                f"{self.name} needs at least {self.min_train} training vectors, got {x.shape[0]}"
            )
        self._setup(x.shape[1])
        with parallel.threads_for():
            self._fit(self.to_work(x))
        self._fitted = True
        return self

    def fit_dim(self, d: int) -> Quantizer:
        """Prepare a data-free quantiser for dimension ``d`` without training data."""
        if not self.data_free:
            raise NotFitted(f"{self.name} learns from data: call .fit(x) instead of .fit_dim(d)")
        self._setup(int(d))
        self._fit(None)
        self._fitted = True
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Encode float32 (n, d) vectors into uint8 (n, code_size) codes."""
        if not self._fitted and self.data_free:
            arr = np.asarray(x)
            if arr.ndim == 2:
                self.fit_dim(arr.shape[1])
        self._require_fitted()
        x = as_float_matrix(x, d=self.d)
        if x.shape[0] == 0:
            return np.zeros((0, self._code_size()), dtype=np.uint8)
        with parallel.threads_for():
            codes = self._encode(self.to_work(x))
        return np.ascontiguousarray(codes, dtype=np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Decode uint8 (n, code_size) codes into float32 (n, d) vectors."""
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        if codes.shape[0] == 0:
            return np.zeros((0, self.d), dtype=np.float32)
        with parallel.threads_for():
            return self.from_work(self._decode(codes))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    # ---------------------------------------------------------- capabilities
    # What scanners, the index and the weights layer use.  (Weights-specific capabilities, such as the
    # tile shape a family wants for weight matrices, belong to this section too.)
    def work_queries(self, xq: np.ndarray) -> np.ndarray:
        """Validated queries mapped into the work domain (RHT + zero padding), float32 (nq, d_work).

        The RHT is orthogonal and padding is zero, so ⟨xq, decode(c)⟩ = ⟨work(xq), _decode(c)⟩:
        scanners rotate each query once instead of un-rotating every candidate.
        """
        self._require_fitted()
        return self.to_work(as_float_matrix(xq, d=self.d, name="queries"))

    def decode_work(self, codes: np.ndarray) -> np.ndarray:
        """Decode into the work domain (no inverse RHT, padding kept): float32 (n, d_work).

        Pair with :meth:`work_queries`: inner products are the same as in the input domain.
        """
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        if codes.shape[0] == 0:
            return np.zeros((0, self._d_work), dtype=np.float32)
        return self._decode(codes)

    def rotate(self, xw: np.ndarray) -> np.ndarray:
        """Work-domain vectors (n, work_dim) → the domain the codes are computed in.

        The identity for every family without a learned rotation; OPQ applies its rotation R (its
        codebooks and lookup tables live in the rotated domain).
        """
        return xw

    def scan_terms(self, codes: np.ndarray) -> ScanTerms:
        """Per-row terms of the family's first-stage estimate (see :class:`ScanTerms`); by default
        none (offset 0, scale 1): the kernel's sum is the estimate itself."""
        return ScanTerms()

    def estimate_ip(self, xq: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Inner products ⟨xq_i, decode(codes)_j⟩ as float32 (nq, n).

        Default: decode in the work domain and multiply.  Families with a cheaper exact or
        unbiased estimator (popcount, lookup tables) override this.
        """
        return self.work_queries(xq) @ self.decode_work(codes).T

    def ip_pairs(self, work_queries: np.ndarray, query_of_pair: np.ndarray, codes: np.ndarray,
                 row_of_pair: np.ndarray) -> np.ndarray:
        """Rescoring of candidate lists: ⟨work_queries[query_of_pair[p]], decode_work(codes[row_of_pair[p]])⟩
        for every pair p, float32 (P,).

        ``work_queries`` come from :meth:`work_queries`, ``codes`` are the distinct candidate rows,
        ``query_of_pair``/``row_of_pair`` int64 (P,).  Default: decode each row once, then a gather-dot
        kernel; families with a fused decode-and-dot kernel override this.
        """
        from ..kernels.topk import rows_dot, rows_dot_serial

        decoded = self.decode_work(codes)
        dot = rows_dot if parallel.rescore_parallel(query_of_pair.size) else rows_dot_serial
        return dot(work_queries, query_of_pair, decoded, row_of_pair)

    # ------------------------------------------------ weight compression
    #: Constructor defaults for weight matrices (:mod:`vqsearch.weights`) where they differ from the
    #: class defaults: a model holds millions of vectors, so a family whose embedding default is too
    #: slow at that scale names a faster setting here (measured in benchmarks/RESULTS.md §4).
    weight_defaults: ClassVar[dict[str, Any]] = {}

    def weight_tile(self) -> tuple[int, int] | None:
        """(rows, columns) of the weight-matrix tile that one code vector covers, for :mod:`vqsearch.weights`.

        ``None`` means any vector length works (the weights layer then picks the width).  Families
        opt in by overriding this; the default raises, so a new family is never given a tile shape
        it was not designed for.
        """
        raise InvalidSpec(f"quantiser {self.name!r} does not declare a weight tile shape, so it cannot encode "
                          "weight matrices")

    # --------------------------------------------------------- to implement
    def _fit(self, xw: np.ndarray | None) -> None:  # pragma: no cover - trivial default
        pass

    def _code_size(self) -> int:
        raise NotImplementedError

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # ------------------------------------------------------- serialisation
    def to_bytes(self) -> bytes:
        """Full fitted state as a versioned, checksummed blob (see :mod:`.serialize`)."""
        from .serialize import dump_quantizer

        self._require_fitted()
        return dump_quantizer(self)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def check_choice(name: str, value: Any, allowed: tuple) -> Any:
    """Raise ``InvalidSpec`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise InvalidSpec(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
