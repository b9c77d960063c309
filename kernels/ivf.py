"""IVF probing: cut the ``nprobe`` best lists of each query out of its centroid scores.

The scores themselves are one BLAS matrix product (run single-threaded inside a search, see
:mod:`vqsearch._blas`); this kernel replaces numpy's argpartition + argsort + take_along_axis, which
cost several times the product itself at nprobe in the hundreds.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._variants import variant
from .topk import top_k_unordered


def _select_lists(scores, bias, nprobe):
    """The ``nprobe`` best lists per row of ``scores + bias`` → int64 (nq, nprobe), ascending list order.

    ``scores`` float32 (nq, nlist) (overwritten), ``bias`` float32 (nlist,) (−‖c‖²/2 ranks by L2, zeros by
    inner product).  The cut is :func:`~.topk.top_k_unordered` (ties at the cut go to lower list ids);
    ascending list order makes the scan that follows walk rows in storage order.
    """
    nq, nlist = scores.shape
    nprobe = min(nprobe, nlist)
    lists = np.empty((nq, nprobe), dtype=np.int64)
    for q in prange(nq):
        s = scores[q]
        for c in range(nlist):
            s[c] += bias[c]
        lists[q] = top_k_unordered(s, nprobe)
    return lists


select_lists = variant(_select_lists, "select_lists", parallel=True)
select_lists_serial = variant(_select_lists, "select_lists_serial")
