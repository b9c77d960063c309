"""Compile one kernel body into named numba variants (e.g. parallel and serial).

Numba's on-disk cache names entries after the Python function's qualified name and line,
not after the compile flags, so two ``njit`` wrappers of the *same* function overwrite each
other's cache and can load the wrong machine code (a "serial" variant that wakes the thread
pool).  Each variant therefore gets its own copy of the function under its own name.
"""

from __future__ import annotations

import sys
import types

from numba import njit


def variant(impl: types.FunctionType, name: str, **flags):
    """``njit(cache=True, **flags)`` over a renamed copy of ``impl`` (its own cache entry)."""
    renamed = {"co_name": name, **({"co_qualname": name} if sys.version_info >= (3, 11) else {})}
    fn = types.FunctionType(impl.__code__.replace(**renamed), impl.__globals__, name, impl.__defaults__,
                            impl.__closure__)
    fn.__qualname__ = name
    fn.__doc__ = impl.__doc__
    fn.__module__ = impl.__module__
    return njit(cache=True, nogil=True, **flags)(fn)
