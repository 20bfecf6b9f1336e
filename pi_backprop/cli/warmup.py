"""``pi-backprop warmup``: compile the numba kernels into the cache (run once after install,
on the Pi itself: the compiled code is specific to the CPU). float32 by default, the dtype
training and prediction use; ``--float64`` adds the gradient checks' kernels."""

import argparse
import time

import numpy as np

from ..exc import BackendError


def add_arguments(parser):
    parser.add_argument("--float64", action="store_true",
                        help="also compile the float64 kernels (only gradient checks use them; "
                             "doubles the time)")
    # float32 only is the default now (training and prediction run float32); kept so that
    # older install scripts still work.
    parser.add_argument("--float32-only", action="store_true", help=argparse.SUPPRESS)


def run(args) -> int:
    from ..nn import numba_available

    if not numba_available():
        raise BackendError("numba is not installed: nothing to compile (the numpy backend needs no warm-up)")
    from ..nn.engine.cache import numba_version
    from ..nn.engine.jit import CACHE
    from ..nn.engine.warmup import warmup_tasks

    dtypes = (np.float32, np.float64) if args.float64 and not args.float32_only else (np.float32,)
    print(f"numba {numba_version()}, cache {CACHE.text}", flush=True)
    start = time.perf_counter()
    for label, task in warmup_tasks(dtypes):
        began = time.perf_counter()
        task()
        print(f"  {label:<42} {time.perf_counter() - began:6.2f} s", flush=True)
    print(f"done in {time.perf_counter() - start:.2f} s", flush=True)
    return 0
