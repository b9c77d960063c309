"""Numba kernels: pure ``@njit`` functions over numpy arrays (installed as ``vqsearch.kernels``).

No classes, I/O, logging or settings live here; public classes in :mod:`vqsearch`
validate their input, pick a kernel and call it.  Every kernel has a plain numpy
reference in ``tests/reference.py``.
"""
