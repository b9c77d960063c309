"""Randomized Hadamard transform (RHT) for incoherence processing.

``RHT(x) = H (s ⊙ pad(x))`` with ``s`` a seeded vector of random signs and ``H``
an orthonormal Hadamard matrix of order ``n ≥ d``.  It spreads the energy of any
vector evenly over all coordinates (QuIP#, QTIP), so that downstream quantisers
see nearly i.i.d. Gaussian coordinates.

Dimensions: ``H`` has order ``n = p · 2^k`` with ``H = H_p ⊗ H_{2^k}`` where
``H_{2^k}`` is Sylvester's matrix (applied with the numba butterfly in
:mod:`vqsearch.kernels.hadamard`) and ``H_p`` is a Paley matrix of order
``p = q + 1`` for a prime ``q ≡ 3 (mod 4)`` (12, 20, 24, 44, ...), applied as a
small dense matmul.  ``n`` is the smallest such order ≥ ``d``; when ``n > d`` the
input is **zero-padded** to ``n`` (common embedding sizes 384 = 12·32, 768,
1024, 1536 need no padding).  The transform is exactly orthogonal, so norms and
inner products are preserved up to float32 rounding, and it is inverted by
``inverse`` (which also drops the padding).
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import InvalidInput
from .kernels.hadamard import fwht_rows, fwht_rows_serial

_MAX_PALEY_ORDER = 256


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    f = 2
    while f * f <= q:
        if q % f == 0:
            return False
        f += 1
    return True


@functools.cache
def _paley_orders() -> tuple[int, ...]:
    """Orders q + 1 of Paley-I Hadamard matrices (q prime, q ≡ 3 mod 4) that are not powers of two."""
    out = []
    for q in range(3, _MAX_PALEY_ORDER):
        p = q + 1
        if q % 4 == 3 and _is_prime(q) and p & (p - 1):
            out.append(p)
    return tuple(out)


@functools.cache
def paley_hadamard(p: int) -> np.ndarray:
    """Orthonormal Hadamard matrix of order ``p = q + 1`` (Paley construction I), float64.

    With χ the quadratic character mod q and Q the Jacobsthal matrix Q[i, j] = χ(j − i),
    ``H = I + [[0, 1ᵀ], [−1, Q]]`` satisfies ``H Hᵀ = p·I``.
    """
    q = p - 1
    if q % 4 != 3 or not _is_prime(q):
        raise InvalidInput(f"no Paley-I Hadamard matrix of order {p}")
    squares = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if i in squares else -1 for i in range(1, q)], dtype=np.int64)
    idx = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    s = np.zeros((p, p), dtype=np.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = chi[idx]
    h = np.eye(p, dtype=np.int64) + s
    if not np.array_equal(h @ h.T, p * np.eye(p, dtype=np.int64)):  # construction invariant
        raise RuntimeError(f"Paley construction failed for order {p}")
    return h.astype(np.float64) / np.sqrt(p)


def hadamard_size(d: int) -> tuple[int, int]:
    """Smallest supported Hadamard order ``n = p · 2^k ≥ d``; returns ``(n, p)`` (p = 1 for powers of two)."""
    if d < 1:
        raise InvalidInput(f"dimension must be >= 1, got {d}")
    best = (1 << (d - 1).bit_length(), 1)
    for p in _paley_orders():
        m = 1
        while p * m < d:
            m *= 2
        if p * m < best[0]:
            best = (p * m, p)
    return best


class RandomizedHadamard:
    """Seeded randomized Hadamard transform on the last axis of (n, d) float32 arrays."""

    def __init__(self, d: int, seed: int = 0, signs: np.ndarray | None = None) -> None:
        self.d = int(d)
        self.n, self.p = hadamard_size(self.d)
        self.m = self.n // self.p
        if signs is None:
            rng = np.random.default_rng(seed)
            signs = rng.integers(0, 2, size=self.n, dtype=np.int8) * 2 - 1
        signs = np.asarray(signs)
        if signs.shape != (self.n,) or not np.isin(signs, (-1, 1)).all():
            raise InvalidInput(f"RHT signs must be ±1 of length {self.n}")
        self.signs = signs.astype(np.float32)
        self._hp = paley_hadamard(self.p).astype(np.float32) if self.p > 1 else None
        self._norm = np.float32(1.0 / np.sqrt(self.m))

    def _butterfly(self, y: np.ndarray, transpose: bool) -> np.ndarray:
        nrows = y.shape[0]
        blocks = y.reshape(nrows * self.p, self.m)
        (fwht_rows if nrows * self.p >= 64 else fwht_rows_serial)(blocks)
        blocks *= self._norm
        if self._hp is not None:
            hp = self._hp.T if transpose else self._hp
            y = np.matmul(hp, y.reshape(nrows, self.p, self.m)).reshape(nrows, self.n)
        return y

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(k, d) → (k, n): ``H (s ⊙ pad(x))``."""
        y = np.zeros((x.shape[0], self.n), dtype=np.float32)
        y[:, : self.d] = x
        y *= self.signs
        return self._butterfly(y, transpose=False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """(k, n) → (k, d): ``s ⊙ (Hᵀ y)`` with the padding dropped."""
        y = np.array(y, dtype=np.float32, order="C", copy=True)
        # H = H_p ⊗ H_m with H_m symmetric, so Hᵀ = H_pᵀ ⊗ H_m.
        y = self._butterfly(y, transpose=True)
        y *= self.signs
        return np.ascontiguousarray(y[:, : self.d])

    def packed_signs(self) -> np.ndarray:
        """Signs as packed bits (1 = negative), for serialisation."""
        return np.packbits(self.signs < 0)

    @classmethod
    def from_packed(cls, d: int, packed: np.ndarray) -> RandomizedHadamard:
        n, _ = hadamard_size(d)
        bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))[:n]
        return cls(d, signs=1 - 2 * bits.astype(np.int8))
