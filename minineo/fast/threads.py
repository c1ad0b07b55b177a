"""How many threads minineo uses, and how they share a matmul.

A weight matmul is shared by threads one of two ways, chosen per CPU by measurement (choices.py):
- tiles: minineo's own Python threads take tiles of rows in turn, each calling single-threaded BLAS
  (NumPy and BLAS release the GIL, so the threads really overlap). A thread slowed by another
  program on its core simply does fewer tiles. int8 weights always run this way (each tile is
  converted to float32 first).
- BLAS: BLAS's own threads split the one call (`blas_threads`). They split it into fixed shares and
  wait for the slowest: on a 2-core AMD EPYC with one core busy with another program, 2 BLAS
  threads ran GPT-Neo 125M 7x slower than 1 thread. On a quiet 2-core Intel Xeon they read memory
  twice as fast as 2 Python threads with 32 tiles (30.9 against 14.8 GB/s).
`set_threads(n)` sizes minineo's pool. minineo's threads and BLAS's never run together (which
would oversubscribe the cores): inside `parallel_for` BLAS runs one thread, and a product that BLAS
splits itself sets its threads. BLAS keeps the count it was last given in between (the small
attention products); setting it back to one after every product cost 1-3% of GPT-Neo 125M's decode
speed on a 2-core Xeon. Until minineo's first product or set_threads, BLAS keeps its own count.
"""
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy  # noqa: F401  loads OpenBLAS before the controller below looks for it
from threadpoolctl import ThreadpoolController

from ..errors import MinineoError, is_int

_controller = ThreadpoolController()   # finds the loaded BLAS once; limiting it later is cheap
_blas = [lib for lib in _controller.lib_controllers if lib.user_api == "blas"]
_blas_count = None                      # the thread count minineo last gave BLAS; None: BLAS's own
_lock = threading.Lock()                # one parallel region at a time: the BLAS count is process-wide
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


OPENBLAS_SETTINGS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # read by OpenBLAS when it loads: they change its kernels


def blas_kernel():  # -> "openblas 0.3.31, SkylakeX kernels", and ", OPENBLAS_CORETYPE=Haswell" where it is set
    # threadpoolctl's internal_api, version and architecture: the kernel OpenBLAS chose for this CPU (or was told)
    kernels = [f"{lib.internal_api} {lib.version or '?'}, {getattr(lib, 'architecture', None) or '?'} kernels"
               for lib in _blas]
    settings = [f"{name}={os.environ[name]}" for name in OPENBLAS_SETTINGS if name in os.environ]
    return ", ".join(kernels + settings) or "no BLAS found"


def get_threads():
    return _threads or physical_cores()


def set_threads(n=None):
    """Use n threads for minineo's matmuls, and 1 for BLAS; None means one per physical core."""
    global _threads, _pool, _blas_count
    if n is None:
        n = physical_cores()
    if not is_int(n, 1):
        raise MinineoError(f"the number of threads must be an integer >= 1, got {n!r}")
    n = int(n)
    with _lock:
        _blas_count = None   # set it whatever it was: other code may have changed it meanwhile
        _set_blas_threads(1)
        if _pool is not None:
            _pool.shutdown()
        _threads, _pool = n, None


def threads_for(work, threads_from):  # -> the threads worth using for a product of work = weights x rows
    # A parallel region costs tens of microseconds (waking the pool's threads, handing out tiles), more
    # than a small product gains; from how much work a second thread pays is measured per CPU and per
    # kind of weight (choices.py: fp32_threads_from, int8_threads_from).
    return get_threads() if work >= threads_from else 1


def parallel_for(n_items, work, threads=None):
    """Call work(i) for i in range(n_items), spread over `threads` threads (default get_threads()),
    BLAS at 1 thread each.

    Threads take the next item as they finish one, so a core slowed by a neighbour does less.
    `work` must be thread-safe; its NumPy and BLAS calls release the GIL, so threads really overlap.
    Not reentrant: `work` must not call parallel_for.
    """
    n_threads = min(threads or get_threads(), n_items)
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

    with _lock:
        _set_blas_threads(1)
        futures = [_get_pool().submit(worker) for _ in range(n_threads - 1)]
        try:
            worker()
        finally:
            wait(futures)  # never leave the region (and its BLAS limit) while a worker still runs
        for future in futures:
            future.result()  # re-raises a worker's exception here


class blas_threads:
    """`with blas_threads(n):` BLAS's own n threads for the calls inside (kept after them: see the top).
    A class, not a contextlib generator: a 2.7B decode step enters it 193 times, and the generator's
    machinery cost ~3 us each (quiet Xeon, 125M decode: 44.3 -> 45.1 tok/s, medians of 6 turns each)."""
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        _lock.acquire()
        try:
            _set_blas_threads(self.n)
        except BaseException:
            _lock.release()
            raise

    def __exit__(self, *exc):
        _lock.release()


def _set_blas_threads(n):  # the caller holds _lock
    # set_num_threads on the loaded BLAS directly, and only when the count changes: a threadpoolctl
    # limit() costs ~15 us, a set_num_threads ~5 us, and a decode step of 2.7B makes 193 products.
    global _blas_count
    if n != _blas_count:
        for blas in _blas:
            blas.set_num_threads(n)
        _blas_count = n


def _get_pool():
    global _pool
    if _pool is None:
        # at least one worker: parallel_for(threads=n) may ask for more threads than get_threads(); the
        # extra ones queue, and find no work left
        _pool = ThreadPoolExecutor(max_workers=max(1, get_threads() - 1), thread_name_prefix="minineo")
    return _pool
