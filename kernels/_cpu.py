"""CPU features the kernels are compiled for, detected once for every kernel module.

Numba compiles for the host CPU, or for ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when those are set
(e.g. to build a cache for another machine).  The SIMD kernels must follow the *compile target*, not
the CPU this process happens to run on, so the features come from numba's configuration first and
from LLVM's host detection otherwise.  A platform without feature detection gets the scalar kernels.
"""

from __future__ import annotations

import llvmlite.binding as llb
from numba import config


def target_features() -> dict[str, bool]:
    """CPU features numba compiles for: the host's, or ``NUMBA_CPU_FEATURES`` when ``NUMBA_CPU_NAME`` is set."""
    if config.CPU_NAME:
        flags = (config.CPU_FEATURES or "").split(",")
        return {f[1:]: f[0] == "+" for f in flags if f[:1] in "+-" and len(f) > 1}
    try:
        return dict(llb.get_host_cpu_features())
    except RuntimeError:  # platform without feature detection: scalar kernels only
        return {}


FEATURES: dict[str, bool] = target_features()


def has(*names: str) -> bool:
    """True when the compile target has every named LLVM feature (e.g. ``has("avx2")``)."""
    return all(FEATURES.get(n, False) for n in names)


#: 256-bit integer SIMD (``vpshufb`` on 32 bytes): the AVX2 fast-scan kernel runs.
HAS_AVX2 = has("avx2")
#: 512-bit byte shuffles (AVX-512F + BW): the 64-row ``vpshufb`` fast-scan kernel runs.
HAS_AVX512 = has("avx512f", "avx512bw")
#: AVX-512 VBMI (``vpermb``) and VNNI (``vpdpbusd``): the ``"vbmi"``-layout fast-scan kernel runs.
HAS_VBMI = has("avx512f", "avx512bw", "avx512vbmi", "avx512vnni")
#: Some SIMD fast-scan kernel runs here (otherwise fast-scan falls back to its scalar twins).
HAS_SIMD_FASTSCAN = HAS_AVX2 or HAS_AVX512 or HAS_VBMI
