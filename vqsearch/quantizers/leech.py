"""Leech lattice Λ24 quantiser ("leech"): indexed shape–gain codes, fixed rate per 24-D block.

Construction (quantizers.md §3).  J = √8·Λ24 ⊂ Z^24 is the union of the 8192 cosets
``m·1 + 2c + 4z`` (m ∈ {0, 1}, c in the Golay code G24 of :mod:`.golay`, Σz ≡ m mod 2).  The
*ball* Λ24(M) is the set of lattice points of squared norm ≤ 2M (Λ24 units; ≤ 16M in J):

==== ============================ =========================
M    |Λ24(M)| (origin included)   log2
==== ============================ =========================
2    196 561                      17.58
6    39 462 040 801               35.20
12   111 043 117 458 001          46.66
13   280 974 212 784 721          48.00
45   620 569 841 863 608 720 721  69.07
==== ============================ =========================

Code of one 24-D block at R = 24·bits bits (LLVQ-style shape–gain, quantizers.md §3.3c–3.6):

* shape codebook: the nonzero points of Λ24(M) plus, to use the spare codes, the shell-(M+1)
  points of the first K cosets in the fixed order :func:`extension_rank` (K as large as fits;
  every coset κ thus has a norm limit 2·M_κ, M_κ ∈ {M, M + 1});
* shape: the codebook point v maximising the cosine ⟨x, v⟩/‖x‖‖v‖ — an **exact**
  branch-and-bound search (:func:`vqsearch.kernels.leech.best_direction`), reduced to the
  primitive point of its ray (collinear v, 2v, 3v ... tie; re-encoding a decoded vector then
  reproduces its code — codes holding a non-primitive shape, < 10⁻⁶ of the shapes, are valid
  but never emitted);
* gain: one of L = ⌊2^R / (|Λ24(M)| − 1)⌋ levels (1-D Lloyd–Max fitted on the training
  blocks' optimal gains ‖x‖·cos), nearest to ‖x‖·cos (optimal for the chosen shape);
* index: ``(rank(v) − 1)·L + g`` < 2^R, where ``rank`` is the exact ranking of the codebook
  (:mod:`vqsearch.kernels.leech_codes`; origin = rank 0, not a shape).  It is a bijection computed
  from small DP count tables, so the codebook is never materialised.

Defaults per rate (MSE per scalar on i.i.d. N(0,1), 16 384 blocks, benchmarks/rate_distortion.py;
D(R) = 2^-2R):

==== ========= ======= ====== ============ ====== ========= =========
bits R / block shells M K      log2 shapes   L      MSE       MSE/D(R)
==== ========= ======= ====== ============ ====== ========= =========
1.5  36        6       1279   36.00        1      0.1505    1.204
2.0  48        12      1433   47.00        2      0.07527   1.204
3.0  72        45      2390   69.19        7      0.01883   1.205
==== ========= ======= ====== ============ ====== ========= =========

(LLVQ reports 0.084 for spherical Λ24(13) and 0.078 for shape–gain Λ24(12) + 1 gain bit at 2
bits; QuIP#'s E8P has 0.0915.  Without the shell-(M+1) extension the MSEs are 0.1563,
0.07658 and 0.01895.)

Other rates 0.75 ≤ bits ≤ 3 with 24·bits an integer are accepted; their default M is the
largest with L ≥ 6 (an untuned rule); ``shells`` overrides M.

Cost: the exact search dominates encoding and grows with the rate; decoding (unranking) is two to
three orders of magnitude faster.  Both are parallel over blocks / rows.  Throughputs are in
benchmarks/RESULTS.md (section 1, encode/decode Mval/s; per-block timings in section 6), measured
with benchmarks/rate_distortion.py and benchmarks/bench_leech.py.

Work dimension: the input (after the optional RHT) is zero-padded to a multiple of 24.
Scale: ``"global"`` divides by the training RMS σ (stored in the state); ``"vector"`` divides
each vector by its own RMS, stored as float16 in the first two code bytes (a vector whose RMS
rounds to 0 in float16 decodes to zeros).

Code layout (per vector, uint8): ``[float16 scale, little-endian, if scale="vector"]`` then
the blocks' R-bit codes as one LSB-first bitstream (block j at bit 8·off + j·R), zero bits
up to the byte boundary.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidCodes, InvalidInput, InvalidSpec
from ..kernels import leech as kl
from ..kernels import leech_codes as kc
from . import golay
from .base import Quantizer, check_choice
from .registry import register

log = logging.getLogger(__name__)

#: Tuned shells per block rate R (bits per 24-D block).
DEFAULT_SHELLS = {36: 6, 48: 12, 72: 45}
MIN_BLOCK_BITS = 18
MAX_BLOCK_BITS = 72
MAX_SHELLS = 64
MAX_LEVELS = 4096
#: Training blocks used to fit the gain levels (seeded subsample).
FIT_BLOCKS = 4096
#: Blocks encoded per chunk (bounds the float64 / int64 temporaries to a few tens of MB).
ENCODE_CHUNK_BLOCKS = 1 << 16
#: Odd multiplier of the coset extension order (see :func:`extension_rank`).
EXTEND_MULT = 2731
#: Probe-radius grouping of the branch and bound: shells k..k' share a probe while
#: sqrt(k'/k) ≤ 1 + γ/sqrt(M), γ = PROBE_GAMMA[0] for M ≤ 16 else PROBE_GAMMA[1].  Fewer probes
#: (each costs more than a coset's exact DP at small M) loosen the bounds so more cosets need the
#: exact DP; these values minimised the measured encode time at M = 6, 12 and 45 (timings in
#: benchmarks/RESULTS.md, section 6).
PROBE_GAMMA = (1.4, 0.85)
BLOCK = 24


@functools.cache
def golay_words() -> np.ndarray:
    """The 4096 codewords as ascending int64 integers (bit i = coordinate i), the kernels' ``cw``."""
    return np.ascontiguousarray(golay.codeword_ints())


@dataclass(frozen=True)
class LeechBall:
    """Ranking and search tables of Λ24(M) plus shell M + 1 in ``extra`` cosets (see :func:`leech_ball`)."""

    shells: int
    extra: int
    val: np.ndarray
    cost: np.ndarray
    par: np.ndarray
    nval: np.ndarray
    cbud: np.ndarray  # (8192,) per-coset DP budget
    F: np.ndarray
    offs: np.ndarray
    size: int  # number of points, origin included
    radii: np.ndarray
    nlo: np.ndarray
    nhi: np.ndarray

    @property
    def tables(self) -> tuple[np.ndarray, ...]:
        return (self.val, self.cost, self.par, self.nval, self.cbud)

    def shell_limit(self, kappa: int) -> int:
        """M_κ: coset κ holds its points of squared norm ≤ 2·M_κ (Λ24 units)."""
        return self.shells + int(extension_rank(kappa) < self.extra)

    # --- vectorised helpers (J coordinates, int64) ---------------------------------------
    def rank(self, points: np.ndarray) -> list[int]:
        """Ball ranks of J points (k, 24) as Python ints; -1 for points outside the ball/lattice."""
        v = np.ascontiguousarray(points, dtype=np.int64).reshape(-1, BLOCK)
        out = np.empty((v.shape[0], 2), dtype=np.int64)
        kc.rank_points(v, golay_words(), *self.tables, self.F, self.offs, out)
        return [-1 if h < 0 else (int(h) << kc.LIMB) + int(lo) for h, lo in out]

    def unrank(self, ranks: list[int] | np.ndarray) -> np.ndarray:
        """J points (k, 24) int64 of the given ranks (each in [0, size))."""
        rs = [int(r) for r in ranks]
        if any(r < 0 or r >= self.size for r in rs):
            raise InvalidInput(f"ball ranks must lie in [0, {self.size})")
        limbs = np.array([[r >> kc.LIMB, r & kc.MASK] for r in rs], dtype=np.int64).reshape(-1, 2)
        out = np.zeros((len(rs), BLOCK), dtype=np.int64)
        kc.unrank_points(limbs, golay_words(), *self.tables, self.F, self.offs, out)
        return out

    def best_directions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact max-cosine nonzero ball point (J coords) for each row of ``x`` (k, 24); (points, cosines)."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, BLOCK)
        pts = np.zeros(x.shape, dtype=np.int64)
        cos = np.zeros(x.shape[0])
        solved = np.zeros(x.shape[0], dtype=np.int64)
        kl.best_directions(x, golay_words(), *self.tables, self.radii, self.nlo, self.nhi,
                           pts, cos, solved)
        return pts, cos


def _value_lists(shells: int, budget: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """Per (m, type t): the coordinate values x ≡ m + 2t (mod 4) within budget as (q, x, z mod 2), sorted."""
    lim = math.isqrt(16 * shells) + 1
    lists = {}
    for m in range(2):
        for t in range(2):
            vals = []
            for x in range(-lim, lim + 1):
                if (x - m - 2 * t) % 4:
                    continue
                q = x * x // 4 if m == 0 else (x * x - 1) // 8
                if q <= budget[m]:
                    vals.append((q, x, ((x - m - 2 * t) // 4) & 1))
            lists[m, t] = sorted(vals)
    return lists


def _probe_groups(shells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group consecutive shells 2..shells under one probe radius (J units) for the branch-and-bound bounds."""
    ratio = 1.0 + PROBE_GAMMA[0 if shells <= 16 else 1] / math.sqrt(shells)
    groups, cur = [], [2]
    for k in range(3, shells + 1):
        if math.sqrt(k / cur[0]) <= ratio:
            cur.append(k)
        else:
            groups.append(cur)
            cur = [k]
    groups.append(cur)
    radii = np.array([4.0 * math.sqrt(math.sqrt(g[0] * g[-1])) for g in groups])
    nlo = np.array([16.0 * g[0] for g in groups])
    nhi = np.array([16.0 * g[-1] for g in groups])
    return radii, nlo, nhi


def _budgets(shells: int) -> tuple[int, int]:
    """DP budgets of the ball ‖x‖² ≤ 16·shells (J): Σ x²/4 ≤ 4M for m = 0, Σ (x² − 1)/8 ≤ 2M − 3 for m = 1."""
    return 4 * shells, 2 * shells - 3


def extension_rank(kappa: int | np.ndarray) -> int | np.ndarray:
    """Order in which cosets receive shell M + 1: κ·EXTEND_MULT mod 8192 (a bijection; spreads the
    extension over both m and all codewords)."""
    return (kappa * EXTEND_MULT) % 8192


@functools.cache
def _count_tables(top: int) -> tuple:
    """Value lists and DP counts for budgets up to those of Λ24(top).

    ``F[m, ℓ, n1, b, π]`` counts ℓ coordinates (n1 of Golay type 1) with total unit cost ≤ b and
    Σz ≡ π, built by adding one coordinate at a time (type 0 while any remain) with exact
    Python ints, then split into two 48-bit limbs.  Also returns ``full[m, w]``: the exact counts
    for all 24 coordinates of a codeword of weight w (coset sizes for any budget).
    """
    budget = _budgets(top)
    lists = _value_lists(top, np.array(budget))
    nvmax = max(len(v) for v in lists.values())
    val = np.zeros((2, 2, nvmax), dtype=np.int64)
    cost = np.zeros_like(val)
    par = np.zeros_like(val)
    nval = np.zeros((2, 2), dtype=np.int64)
    for (m, t), vals in lists.items():
        nval[m, t] = len(vals)
        for j, (q, x, p) in enumerate(vals):
            val[m, t, j], cost[m, t, j], par[m, t, j] = x, q, p
    F = np.zeros((2, 25, 25, max(budget) + 1, 2, 2), dtype=np.int64)
    full: dict[tuple[int, int], np.ndarray] = {}
    for m in range(2):
        B = budget[m]
        g = {(0, 0): np.zeros((B + 1, 2), dtype=object)}
        g[0, 0][:, 0] = 1
        for ell in range(1, 25):
            for n1 in range(ell + 1):
                t = 0 if ell - n1 >= 1 else 1
                prev = g[ell - 1, n1 - t]
                new = np.zeros((B + 1, 2), dtype=object)
                for q, _, p in lists[m, t]:
                    new[q:, 0] += prev[: B + 1 - q, p]
                    new[q:, 1] += prev[: B + 1 - q, 1 - p]
                g[ell, n1] = new
        for (ell, n1), arr in g.items():  # object arrays of exact Python ints → two limbs
            F[m, ell, n1, : B + 1, :, 0] = (arr >> kc.LIMB).astype(np.int64)
            F[m, ell, n1, : B + 1, :, 1] = (arr & kc.MASK).astype(np.int64)
        for w in (0, 8, 12, 16, 24):
            full[m, w] = g[24, w]
    for arr in (val, cost, par, nval, F):
        arr.setflags(write=False)
    return val, cost, par, nval, F, full


def coset_sizes(shells: int) -> list[int]:
    """Number of points of each coset κ (coset order) in the ball Λ24(shells), exact ints."""
    _, _, _, _, _, full = _count_tables(shells)
    weights = golay.codewords().sum(axis=1)
    budget = _budgets(shells)
    return [int(full[k >> 12, int(weights[k & 4095])][budget[k >> 12], k >> 12]) for k in range(8192)]


@functools.cache
def leech_ball(shells: int, extra: int = 0) -> LeechBall:
    """Tables of Λ24(M) (M = ``shells``) plus shell M + 1 in the ``extra`` cosets of smallest
    :func:`extension_rank` (``extra`` = 8192 gives Λ24(M + 1)); built once per (M, extra)."""
    if not 2 <= shells <= MAX_SHELLS:
        raise InvalidSpec(f"leech shells must be in [2, {MAX_SHELLS}], got {shells}")
    if not 0 <= extra <= 8192:
        raise InvalidSpec(f"leech extension must cover 0..8192 cosets, got {extra}")
    top = shells + (1 if extra else 0)
    val, cost, par, nval, F, _ = _count_tables(top)
    kappas = np.arange(8192)
    extended = extension_rank(kappas) < extra
    base, ext = _budgets(shells), _budgets(top)
    cbud = np.where(extended, np.where(kappas < 4096, ext[0], ext[1]),
                    np.where(kappas < 4096, base[0], base[1])).astype(np.int64)
    small, big = coset_sizes(shells), coset_sizes(top)
    offs = np.zeros((8193, 2), dtype=np.int64)
    acc = 0
    for kappa in range(8192):
        offs[kappa] = (acc >> kc.LIMB, acc & kc.MASK)
        acc += big[kappa] if extended[kappa] else small[kappa]
    offs[8192] = (acc >> kc.LIMB, acc & kc.MASK)
    for arr in (cbud, offs):
        arr.setflags(write=False)
    return LeechBall(shells, extra, val, cost, par, nval, cbud, F, offs, acc, *_probe_groups(top))


def fill_extension(shells: int, max_shapes: int) -> int:
    """Largest number of extension cosets keeping |ball| − 1 ≤ ``max_shapes`` (0 if Λ24(M) alone is too big)."""
    small, big = coset_sizes(shells), coset_sizes(shells + 1)
    total = sum(small) - 1
    order = np.argsort(extension_rank(np.arange(8192)))
    extra = 0
    for kappa in order:
        total += big[kappa] - small[kappa]
        if total > max_shapes:
            break
        extra += 1
    return extra


def default_shells(block_bits: int) -> int:
    """Tuned M for 36/48/72 bits per block; otherwise the largest M with ≥ 6 gain levels."""
    if block_bits in DEFAULT_SHELLS:
        return DEFAULT_SHELLS[block_bits]
    best = 2
    for m in range(2, MAX_SHELLS + 1):
        size = leech_ball(m).size - 1
        if (1 << block_bits) // size >= 6:
            best = m
        else:
            break
    return best


def nearest_point_j(y: np.ndarray) -> np.ndarray:
    """Nearest points of J = √8·Λ24 (int64 (k, 24)) to the rows of ``y`` (k, 24), J coordinates."""
    y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1, BLOCK)
    out = np.zeros(y.shape, dtype=np.int64)
    kl.nearest_points(y, golay_words(), out)
    return out


def nearest_point(y: np.ndarray) -> np.ndarray:
    """Nearest points of Λ24 (unimodular scale: min norm 4) to the rows of ``y`` (k, 24), float64."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, BLOCK)
    return nearest_point_j(y * math.sqrt(8.0)) / math.sqrt(8.0)


def _lloyd_1d(values: np.ndarray, levels: int, iters: int = 100) -> np.ndarray:
    """1-D Lloyd–Max levels (sorted float64) for ``values``; quantile start, empty cells keep their level."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    lv = np.quantile(values, (np.arange(levels) + 0.5) / levels)
    for _ in range(iters):
        idx = np.searchsorted((lv[1:] + lv[:-1]) / 2, values)
        sums = np.bincount(idx, weights=values, minlength=levels)
        cnts = np.bincount(idx, minlength=levels)
        new = np.where(cnts > 0, sums / np.maximum(cnts, 1), lv)
        new.sort()
        if np.allclose(new, lv, rtol=0, atol=1e-12):
            break
        lv = new
    return lv


@register(aliases=("leech24", "llvq"))
class Leech(Quantizer):
    """Leech lattice shape–gain quantiser at 1.5, 2 or 3 bits/dim (any 24·bits ∈ [18, 72]).

    Parameters
    ----------
    bits : float, default 2.0
        Bits per dimension of the lattice code (R = 24·bits per block, excluding the optional
        per-vector scale).  Higher → lower error; encode cost grows with the ball (3 bits is
        ~3× slower to encode than 2 bits).
    shells : int, default 0
        Ball Λ24(M) of the shape codebook; 0 picks the tuned M for the rate.  Larger M gives
        finer shapes but fewer gain levels L = ⌊2^R/(|Λ24(M)| − 1)⌋ (must be 1..4096).
    scale : {"global", "vector"}, default "global"
        Global training RMS (no per-vector storage) or a float16 RMS per vector (+16 bits per
        vector; robust to vectors of very different norms).
    rht : bool, default False
        Randomized Hadamard transform first (recommended for real embeddings and weights:
        it makes coordinates near-Gaussian and blocks equally loaded).
    seed : int, default 0
        Seed of the RHT signs and of the training subsample.
    """

    name = "leech"
    codec_id = 13
    description = "Leech lattice Λ24 shape–gain codes, exact search and indexing, 1.5/2/3 bits/dim"
    data_free = False
    min_train = 1

    def __init__(self, *, bits: float = 2.0, shells: int = 0, scale: str = "global",
                 rht: bool = False, seed: int = 0) -> None:
        super().__init__(rht=rht, seed=seed)
        try:
            bits = float(bits)
            shells = int(shells)
        except (TypeError, ValueError):
            raise InvalidSpec(f"leech: bits must be a number and shells an integer, got {bits!r}, {shells!r}") \
                from None
        block_bits = round(BLOCK * bits)
        if not math.isfinite(bits) or abs(BLOCK * bits - block_bits) > 1e-9 \
                or not MIN_BLOCK_BITS <= block_bits <= MAX_BLOCK_BITS:
            raise InvalidSpec(f"leech bits must make 24·bits an integer in [{MIN_BLOCK_BITS}, {MAX_BLOCK_BITS}]"
                              f" (e.g. 1.5, 2, 3), got {bits}")
        if shells != 0 and not 2 <= shells <= MAX_SHELLS:
            raise InvalidSpec(f"leech shells must be 0 (auto) or in [2, {MAX_SHELLS}], got {shells}")
        self.bits = bits
        self.shells = shells
        self.scale = check_choice("scale", scale, ("global", "vector"))
        self.block_bits = block_bits
        m = shells or default_shells(block_bits)
        inner = leech_ball(m).size - 1
        self.levels = (1 << block_bits) // inner
        if self.levels < 1:
            raise InvalidSpec(f"leech shells={m} has {inner} shapes, more than the 2^{block_bits}"
                              " codes of a block (choose fewer shells or more bits)")
        if self.levels > MAX_LEVELS:
            raise InvalidSpec(f"leech shells={m} leaves {self.levels} gain levels at {block_bits} bits per block,"
                              f" more than {MAX_LEVELS} (choose more shells)")
        # Spend the spare codes on part of shell M + 1 (as many whole cosets as fit).
        self.ball = leech_ball(m, fill_extension(m, (1 << block_bits) // self.levels))
        self.sigma = 1.0
        self.gain_values = np.ones(self.levels)

    # ------------------------------------------------------------------ layout
    def weight_tile(self) -> tuple[int, int]:
        """The fewest 24-value blocks of a weight row whose codes fill whole bytes."""
        return (1, BLOCK * (8 // math.gcd(self.block_bits, 8)))

    def _work_dim(self, d_in: int) -> int:
        return BLOCK * -(-d_in // BLOCK)

    @property
    def _d_real(self) -> int:
        return self._transform.n if self._transform is not None else int(self.d)

    @property
    def _byte_off(self) -> int:
        return 2 if self.scale == "vector" else 0

    def _code_size(self) -> int:
        return self._byte_off + -(-(self._d_work // BLOCK) * self.block_bits // 8)

    # ------------------------------------------------------------------ maths
    def _scales(self, xw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row scales as stored (float32 (n,)) and the float64 divisors (0 → 1) for work rows ``xw``."""
        if self.scale == "global":
            scales = np.full(xw.shape[0], self.sigma, dtype=np.float32)
        else:
            rms = np.sqrt(np.einsum("ij,ij->i", xw, xw, dtype=np.float64) / self._d_real)
            if np.any(rms > np.finfo(np.float16).max):
                raise InvalidInput("leech scale='vector': a vector's RMS exceeds the float16 range")
            scales = rms.astype(np.float16).astype(np.float32)
        return scales, np.where(scales > 0, scales, 1.0).astype(np.float64)

    def _search(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact best shapes (J points) and their optimal gains ‖x‖·cos for blocks (k, 24) float64."""
        pts, cos = self.ball.best_directions(blocks)
        return pts, np.linalg.norm(blocks, axis=1) * cos

    def _fit(self, xw: np.ndarray) -> None:
        n, nb = xw.shape[0], self._d_work // BLOCK
        sq = float(np.einsum("ij,ij->", xw, xw, dtype=np.float64))
        self.sigma = math.sqrt(sq / (n * self._d_real))
        if self.sigma == 0.0:
            log.warning("leech: all-zero training data; using scale 1.0")
            self.sigma = 1.0
        pick = np.arange(n * nb)
        if len(pick) > FIT_BLOCKS:  # seeded subsample of (row, block) pairs
            pick = np.sort(np.random.default_rng(self.seed).choice(len(pick), FIT_BLOCKS, replace=False))
        rows, cols = np.unique(pick // nb, return_inverse=True)
        _, div = self._scales(xw[rows])
        blocks = xw.reshape(n, nb, BLOCK)[pick // nb, pick % nb].astype(np.float64) / div[cols, None]
        _, gains = self._search(blocks)
        self.gain_values = _lloyd_1d(gains, self.levels)

    def _gain_index(self, gains: np.ndarray) -> np.ndarray:
        mids = (self.gain_values[1:] + self.gain_values[:-1]) / 2
        return np.searchsorted(mids, gains).astype(np.int64)

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n, nb = xw.shape[0], self._d_work // BLOCK
        codes = np.zeros((n, self._code_size()), dtype=np.uint8)
        step = max(1, ENCODE_CHUNK_BLOCKS // nb)  # bounds the float64/int64 temporaries
        for start in range(0, n, step):
            part = xw[start:start + step]
            scales, div = self._scales(part)
            blocks = (part.astype(np.float64) / div[:, None]).reshape(-1, BLOCK)
            pts, gains = self._search(blocks)
            ranks = np.empty((blocks.shape[0], 2), dtype=np.int64)
            kc.rank_points(pts, golay_words(), *self.ball.tables, self.ball.F, self.ball.offs, ranks)
            if np.any(ranks[:, 0] < 0):  # search invariant: every answer is a ball point
                raise RuntimeError("leech search returned a point outside the ball")
            out = codes[start:start + step]
            if self.scale == "vector":
                out[:, :2] = scales.astype("<f2").view(np.uint8).reshape(-1, 2)
            kc.pack_codes(ranks, self._gain_index(gains), self.levels, self.block_bits, nb, self._byte_off, out)
        return codes

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        n = codes.shape[0]
        if self.scale == "vector":
            scales = np.ascontiguousarray(codes[:, :2]).view("<f2").reshape(n).astype(np.float32)
            if not np.isfinite(scales).all():
                raise InvalidCodes("leech codes hold a non-finite per-vector scale")
        else:
            scales = np.full(n, self.sigma, dtype=np.float32)
        size = self.ball.size - 1
        out = np.empty((n, self._d_work), dtype=np.float32)
        bad = np.zeros(n, dtype=np.uint8)
        kc.decode_rows(codes, self._byte_off, self._d_work // BLOCK, self.block_bits, self.levels,
                       self.gain_values, scales, size >> kc.LIMB, size & kc.MASK, golay_words(),
                       *self.ball.tables, self.ball.F, self.ball.offs, out, bad)
        if bad.any():
            raise InvalidCodes(f"leech codes of {int(bad.sum())} vector(s) (first: row {int(np.argmax(bad))})"
                               f" hold a block index ≥ {size * self.levels}, outside the codebook")
        return out

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, np.ndarray]:
        return {"sigma": np.array([self.sigma], dtype=np.float64), "gain_values": self.gain_values}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        sigma = arrays["sigma"]
        gains = arrays["gain_values"]
        if sigma.shape != (1,) or gains.shape != (self.levels,) or not np.isfinite(gains).all() \
                or not np.isfinite(sigma).all():
            raise ValueError(f"expected sigma (1,) and {self.levels} finite gain values, got "
                             f"{sigma.shape} and {gains.shape}")
        self.sigma = float(sigma[0])
        self.gain_values = gains.astype(np.float64)
