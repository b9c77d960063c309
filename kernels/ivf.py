"""IVF probing: cut the ``nprobe`` best lists of each query out of its centroid scores.

The scores themselves are one BLAS matrix product (run single-threaded inside a search, see
:mod:`vqsearch.parallel`); this kernel replaces numpy's argpartition + argsort + take_along_axis, which
cost several times the product itself at nprobe in the hundreds.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._variants import variant
from .topk import top_k_unordered


def _select_lists(scores, bias, nprobe, lead):
    """The ``nprobe`` best lists per row of ``scores + bias`` → int64 (nq, nprobe).

    ``scores`` float32 (nq, nlist) (overwritten), ``bias`` float32 (nlist,) (−‖c‖²/2 ranks by L2, zeros by
    inner product).  The cut is :func:`~.topk.top_k_unordered` (ties at the cut go to lower list ids).
    The ``lead`` best lists come first, best first, then the others in ascending list order: a scan that
    keeps a running top-k meets its best candidates early, so its threshold rises fast and prunes most of
    the later rows, while sorting only ``lead`` lists instead of all ``nprobe``.
    """
    nq, nlist = scores.shape
    nprobe = min(nprobe, nlist)
    lead = min(lead, nprobe)
    lists = np.empty((nq, nprobe), dtype=np.int64)
    for q in prange(nq):
        s = scores[q]
        for c in range(nlist):
            s[c] += bias[c]
        picked = top_k_unordered(s, nprobe)
        if lead == 0:
            lists[q] = picked
            continue
        # the lead best of the picked lists by insertion into a short sorted run (ties: lower list id first)
        best_v = np.full(lead, -np.inf, dtype=np.float32)
        best_j = np.full(lead, -1, dtype=np.int64)
        for j in range(nprobe):
            v = s[picked[j]]
            if best_j[lead - 1] >= 0 and v <= best_v[lead - 1]:
                continue
            t = lead - 1
            while t > 0 and (best_j[t - 1] < 0 or v > best_v[t - 1]):
                best_v[t] = best_v[t - 1]
                best_j[t] = best_j[t - 1]
                t -= 1
            best_v[t] = v
            best_j[t] = j
        is_best = np.zeros(nprobe, dtype=np.bool_)
        for t in range(lead):
            lists[q, t] = picked[best_j[t]]
            is_best[best_j[t]] = True
        out = lead
        for j in range(nprobe):
            if not is_best[j]:
                lists[q, out] = picked[j]
                out += 1
    return lists


select_lists = variant(_select_lists, "select_lists", parallel=True)
select_lists_serial = variant(_select_lists, "select_lists_serial")
