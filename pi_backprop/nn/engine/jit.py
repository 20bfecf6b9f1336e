"""numba's options for every kernel of the engine, in one place, and the cache they use.

Importing this module imports numba and points its cache at ``cache.kernel_cache_dir``:
every module that defines kernels imports it first (numba fixes a function's cache folder
when the decorator runs).
"""

import functools

import numba

from .cache import kernel_cache_dir, numba_version, prepare

CACHE_DIR = kernel_cache_dir(numba_version() or numba.__version__)
CACHING = CACHE_DIR is not None and prepare(CACHE_DIR)
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
