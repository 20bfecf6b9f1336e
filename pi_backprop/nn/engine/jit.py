"""numba's options for every kernel of the engine, in one place, and the cache they use.

Importing this module imports numba and points its cache at the folder ``cache.choose``
picks (the keyed folder, or a private fallback, with one warning):
every module that defines kernels imports it first (numba fixes a function's cache folder
when the decorator runs).
"""

import functools
import logging

import numba

from . import cache

CACHE = cache.choose(cache.numba_version() or numba.__version__)
CACHE_DIR = CACHE.directory   # None: nothing is cached
CACHING = CACHE_DIR is not None
if CACHE.problem is not None:
    logging.getLogger(__name__).warning("kernel cache: %s", CACHE.text)
if CACHING:
    numba.config.CACHE_DIR = str(CACHE_DIR)

# cache: compile once per machine, not per process (off only where the keyed folder cannot
# be written). No parallel=True: it does not mix with caching, and threads do not pay at
# these sizes.
# error_model="numpy": x / 0 gives inf or NaN, as numpy does, instead of a check and a
# ZeroDivisionError per division, which kept every loop with a division from vectorising.
jit = functools.partial(numba.njit, cache=CACHING, nogil=True, error_model="numpy")
# For kernels whose inner loop is a sum (dot products, weight gradients): letting LLVM
# reorder the sum (as BLAS does) is what vectorises it. Never "nnan"/"ninf": the NaN checks
# and the divergence guard rely on NaN propagating.
jit_reduce = functools.partial(jit, fastmath={"reassoc", "contract"})
# For small helpers of other kernels: numba pastes their code into each caller. A helper
# compiled on its own is a library of its own, which LLVM optimises once alone and again in
# every caller it is linked into. The caller's fastmath flags apply, so only helpers without
# floating-point sums may be inlined into a jit_reduce kernel.
jit_inline = functools.partial(jit, inline="always")
