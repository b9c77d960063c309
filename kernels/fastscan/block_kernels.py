"""Block kernels: score one block of codes for a few queries, and the choice between SIMD and scalar.

**Contract.**  A block kernel is called as
``score_*(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
masks)``.  ``lut`` holds the tables of consecutive queries laid out by :func:`expand_luts` (query ``t`` at
byte ``lut_off + t·lut_stride``); ``codes`` is a packed array (:mod:`.layout`) and ``code_off`` the byte
offset of a block (``code_off2``: of the second block of the 64-row kernel); ``nsteps`` is
``codes.shape[1]``.  It writes ``sums[t, :rows]`` (uint16 (·, 64), rows in order) and ``masks[t]``
(int64, bit ``r`` set iff ``sums[t, r] >= min_sums[t]``, ``min_sums`` in [0, 65535]) for ``t < queries``.
Comparing with a threshold inside the kernel means scalar code only touches rows that may enter a heap.

**Choice.**  A :class:`KernelSet` says which instruction sets a scan may use.  Numba sees it as a type
(:class:`KernelSetType`), so each kernel set compiles its own specialisation of the scans, and the
dispatch functions below resolve at compile time to the SIMD intrinsic (:mod:`._intrinsics`) where the set
allows it, else to the scalar twin (:mod:`.twins`).  No module global is rebound: the kernel that runs is
the one the ``kernels`` argument names.

**Queries per code load.**  Consecutive queries that scan the same rows are scored together, amortising
code loads and nibble splits as FAISS's ``qbs`` does.  AVX2 has 16 vector registers and runs out of them
above 4 queries; the AVX-512 kernels have 32 and take 8 (measurements:
``benchmarks/RESULTS.md``, "Fast-scan tuning").
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import NativeValue, models, overload, overload_attribute, register_model, typeof_impl, unbox

from .._cpu import HAS_AVX2, HAS_AVX512, HAS_VBMI
from ._intrinsics import cache_line_offset, simd_block_kernel
from .twins import TWINS

#: Queries per code load of the AVX2 (16 registers) and AVX-512 (32 registers) kernels.
QUERIES_AVX2 = 4
QUERIES_AVX512 = 8


class KernelSetType(types.Type):
    """Numba type of a :class:`KernelSet`: the instruction sets are part of the type, so they select code
    at compile time and are part of the cache key."""

    def __init__(self, avx2: bool, avx512: bool, vbmi: bool) -> None:
        self.avx2, self.avx512, self.vbmi = avx2, avx512, vbmi
        super().__init__(name=f"FastScanKernels(avx2={avx2}, avx512={avx512}, vbmi={vbmi})")

    def runs(self, kind: str) -> bool:
        return {"avx2": self.avx2, "avx512": self.avx512, "vbmi": self.vbmi}[kind]


class KernelSet:
    """Instruction sets a fast-scan may use; any kernel outside them runs as its scalar twin.

    ``avx2``: the 32-row ``vpshufb`` kernel; ``avx512``: the 64-row AVX-512BW ``vpshufb`` kernel (needs
    ``avx2`` for a trailing single block); ``vbmi``: the AVX-512 VBMI + VNNI kernel of the ``"vbmi"``
    layout.  Asking for a set the compile target lacks raises :class:`ValueError`.
    """

    __slots__ = ("avx2", "avx512", "vbmi", "_numba_type_")

    def __init__(self, avx2: bool = False, avx512: bool = False, vbmi: bool = False) -> None:
        if avx512 and not avx2:
            raise ValueError("the avx512 fast-scan kernels need avx2 as well (a trailing block runs on it)")
        for name, wanted, present in (("avx2", avx2, HAS_AVX2), ("avx512", avx512, HAS_AVX512),
                                      ("vbmi", vbmi, HAS_VBMI)):
            if wanted and not present:
                raise ValueError(f"this CPU cannot run the {name} fast-scan kernel")
        self.avx2, self.avx512, self.vbmi = bool(avx2), bool(avx512), bool(vbmi)
        # numba's dispatcher reads the type from here instead of calling ``typeof`` on every call
        self._numba_type_ = KernelSetType(self.avx2, self.avx512, self.vbmi)

    @property
    def numba_type(self) -> KernelSetType:
        """The set's numba type (the instruction sets select code at compile time)."""
        return self._numba_type_

    @property
    def name(self) -> str:
        """The widest instruction set of the set (``"vbmi"``, ``"avx512"``, ``"avx2"``, ``"scalar"``)."""
        return "vbmi" if self.vbmi else "avx512" if self.avx512 else "avx2" if self.avx2 else "scalar"

    def __repr__(self) -> str:
        return f"KernelSet(avx2={self.avx2}, avx512={self.avx512}, vbmi={self.vbmi})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KernelSet) and (self.avx2, self.avx512, self.vbmi) == (other.avx2, other.avx512,
                                                                                          other.vbmi)

    def __hash__(self) -> int:
        return hash((self.avx2, self.avx512, self.vbmi))


#: Every SIMD kernel the compile target runs.
NATIVE = KernelSet(avx2=HAS_AVX2, avx512=HAS_AVX512 and HAS_AVX2, vbmi=HAS_VBMI)
#: Scalar twins only: what runs on CPUs without the SIMD features (tests and benchmarks compare against it).
SCALAR = KernelSet()


def available_kernel_sets() -> dict[str, KernelSet]:
    """The kernel sets this host runs by :attr:`KernelSet.name`, widest first, ending with ``"scalar"``."""
    sets: dict[str, KernelSet] = {}
    for s in (NATIVE, KernelSet(HAS_AVX2, HAS_AVX2 and HAS_AVX512), KernelSet(HAS_AVX2), SCALAR):
        sets.setdefault(s.name, s)
    return sets


@typeof_impl.register(KernelSet)
def _typeof_kernel_set(val, c):
    return val.numba_type


register_model(KernelSetType)(models.OpaqueModel)


@unbox(KernelSetType)
def _unbox_kernel_set(typ, obj, c):
    return NativeValue(c.context.get_dummy_value(), is_error=cgutils.false_bit)


@overload_attribute(KernelSetType, "wide")
def _wide(kernels):
    """True when the 64-row pshufb kernel runs (two blocks per call)."""
    wide = kernels.avx512
    return lambda kernels: wide


@overload_attribute(KernelSetType, "pshufb_queries")
def _pshufb_queries(kernels):
    """Queries per code load of the pshufb-layout kernels."""
    queries = QUERIES_AVX512 if kernels.avx512 else QUERIES_AVX2
    return lambda kernels: queries


@overload_attribute(KernelSetType, "vbmi_queries")
def _vbmi_queries(kernels):
    """Queries per code load of the vbmi-layout kernel."""
    return lambda kernels: QUERIES_AVX512


# -------------------------------------------------------------------------------- dispatch
def score_pshufb32(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
                   masks):
    """One pshufb-layout block (32 rows): the AVX2 kernel when ``kernels`` allows it, else its twin."""
    raise NotImplementedError("block kernels run inside numba-compiled scans only")


def score_pshufb64(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
                   masks):
    """Two pshufb-layout blocks (64 rows): the AVX-512BW kernel when ``kernels`` allows it, else its twin."""
    raise NotImplementedError("block kernels run inside numba-compiled scans only")


def score_vbmi(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
               masks):
    """One vbmi-layout block (32 rows): the VBMI + VNNI kernel when ``kernels`` allows it, else its twin."""
    raise NotImplementedError("block kernels run inside numba-compiled scans only")


def _dispatch(stub, kind: str):
    @overload(stub, inline="always")
    def _select(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
                masks):
        if not isinstance(kernels, KernelSetType):
            return None
        if kernels.runs(kind):
            group = QUERIES_AVX2 if kind == "avx2" and not kernels.avx512 else QUERIES_AVX512
            one, many = simd_block_kernel(kind, 1), simd_block_kernel(kind, group)

            def simd(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
                     masks):
                if queries == 1:
                    one(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks)
                else:  # a whole group (the scans only form full groups)
                    many(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks)

            return simd
        twin = TWINS[kind]

        def scalar(kernels, queries, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums,
                   masks):
            twin(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums[:queries], sums, masks)

        return scalar


_dispatch(score_pshufb32, "avx2")
_dispatch(score_pshufb64, "avx512")
_dispatch(score_vbmi, "vbmi")


# ------------------------------------------------------------------------------ kernel tables
@njit(cache=True, nogil=True, inline="always")
def expand_luts(lut_u8, q0, queries, nsteps, vbmi, scratch):
    """Lay the tables of queries q0..q0+queries-1 out for the block kernels in ``scratch`` (64-aligned,
    128 B per step) → (byte offset of query q0, byte stride between queries).

    pshufb: per code byte j, tables 2j and 2j + 1 each repeated in 4 lanes (64 B), so that table loads
    need no shuffle-port broadcast.  vbmi: per chunk j, tables 8j + {0, 2, 4, 6} then 8j + {1, 3, 5, 7}
    (16 B each).  Missing tables are zero.  ``scratch`` needs ``queries·nsteps·128 + 64`` bytes.
    """
    tables_per_query = lut_u8.shape[1]
    base = (64 - cache_line_offset(scratch)) & 63
    stride = nsteps * 128
    src = lut_u8[q0:q0 + queries].reshape(-1).view(np.uint64)
    dst = scratch.view(np.uint64)
    for t in range(queries):
        out = (base + t * stride) // 8
        for j in range(nsteps):
            for h in range(2):
                for i in range(4):
                    p = 8 * j + 2 * i + h if vbmi else 2 * j + h
                    lo = np.uint64(0)
                    hi = np.uint64(0)
                    if p < tables_per_query:
                        lo = src[2 * (t * tables_per_query + p)]
                        hi = src[2 * (t * tables_per_query + p) + 1]
                    d = out + 16 * j + 8 * h + 2 * i
                    dst[d] = lo
                    dst[d + 1] = hi
    return base, stride
