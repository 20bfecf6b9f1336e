"""``pi-backprop warmup``: compile the numba kernels into the cache (run once after install,
on the Pi itself: the compiled code is specific to the CPU)."""

import time

import numpy as np

from ..exc import BackendError
from ..paths import numba_cache_dir


def add_arguments(parser):
    parser.add_argument("--float32-only", action="store_true",
                        help="skip the float64 kernels (only gradient checks use them)")


def run(args) -> int:
    from ..nn import numba_available
    from ..nn.warmup import warmup_tasks

    if not numba_available():
        raise BackendError("numba is not installed: nothing to compile (the numpy backend needs no warm-up)")
    import numba  # imported by numba_available() already; here for its version and cache dir

    dtypes = (np.float32,) if args.float32_only else (np.float32, np.float64)
    print(f"numba {numba.__version__}, cache {numba_cache_dir()}", flush=True)
    start = time.perf_counter()
    for label, task in warmup_tasks(dtypes):
        began = time.perf_counter()
        task()
        print(f"  {label:<42} {time.perf_counter() - began:6.2f} s", flush=True)
    print(f"done in {time.perf_counter() - start:.2f} s", flush=True)
    return 0
