"""vqsearch.parallel: the process-wide thread setting reaches worker threads; small work stays serial."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import vqsearch
from vqsearch import errors, parallel
from vqsearch.index import searcher as searcher_module
from vqsearch.quantizers.float16 import Float16


@pytest.fixture
def restore_threads():
    yield
    vqsearch.set_num_threads(None)


def in_thread(fn):
    """Run ``fn`` on a fresh thread (as a server worker would) and return its result."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join(timeout=120)
    assert out, "the worker thread did not finish"
    return out[0]


class RecordingFloat16(Float16):
    """float16 codes that record the numba thread count their encode runs with (not registered)."""

    seen: list[int] = []

    def _encode(self, xw):
        RecordingFloat16.seen.append(numba.get_num_threads())
        return super()._encode(xw)


def test_set_num_threads_reaches_worker_threads(restore_threads):
    if parallel.get_num_threads() < 2:
        pytest.skip("needs numba with at least 2 threads to tell the settings apart")
    q = RecordingFloat16().fit_dim(8)
    x = np.ones((3, 8), np.float32)
    RecordingFloat16.seen.clear()
    in_thread(lambda: q.encode(x))
    vqsearch.set_num_threads(1)
    assert parallel.get_num_threads() == 1
    in_thread(lambda: q.encode(x))
    assert RecordingFloat16.seen == [numba.config.NUMBA_NUM_THREADS, 1]
    # a fresh thread on its own still starts with all cores: the setting is applied per call
    assert in_thread(numba.get_num_threads) == numba.config.NUMBA_NUM_THREADS


def test_searches_use_the_setting_and_small_ones_one_thread(restore_threads, monkeypatch):
    if parallel.get_num_threads() < 2:
        pytest.skip("needs numba with at least 2 threads to tell the settings apart")
    seen = []
    original = searcher_module.Searcher.search

    def recording(self, *args, **kwargs):
        seen.append(numba.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(searcher_module.Searcher, "search", recording)
    rng = np.random.default_rng(0)
    idx = vqsearch.Index.create(None, dim=8, scan="binary", rescore=None, ivf=None)
    n = 20_000
    idx.add(rng.standard_normal((n, 8)).astype(np.float32))
    seen.clear()  # the searches of the index's recall calibration during add
    big = rng.standard_normal((parallel.SEARCH_SINGLE_THREAD_WORK // n + 1, 8)).astype(np.float32)
    in_thread(lambda: idx.search(big, k=3))
    in_thread(lambda: idx.search(big[:1], k=3))
    vqsearch.set_num_threads(1)
    in_thread(lambda: idx.search(big, k=3))
    assert seen == [numba.config.NUMBA_NUM_THREADS, 1, 1]


def test_nested_blocks_keep_the_outer_choice(restore_threads):
    vqsearch.set_num_threads(parallel.get_num_threads())  # a configured count, which inner blocks would apply
    before = numba.get_num_threads()
    with parallel.threads_for(work=10):  # a small search: one thread
        assert numba.get_num_threads() == 1
        with parallel.threads_for():  # a quantiser call inside it
            assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_thresholds_pick_serial_for_small_work():
    assert not parallel.kernel_parallel(1, 10**9)  # one row: nothing to split
    assert not parallel.kernel_parallel(8, parallel.KERNEL_MIN_WORK - 1)
    assert parallel.kernel_parallel(8, parallel.KERNEL_MIN_WORK)
    assert not parallel.scan_parallel(parallel.SCAN_MIN_PAIRS - 1) and parallel.scan_parallel(parallel.SCAN_MIN_PAIRS)
    assert not parallel.elementwise_parallel(2, parallel.ELEMENTWISE_MIN_VALUES - 1)
    assert parallel.rescore_parallel(parallel.RESCORE_MIN_PAIRS)
    assert not parallel.queries_parallel(1) and parallel.queries_parallel(2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 10**6])
def test_set_num_threads_rejects_bad_values(bad, restore_threads):
    with pytest.raises(errors.InvalidInput, match="threads must be an integer in"):
        vqsearch.set_num_threads(bad)


def test_matmul_split_equals_matmul(rng):
    a = rng.standard_normal((1001, 64)).astype(np.float32)
    b = rng.standard_normal((64, 300)).astype(np.float32)
    for threads in (1, 2, 3):
        np.testing.assert_allclose(parallel.matmul_split(a, b, threads), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parallel.matmul_split(a[:3], b, 2), a[:3] @ b, rtol=1e-5, atol=1e-5)


def test_single_threaded_blas_is_reentrant_and_restores():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    with parallel.single_threaded_blas():
        with parallel.single_threaded_blas():
            assert all(n == 1 for n in blas_threads())
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before
