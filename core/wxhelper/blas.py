"""One BLAS thread for processes whose parallelism is elsewhere (a server's workers, a benchmark).

numpy's OpenBLAS starts a thread per core and spins them for every product big enough to split;
on a 2-core machine shared with Redis, the LLM and other workers, those threads fight the process's
own work: measured here, 2 BLAS threads per worker cut the server's throughput threefold, and a
4096-dimension search with the ``hashed`` embedding swung from 0.07 to 8 ms (docs/performance.md).
"""

from __future__ import annotations

import os

BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_one_thread = False


def blas_is_one_thread() -> bool:
    """Whether :func:`one_blas_thread` limited this process's BLAS to one thread (a per-call limit to
    one thread is then a no-op: the ``use`` embedding skips its ~30 µs of threadpoolctl a call)."""
    return _one_thread


def one_blas_thread() -> bool:
    """Limit numpy's BLAS to one thread in this process, unless the operator set a thread count.

    A server's parallelism is its concurrent requests and its workers; a BLAS pool per worker on
    top (the ``use`` embedding runs on numpy) only makes the threads fight for the same cores:
    measured here, 2 BLAS threads per worker cut throughput threefold (docs/performance.md).
    """
    if any(os.environ.get(name) for name in BLAS_THREAD_VARS):
        return False
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    global _one_thread
    threadpool_limits(limits=1, user_api="blas")
    _one_thread = True
    return True
