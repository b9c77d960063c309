"""IVF probing: cut the ``nprobe`` best lists of each query out of its centroid scores.

The scores themselves are one BLAS matrix product (run single-threaded inside a search, see
:mod:`vqsearch._blas`); this kernel replaces numpy's argpartition + argsort + take_along_axis, which
cost several times the product itself at nprobe in the hundreds.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._variants import variant
from .topk import kth_largest


def _select_lists(scores, bias, nprobe):
    """The ``nprobe`` best lists per row of ``scores + bias`` → int64 (nq, nprobe), ascending list order.

    ``scores`` float32 (nq, nlist) (overwritten), ``bias`` float32 (nlist,) (−‖c‖²/2 ranks by L2, zeros by
    inner product).  The cut is the nprobe-th best score (:func:`~.topk.kth_largest`); ties at the cut go to
    lower list ids.  Ascending list order makes the scan that follows walk rows in storage order.
    """
    nq, nlist = scores.shape
    nprobe = min(nprobe, nlist)
    lists = np.empty((nq, nprobe), dtype=np.int64)
    for q in prange(nq):
        s = scores[q]
        for c in range(nlist):
            s[c] += bias[c]
        cut = kth_largest(s.copy(), nprobe)
        take_eq = nprobe
        for c in range(nlist):
            take_eq -= s[c] > cut
        picked = np.empty(nlist + 1, dtype=np.int64)
        out = 0
        for c in range(nlist):  # branch-free compaction: write always, advance when kept
            v = s[c]
            eq = (v == cut) & (take_eq > 0)
            take_eq -= eq
            picked[out] = c
            out += (v > cut) | eq
        lists[q] = picked[:nprobe]
    return lists


select_lists = variant(_select_lists, "select_lists", parallel=True)
select_lists_serial = variant(_select_lists, "select_lists_serial")
