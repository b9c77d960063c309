"""Fast Walsh–Hadamard butterflies.

``fwht_rows(x)`` applies the *unnormalised* Sylvester–Hadamard matrix H_m
(entries ±1, H_m H_mᵀ = m·I) to every row of ``x`` in place:

.. math:: (a, b) \\mapsto (a + b, a - b)

at each of log2(m) stages.  Input contract: float32, C-contiguous, 2-D with a
power-of-two number of columns.  Rows are processed in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._variants import variant


def _fwht_rows_impl(x: np.ndarray) -> None:
    n, m = x.shape
    for r in prange(n):
        row = x[r]
        h = 1
        while h < m:
            for start in range(0, m, 2 * h):
                for j in range(start, start + h):
                    a = row[j]
                    b = row[j + h]
                    row[j] = a + b
                    row[j + h] = a - b
            h *= 2


fwht_rows = variant(_fwht_rows_impl, "fwht_rows", parallel=True)
#: Serial variant: a few rows do not pay for waking the thread pool (single-query latency).
fwht_rows_serial = variant(_fwht_rows_impl, "fwht_rows_serial")
