"""Numba kernels: pure ``@njit`` functions over numpy arrays (installed as ``vqsearch.kernels``).

No I/O, logging or settings live here; public classes in :mod:`vqsearch` validate their input, pick a
kernel and call it (the :mod:`.fastscan` entry points validate their own arguments).  Every kernel is
checked against an independent reference: plain numpy in ``tests/support/vqtest_reference.py`` (popcount,
PQ, scalar, scan, top-k, IVF selection, Hadamard, fast-scan), or brute-force search over the codebook or
lattice in the quantiser's own tests (E8, Leech, trellis).  CPU features are detected once, in
:mod:`._cpu`.
"""
