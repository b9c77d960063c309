"""E8 codebooks built from first principles: E8P (QuIP#), the RVQ "1-bit" table and E8 balls.

Lattice: E8 = D8 ∪ (D8 + ½·1), D8 = {x ∈ Z^8 : Σx even}; det 1, minimal norm² 2, 240 roots.
Shell m (norm² 2m) has 240·σ3(m) points: 1, 240, 2160, 6720, 17520, 30240, 60480, …

**E8P** (2 bits/dim, 65 536 points ⊂ E8 + ¼·1).  Abs table S (256 × 8, positive half-integers):

* entries 0–226: every 8-vector over {½, 3/2, 5/2} with norm² ≤ 10 (the abs values of the D̂8
  points in that ball, D̂8 = D8 + ½·1), in **lexicographic order** (what QuIP#'s sorted unique
  produces).  In this order (½,½,½,3/2,½,½,½,½) is S[32], not S[21] as in the QuIP# blog's
  worked example (whose index does not match a lexicographic table); the tests check that
  example's sign and shift decoding with the pattern's index in our table;
* entries 227–255: 29 patterns of norm² 12 (five 3/2 and three ½), in QuIP#'s order — the
  corrected list of its RVQ codebook files, whose last row (½,½,3/2,3/2,½,3/2,3/2,3/2)
  replaces a duplicated row of the original file (with the duplicate only 65 280 points are
  distinct).

Codebook = {σ ⊙ a + t·¼·1 : a ∈ S, σ ∈ {±1}^8 with #(σ = −1) ≡ Σa (mod 2), t = ±1}:
256 × 128 × 2 = 65 536 distinct points, 16 bits per 8 values.  Bit layout in
:mod:`vqsearch.kernels.e8`.

**E8 "1-bit" table** (stage 2 of the 3-bit RVQ): the 241 E8 points with norm² ≤ 2 plus 15 of
the 16 vectors ±2·e_i (all but −2·e_7), 256 entries, in this order: origin; the 112 integer
roots (±1, ±1, 0⁶) sorted lexicographically; the 128 half-integer roots (±½)⁸ with an even
number of minus signs, sorted lexicographically; +2·e_0 … +2·e_7; −2·e_0 … −2·e_6.

**E8 balls** (:func:`e8_ball_tables`): for a code width of ``nbits`` bits per 8-D block, the
union of all full shells whose cumulative count fits in 2^nbits, plus whole *classes* of the next
shell added greedily (largest class first, ties by key) while they still fit, plus the first
ranks of the largest class left over, so that the codebook has exactly 2^nbits points (every
code is valid).  A class is the orbit of a sorted abs pattern under permutations and
lattice-preserving sign changes; points are ranked class by class (see :mod:`vqsearch.kernels.e8_ball`);
a truncated class keeps its lowest in-class ranks.  Tables are built lazily and cached
(``functools.cache``); sizes for every supported width are in :data:`BALL_TABLE_NOTE`.  Widths
up to 20 bits (2.5 bits/dim) also get a point table for fast decoding (:func:`e8_ball_lut`,
2^nbits × 8 int8: 512 KiB at 16 bits, 8 MiB at 20).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

# The 29 norm² 12 padding patterns (doubled: 3 ↔ 3/2, 1 ↔ ½), in QuIP#'s order (rvq3bit/rvq4bit
# list; data, not code).  Every row has five 3s and three 1s and the rows are distinct.
_E8P_PADDING_X2 = (
    (3, 1, 1, 1, 3, 3, 3, 3), (1, 3, 1, 1, 3, 3, 3, 3), (1, 1, 3, 1, 3, 3, 3, 3),
    (1, 1, 1, 3, 3, 3, 3, 3), (3, 3, 3, 1, 3, 3, 1, 1), (3, 3, 3, 1, 3, 1, 3, 1),
    (3, 3, 3, 1, 1, 3, 3, 1), (3, 3, 3, 1, 3, 1, 1, 3), (3, 3, 3, 1, 1, 3, 1, 3),
    (3, 3, 3, 1, 1, 1, 3, 3), (3, 3, 1, 3, 3, 3, 1, 1), (3, 3, 1, 3, 3, 1, 3, 1),
    (3, 3, 1, 3, 1, 3, 3, 1), (3, 3, 1, 3, 3, 1, 1, 3), (3, 3, 1, 3, 1, 3, 1, 3),
    (3, 3, 1, 3, 1, 1, 3, 3), (3, 1, 3, 3, 3, 3, 1, 1), (3, 1, 3, 3, 3, 1, 3, 1),
    (3, 1, 3, 3, 1, 3, 3, 1), (3, 1, 3, 3, 3, 1, 1, 3), (3, 1, 3, 3, 1, 3, 1, 3),
    (1, 3, 3, 3, 1, 1, 3, 3), (1, 3, 3, 3, 3, 3, 1, 1), (1, 3, 3, 3, 3, 1, 3, 1),
    (1, 3, 3, 3, 1, 3, 3, 1), (1, 3, 3, 3, 3, 1, 1, 3), (1, 3, 3, 3, 1, 3, 1, 3),
    (1, 1, 3, 3, 1, 3, 3, 3), (3, 3, 1, 1, 3, 3, 3, 1),
)


@functools.cache
def e8p_abs_table() -> np.ndarray:
    """The 256 × 8 E8P abs table S (float64, positive half-integers; order in the module docstring)."""
    base = [p for p in itertools.product((1, 3, 5), repeat=8) if sum(v * v for v in p) <= 40]
    base.sort()  # lexicographic on doubled values = lexicographic on values
    rows = np.array(base + list(_E8P_PADDING_X2), dtype=np.float64) / 2.0
    if rows.shape != (256, 8):  # construction invariant (227 + 29)
        raise RuntimeError(f"E8P abs table has shape {rows.shape}, expected (256, 8)")
    rows.setflags(write=False)
    return rows


@functools.cache
def e8p_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kernel inputs: (abs table float64, abs table float32, squared norms float64, Σa mod 2 int64)."""
    s = e8p_abs_table()
    odd = (np.rint(s.sum(axis=1)).astype(np.int64) & 1)
    out = (np.ascontiguousarray(s), s.astype(np.float32), (s * s).sum(axis=1), odd)
    for a in out:
        a.setflags(write=False)
    return out


@functools.cache
def e8_one_bit_table() -> np.ndarray:
    """The 256-entry stage-2 table of the 3-bit RVQ (float64 (256, 8); order in the module docstring)."""
    roots_int = []
    for i, j in itertools.combinations(range(8), 2):
        for si, sj in itertools.product((1, -1), repeat=2):
            v = [0] * 8
            v[i], v[j] = si, sj
            roots_int.append(tuple(v))
    roots_half = [tuple(0.5 * s for s in signs) for signs in itertools.product((1, -1), repeat=8)
                  if sum(1 for s in signs if s < 0) % 2 == 0]
    twos = [tuple(2.0 * (k == i) for k in range(8)) for i in range(8)]
    twos += [tuple(-2.0 * (k == i) for k in range(8)) for i in range(7)]
    rows = [(0.0,) * 8] + sorted(roots_int) + sorted(roots_half) + twos
    out = np.array(rows, dtype=np.float64)
    if out.shape != (256, 8):
        raise RuntimeError(f"E8 1-bit table has shape {out.shape}, expected (256, 8)")
    out.setflags(write=False)
    return out


def e8_shell_count(m: int) -> int:
    """Number of E8 points of norm² 2m (theta series: 1 for m = 0, else 240·σ3(m))."""
    if m == 0:
        return 1
    return 240 * sum(k**3 for k in range(1, m + 1) if m % k == 0)


# ------------------------------------------------------------------------------------ balls

#: Supported code widths (bits per 8-D block) of the ball codebooks: rates 1 … 4 bits/dim.
BALL_MIN_BITS, BALL_MAX_BITS = 8, 32

BALL_TABLE_NOTE = (
    "Ball index tables hold one row per class (leader): 4 classes at 8 bits/block, 22 at 16, "
    "71 at 20, 311 at 24 and 10,785 at 32 bits/block (4 bits/dim); a row is 8 int32 + 4 int64 "
    "(64 bytes), so ≤ 0.7 MB.  Widths ≤ 20 bits add a point table for decoding (≤ 8 MiB); above "
    "that the codebook (up to 2^32 points) is never materialised."
)


@dataclass(frozen=True)
class BallTables:
    """Index tables of an E8 ball codebook (all arrays read-only, C-contiguous).

    ``leaders`` int32 (C, 8): descending doubled abs values of each class, in index order;
    ``offsets`` int64 (C + 1,): first index of each class (``offsets[-1]`` = codebook size); the
    last class may be truncated (it then holds only ``offsets[C] − offsets[C−1]`` of its ranks);
    ``nsign_log2`` int64 (C,): log2 of the number of sign patterns per arrangement;
    ``keys`` int64 (C,): sorted leader keys (``Σ ℓ_j 64^j``) and ``cid_by_key`` int64 (C,) their classes;
    ``norm2_max``: largest squared norm in the codebook (in E8 units);
    ``full_norm2``: every point with norm² ≤ this is in the codebook.
    """

    nbits: int
    leaders: np.ndarray
    offsets: np.ndarray
    nsign_log2: np.ndarray
    keys: np.ndarray
    cid_by_key: np.ndarray
    norm2_max: float
    full_norm2: float

    @property
    def size(self) -> int:
        return int(self.offsets[-1])


FACTORIALS = np.array([math.factorial(k) for k in range(9)], dtype=np.int64)
FACTORIALS.setflags(write=False)


def _leaders(max_norm_u: int) -> list[tuple[int, ...]]:
    """Descending doubled abs patterns of E8 classes with Σu² ≤ max_norm_u (all even or all odd)."""
    out: list[tuple[int, ...]] = []

    def rec(prefix: list[int], start: int, left: int) -> None:
        if len(prefix) == 8:
            out.append(tuple(prefix))
            return
        v = start
        while v >= 0:
            if v * v <= left:
                prefix.append(v)
                rec(prefix, v, left - v * v)
                prefix.pop()
            v -= 2

    top = int(math.isqrt(max_norm_u))
    for parity in (0, 1):
        t = top if top % 2 == parity else top - 1
        rec([], t, max_norm_u)
    # Values step by 2 from the start, so a pattern is all odd (≥ 1) or all even; even ones
    # need Σu ≡ 0 (mod 4) to lie in D8.
    return [p for p in out if p[0] % 2 == 1 or sum(p) % 4 == 0]


def _class_size(leader: tuple[int, ...]) -> tuple[int, int]:
    """(number of distinct arrangements, log2 of sign choices) of a class."""
    perms = math.factorial(8)
    for v in set(leader):
        perms //= math.factorial(leader.count(v))
    if leader[0] % 2:
        return perms, 7
    return perms, sum(1 for v in leader if v)


def _key(leader: tuple[int, ...]) -> int:
    return sum(v << (6 * j) for j, v in enumerate(leader))


@functools.cache
def e8_ball_tables(nbits: int) -> BallTables:
    """Tables of the largest E8 ball codebook (plus greedy whole classes of the next shell) ≤ 2^nbits points."""
    if not BALL_MIN_BITS <= nbits <= BALL_MAX_BITS:
        raise ValueError(f"ball code width must be in [{BALL_MIN_BITS}, {BALL_MAX_BITS}] bits, got {nbits}")
    cap = 1 << nbits
    # Find the last full shell m* with cumulative count ≤ cap.
    total, m = 0, 0
    while total + e8_shell_count(m) <= cap:
        total += e8_shell_count(m)
        m += 1
    m_full = m - 1
    # Classes up to shell m_full + 1 (norm² 2m in E8 units = 8m in doubled units).
    leaders = _leaders(8 * (m_full + 1))
    by_norm: dict[int, list[tuple[int, ...]]] = {}
    for ld in leaders:
        by_norm.setdefault(sum(v * v for v in ld), []).append(ld)
    chosen: list[tuple[int, ...]] = []
    for nu in sorted(by_norm):
        if nu <= 8 * m_full:
            chosen += sorted(by_norm[nu], key=_key)
    count = sum(math.prod((p, 1 << s)) for p, s in map(_class_size, chosen))
    if count != total:  # the leader enumeration must reproduce the theta series
        raise RuntimeError(f"E8 ball enumeration gives {count} points, theta series {total}")
    outer = sorted(by_norm.get(8 * (m_full + 1), []), key=lambda ld: (-math.prod(
        (_class_size(ld)[0], 1 << _class_size(ld)[1])), _key(ld)))
    sizes = [p << s for p, s in map(_class_size, chosen)]
    partial = False
    rest = []
    for ld in outer:
        p, s = _class_size(ld)
        if count + (p << s) <= cap:
            chosen.append(ld)
            sizes.append(p << s)
            count += p << s
            partial = True
        else:
            rest.append(ld)
    if count < cap and rest:
        # Fill the code space exactly: the first (cap − count) ranks of the largest remaining class.
        chosen.append(rest[0])
        sizes.append(cap - count)
        count = cap
        partial = True
    offsets = np.concatenate([[0], np.cumsum(np.array(sizes, dtype=np.int64))]).astype(np.int64)
    keys = np.array([_key(ld) for ld in chosen], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    tabs = BallTables(
        nbits=nbits,
        leaders=np.array(chosen, dtype=np.int32).reshape(-1, 8),
        offsets=offsets,
        nsign_log2=np.array([_class_size(ld)[1] for ld in chosen], dtype=np.int64),
        keys=np.ascontiguousarray(keys[order]),
        cid_by_key=np.ascontiguousarray(order.astype(np.int64)),
        norm2_max=float(2 * (m_full + 1) if partial else 2 * m_full),
        full_norm2=float(2 * m_full),
    )
    for arr in (tabs.leaders, tabs.offsets, tabs.nsign_log2, tabs.keys, tabs.cid_by_key):
        arr.setflags(write=False)
    return tabs


#: Widths up to this many bits per block also get a decode lookup table (2^20 × 8 int8 = 8 MiB at most).
BALL_LUT_MAX_BITS = 20


@functools.cache
def e8_ball_lut(nbits: int) -> np.ndarray:
    """Doubled coordinates of every point of the ``nbits`` ball codebook, int8 (2^nbits, 8), index order.

    Only for ``nbits ≤ BALL_LUT_MAX_BITS``: decoding by table lookup is several times faster than
    unranking, and the table is small there.
    """
    from ..kernels.e8_ball import e8_ball_unrank

    if nbits > BALL_LUT_MAX_BITS:
        raise ValueError(f"no lookup table above {BALL_LUT_MAX_BITS} bits per block, got {nbits}")
    t = e8_ball_tables(nbits)
    u = np.empty((t.size, 8), dtype=np.int32)
    e8_ball_unrank(np.arange(t.size, dtype=np.int64), t.offsets, t.leaders, t.nsign_log2, FACTORIALS, u)
    lut = u.astype(np.int8)
    lut.setflags(write=False)
    return lut
