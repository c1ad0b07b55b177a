"""How many threads minineo uses: one number for BLAS and for the int8 kernel's worker pool.

BLAS (OpenBLAS under NumPy) has its own thread pool. The int8 kernel runs its own Python threads,
each calling BLAS on a small tile; if BLAS also split every tile across its threads, 2 workers
would start 4 threads on 2 cores and fight (oversubscription). So inside `parallel_for` BLAS is
limited to one thread, and outside it BLAS gets the full count back.
"""
import functools
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy  # noqa: F401  loads OpenBLAS before the controller below looks for it
from threadpoolctl import ThreadpoolController

_controller = ThreadpoolController()   # finds the loaded BLAS once; limiting it later is cheap
_lock = threading.Lock()                # one parallel region at a time: the BLAS limit is process-wide
_threads = None                         # None until set_threads: then physical_cores() is used
_pool = None                            # get_threads() - 1 workers; the caller is the last one


@functools.cache  # asked on every int8 matmul until set_threads is called: read sysfs once
def physical_cores():
    """Cores this process may run on, counting each physical core once (hyperthreads share one)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id") as package, open(topology + "core_id") as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:  # no sysfs (not Linux, or a container hiding it): count logical CPUs
            return max(1, len(cpus))
    return max(1, len(cores))


def get_threads():
    return _threads or physical_cores()


def set_threads(n=None):
    """Use n threads for BLAS and for the int8 workers; None means one per physical core."""
    global _threads, _pool
    if n is None:
        n = physical_cores()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"the number of threads must be an integer >= 1, got {n!r}")
    n = int(n)
    with _lock:
        _controller.limit(limits=n, user_api="blas")   # not used as a context: stays until changed
        if _pool is not None:
            _pool.shutdown()
        _threads, _pool = n, None


def parallel_for(n_items, work):
    """Call work(i) for i in range(n_items), spread over get_threads() threads, BLAS at 1 thread each.

    Threads take the next item as they finish one, so a core slowed by a neighbour does less.
    `work` must be thread-safe; its NumPy and BLAS calls release the GIL, so threads really overlap.
    Not reentrant: `work` must not call parallel_for.
    """
    n_threads = min(get_threads(), n_items)
    if n_threads <= 1:  # one thread: no pool, and BLAS may keep all its threads for the one item
        for i in range(n_items):
            work(i)
        return
    items = iter(range(n_items))
    take = threading.Lock()

    def worker():
        while True:
            with take:
                i = next(items, None)
            if i is None:
                return
            work(i)

    with _lock, _controller.limit(limits=1, user_api="blas"):
        futures = [_get_pool().submit(worker) for _ in range(n_threads - 1)]
        try:
            worker()
        finally:
            wait(futures)  # never leave the region (and its BLAS limit) while a worker still runs
        for future in futures:
            future.result()  # re-raises a worker's exception here


def _get_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=get_threads() - 1, thread_name_prefix="minineo")
    return _pool
