"""The serial/parallel policy: every work threshold and every thread control of vqsearch.

Kernels in :mod:`vqsearch.kernels` come as a parallel variant and a ``_serial`` one; they never decide
themselves.  The callers (quantisers, scanners, the index) pick a variant here, by the amount of work of
the call, because a parallel region has a fixed cost that small calls cannot repay: waking numba's pool
costs tens of µs on an idle machine, and on a busy one a region waits for a descheduled worker for a
whole scheduler time slice (milliseconds).  Small calls, and almost every single-query call, therefore
run serially.  The measurements behind each threshold are in ``benchmarks/RESULTS.md``, section 6
("Serial/parallel thresholds").

Thread counts.  ``numba.set_num_threads`` only affects the calling thread, and every new thread (a
server's worker threads, a thread pool) starts with all cores.  :func:`set_num_threads` therefore keeps
a process-wide setting, and every public entry point that runs kernels (``Index.search``, ``Index.add``,
``Quantizer.fit/encode/decode``) applies it on its own thread for its duration (:func:`threads_for`).

BLAS.  numpy's OpenBLAS parks its worker threads in a busy-wait after every multi-threaded call; a search
alternates small products with numba kernels that want every core, so inside a search BLAS runs on the
calling thread only (:func:`single_threaded_blas`), and :func:`matmul_split` spreads large products over
Python threads (numpy releases the GIL) instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# ----------------------------------------------------------------------------- thresholds
#: Popcount, lookup-table and assignment kernels (work = inner-loop operations, e.g. queries × rows × bytes)
#: run their parallel variant from this much work, and only with more than one row to split.
KERNEL_MIN_WORK = 1 << 22
#: First-stage scans (work = (query, row) pairs scanned) run their parallel variant from this many pairs.
SCAN_MIN_PAIRS = 200_000
#: Memory-bound elementwise loops (scalar encode/decode; work = values) run in parallel from this many values.
ELEMENTWISE_MIN_VALUES = 1 << 24
#: Rescoring gathers (work = (query, candidate) pairs) run in parallel from this many pairs.
RESCORE_MIN_PAIRS = 4096
#: A search expected to score fewer (query, row) pairs than this runs every kernel on the calling thread.
SEARCH_SINGLE_THREAD_WORK = 1_000_000
#: A matrix product with fewer output values than this runs on the calling thread (:func:`matmul_split`).
MATMUL_SPLIT_MIN_OUTPUT = 1 << 17


def kernel_parallel(rows: int, work: int) -> bool:
    """True when a kernel call is worth a parallel region: more than one row to split, ``KERNEL_MIN_WORK``."""
    forced = _forced()
    if forced is not None:
        return forced
    return rows > 1 and work >= KERNEL_MIN_WORK


def scan_parallel(pairs: int) -> bool:
    """True when a scan of ``pairs`` (query, row) pairs is worth a parallel region."""
    forced = _forced()
    if forced is not None:
        return forced
    return pairs >= SCAN_MIN_PAIRS


def elementwise_parallel(rows: int, values: int) -> bool:
    """True when an elementwise loop over ``values`` values in ``rows`` rows is worth a parallel region."""
    forced = _forced()
    if forced is not None:
        return forced
    return rows > 1 and values >= ELEMENTWISE_MIN_VALUES


def rescore_parallel(pairs: int) -> bool:
    """True when rescoring ``pairs`` (query, candidate) pairs is worth a parallel region."""
    forced = _forced()
    if forced is not None:
        return forced
    return pairs >= RESCORE_MIN_PAIRS


def queries_parallel(n_queries: int) -> bool:
    """Per-query table building: parallel over queries whenever there is more than one."""
    forced = _forced()
    if forced is not None:
        return forced
    return n_queries > 1


def _forced() -> bool | None:
    return getattr(_scope, "forced", None)


@contextlib.contextmanager
def forced_variants(parallel: bool) -> Iterator[None]:
    """Within the block, on the calling thread, every kernel choice above takes the parallel variant
    (``parallel=True``) or the serial one, whatever the amount of work.  For compiling both variants ahead
    of time on small inputs (:mod:`vqsearch.warmup`) and for tests; searches still decide their threads."""
    previous = _forced()
    _scope.forced = bool(parallel)
    try:
        yield
    finally:
        _scope.forced = previous


# ----------------------------------------------------------------------------- thread count
_settings_lock = threading.Lock()
_configured: int | None = None
_scope = threading.local()  # .active: a threads_for block runs on this thread; .forced: forced_variants


def _max_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int | None) -> None:
    """Threads used by the numba kernels, in every thread of the process; ``None`` = all cores (default).

    The setting applies to searches, writes and quantiser calls started afterwards, from any thread
    (``numba.set_num_threads`` alone would only reach the calling thread).
    """
    global _configured
    from .errors import InvalidInput

    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= _max_threads():
            raise InvalidInput(f"threads must be an integer in [1, {_max_threads()}] or None, got {n!r}")
        n = int(n)
    with _settings_lock:
        _configured = n
    import numba

    numba.set_num_threads(_max_threads() if n is None else n)


def get_num_threads() -> int:
    """The process-wide thread count set by :func:`set_num_threads` (all cores by default)."""
    return _max_threads() if _configured is None else _configured


def active_threads() -> int:
    """Threads the kernels may use on the calling thread right now (inside a search: 1 for small ones)."""
    import numba

    return int(numba.get_num_threads())


@contextlib.contextmanager
def threads_for(work: float | None = None) -> Iterator[None]:
    """Apply the thread policy on the calling thread for the block.

    ``work`` is the expected number of (query, row) pairs of a search; below
    ``SEARCH_SINGLE_THREAD_WORK`` every kernel runs on the calling thread.  Otherwise (and with
    ``work=None``) the process-wide count of :func:`set_num_threads` applies.  Nested blocks keep the
    outer block's choice, so a quantiser called by a single-threaded search stays single-threaded.
    """
    if getattr(_scope, "active", False):
        yield
        return
    want = 1 if work is not None and work < SEARCH_SINGLE_THREAD_WORK else _configured
    _scope.active = True
    try:
        if want is None:
            yield
            return
        import numba

        previous = numba.get_num_threads()
        if previous == want:
            yield
            return
        numba.set_num_threads(want)
        try:
            yield
        finally:
            numba.set_num_threads(previous)
    finally:
        _scope.active = False


@contextlib.contextmanager
def single_threaded_faiss() -> Iterator[None]:
    """Run faiss (OpenMP) single-threaded in the block, restoring its thread count afterwards.

    For PQ training: the per-sub-space k-means problems are small (a few dimensions each), so
    OpenMP fork/join and spin-waiting cost more than the parallel work saves.
    """
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


# ----------------------------------------------------------------------------- BLAS
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_restore = None  # the active threadpoolctl limiter, whose restore_original_limits() undoes it
_blas_controller = None


def _limit_blas():
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS limited to one thread (re-entrant and thread-safe).

    BLAS has no per-thread setting, so the limit is process-wide and reference-counted: concurrent
    searches share one limit, the previous setting comes back when the last of them leaves, and BLAS
    calls that other threads make meanwhile also run single-threaded.
    """
    global _blas_depth, _blas_restore
    with _blas_lock:
        if _blas_depth == 0:
            _blas_restore = _limit_blas()
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_restore.restore_original_limits()
                _blas_restore = None


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def matmul_split(a: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    """``a @ b`` with the rows of ``a`` split over ``threads`` Python threads (numpy releases the GIL in BLAS).

    Inside :func:`single_threaded_blas` each part runs on one BLAS thread, so this is how a search uses
    several cores for its products without waking BLAS's own (busy-waiting) workers.
    """
    global _pool, _pool_size
    n = a.shape[0]
    threads = max(1, min(int(threads), n))
    if threads == 1 or n * b.shape[1] < MATMUL_SPLIT_MIN_OUTPUT:
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
