"""Keep BLAS single-threaded while a search runs.

OpenBLAS (numpy's BLAS) parks its worker threads in a busy-wait for a while after every multi-threaded
call.  A search alternates small BLAS calls (IVF probing, query rotation) with numba kernels that want
every core, and on a small machine the spinning BLAS workers take those cores: the scan after a
multi-threaded probe ran ~1.7× slower on the 2-core benchmark box.  Inside :func:`single_threaded_blas`
BLAS runs on the calling thread only; numba provides the parallelism.

The limit is process-wide (BLAS has no per-thread setting), so it is reference-counted: concurrent
searches share one limit and the previous setting comes back when the last of them leaves.  BLAS calls
that other threads of the process make meanwhile also run single-threaded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_lock = threading.Lock()
_depth = 0
_restore = None  # the active threadpoolctl limiter, whose restore_original_limits() undoes it
_controller = None


def _limit():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS limited to one thread (re-entrant and thread-safe)."""
    global _depth, _restore
    with _lock:
        if _depth == 0:
            _restore = _limit()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore.restore_original_limits()
                _restore = None


_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
#: Below this many output values a product runs on the calling thread only.
SPLIT_MIN_OUTPUT = 1 << 17


def matmul_split(a, b, threads: int):
    """``a @ b`` with the rows of ``a`` split over ``threads`` Python threads (numpy releases the GIL in BLAS).

    Inside :func:`single_threaded_blas` each part runs on one BLAS thread, so this is how a search uses
    several cores for its products without waking BLAS's own (busy-waiting) workers.
    """
    global _pool, _pool_size
    n = a.shape[0]
    threads = max(1, min(int(threads), n))
    if threads == 1 or n * b.shape[1] < SPLIT_MIN_OUTPUT:
        return a @ b
    with _pool_lock:
        if _pool_size < threads:
            if _pool is not None:  # running maps finish; its idle threads exit
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vqsearch-blas")
            _pool_size = threads
        pool = _pool
    out = np.empty((n, b.shape[1]), dtype=np.result_type(a, b))
    cuts = np.linspace(0, n, threads + 1).astype(int)

    def part(i: int) -> None:
        np.matmul(a[cuts[i]:cuts[i + 1]], b, out=out[cuts[i]:cuts[i + 1]])

    list(pool.map(part, range(threads)))
    return out
