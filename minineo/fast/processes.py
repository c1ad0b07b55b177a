"""int8 decode products shared with worker processes instead of threads: a choice, measured like the others
(choices.py: int8_workers = "threads" | "processes").

Why. NumPy has no int8 product, so an int8 weight is cast to float32 a tile at a time and multiplied
(int8.py): two or three NumPy calls per tile, tens of thousands per token for GPT-Neo 2.7B. Each call lets
go of Python's GIL and takes it back, and two threads doing that wait on each other. On the 2-core Xeon
2.7B's 193 int8 matrices took 450-500 ms a token on two threads and 330-350 ms with the same tiles on
the main process and one worker process, which has a GIL of its own (docs/performance.md).

How. A worker is a Python process running minineo/fast/worker.py, started at the first product that needs it. It
maps the int8 weights where the model has them, so that they sit in memory once:
- the checkpoint file they were mapped from (written by `python -m minineo.quantize`), in the page cache
  both processes read;
- an `Arena`: memory that `load(int8=True)` quantizes into, an in-memory file (Linux's memfd) that the
  workers inherit at their start.
For a product the main process writes x into a small shared buffer and sends each worker one line:
which weight, which tiles, how to cast them; each worker writes its columns of y into the buffer and
answers "ok". Tiles are the threads' tiles, computed by the same `tile_product`, so the numbers are the
same to the bit (tests/test_processes.py). The split is fixed, as BLAS's own threads split a product:
the main process takes the first share of tiles, each worker the next; BLAS runs one thread in each.
A worker checks that each file it maps is the one the main process mapped (the same inode).

A prompt's products stay on threads (long calls, where the GIL costs nothing). Where there is no memfd
(macOS, Windows) processes are not measured or used: weights quantized at load could not be shared.
If a worker fails, its tiles are computed here and every later product runs on threads; one line on
stderr says why.
"""
import atexit
import functools
import mmap
import os
import subprocess
import sys
import weakref
from multiprocessing import shared_memory

import numpy as np

from .choices import PREFILL_ROWS, python_command
from .threads import blas_threads

_pool = None        # the running Workers, or None
_broken = None      # why processes stopped being used in this process, or None
_arenas = {}        # fd -> inode of every live Arena's memfd: what a new worker inherits


@functools.cache
def available():  # -> whether int8 weights can go to workers wherever they come from (quantized at load too)
    # Without a memfd, weights quantized at load live in this process only, and their tiles would run on
    # threads with the tile size and cast measured for processes: so processes are not offered at all.
    try:
        os.close(os.memfd_create("minineo-probe"))
    except (AttributeError, OSError):   # not Linux, or a sandbox refuses the system call
        return False
    return os.path.isdir("/proc/self/fd")


def mapped_file(array):
    """-> (path, byte offset, inode) of a C-contiguous array that is a view of a np.memmap of a whole
    file, or None. The inode is the one the file had when it was mapped, where its mapper noted it."""
    if not array.flags.c_contiguous:
        return None
    root = array
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None:
        return None
    inode = getattr(root, "inode", None) or os.stat(root.filename).st_ino
    return str(root.filename), array.ctypes.data - root.ctypes.data + root.offset, inode


class Arena:
    """nbytes of memory that worker processes can map, handed out an array at a time with take(): an
    in-memory file (memfd) where the OS has them, else plain memory. Pages never written cost nothing."""

    def __init__(self, nbytes):
        self.used, self.fd, fd = 0, None, None
        try:
            fd = os.memfd_create("minineo-int8")
            os.ftruncate(fd, max(nbytes, 1))
            # a worker inherits the fd under the same number, so this path names the same memory there
            self.memory = np.memmap(f"/proc/self/fd/{fd}", np.uint8, mode="r+", shape=(nbytes,))
        except (AttributeError, OSError):   # no memfd (macOS, Windows; a sandbox may refuse it) or no /proc:
            if fd is not None:              # plain memory, whose products stay on threads
                os.close(fd)
            self.memory = np.empty(nbytes, np.uint8)
            return
        self.fd, self.memory.inode = fd, os.fstat(fd).st_ino
        _arenas[fd] = self.memory.inode
        weakref.finalize(self.memory, _close_arena, fd)

    def take(self, shape, dtype):  # -> an uninitialised C-contiguous array of the arena, 64-byte aligned
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        start, self.used = self.used, -(-(self.used + nbytes) // 64) * 64
        return np.asarray(self.memory[start:start + nbytes]).view(dtype).reshape(shape)


def _close_arena(fd):  # the arena's arrays are gone: so is its memory, once no worker maps it either
    _arenas.pop(fd, None)
    os.close(fd)


def shared(weight, x2, y, rows, tile, threads, choices):
    """Compute every tile of `weight`'s product, y = x2 @ w.T (before the int8 scale), on this process
    and threads - 1 workers. -> False, having done nothing, where processes are not the way here."""
    global _pool, _broken
    if choices.int8_workers != "processes" or len(x2) >= PREFILL_ROWS or _broken is not None:
        return False
    where = mapped_file(weight.q)
    if where is None:
        return False
    n_tiles = -(-weight.shape[0] // rows)
    bounds = [n_tiles * k // threads for k in range(threads + 1)]   # process k takes tiles bounds[k]..bounds[k + 1]
    done = False
    try:
        with blas_threads(1):
            if _pool is not None and _pool.pid != os.getpid():   # a forked child: the workers are its parent's
                _pool = None
            failed = None
            if _pool is None or len(_pool.procs) != threads - 1 or not _pool.reaches(where):
                close()
                try:
                    _pool = Workers(threads - 1)
                except OSError as e:
                    failed = f"int8 worker processes could not start ({e})"
            failed = failed or _pool.send(where, weight.shape, x2, rows, bounds, choices)
            for i in range(bounds[0], bounds[1]):
                tile(i)
            failed = failed or _pool.receive(y, x2.shape[1], rows, bounds)
            if failed:
                _broken = failed
                print(f"minineo: {failed}; int8 products run on threads from now on", file=sys.stderr)
                close()
                for i in range(bounds[1], n_tiles):   # the workers' tiles, here
                    tile(i)
        done = True
    finally:
        if not done:          # interrupted mid-product: the workers' answers would be read by the next one
            close()
    return True


class Workers:
    def __init__(self, n):
        self.io = None                # x and y: made (and named to the workers) at the first product
        command, env = python_command("-m", "minineo.fast.worker")
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.pid = os.getpid()        # the process that talks to these workers
        self.arenas = dict(_arenas)   # the memfds the workers inherit
        self.weights = {}             # (path, offset, inode, shape) -> its index in every worker
        self.procs = []
        try:
            for _ in range(n):
                self.procs.append(subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   text=True, bufsize=1, pass_fds=tuple(self.arenas)))
        except OSError:
            self.close()              # the ones that did start
            raise

    def reaches(self, where):  # can the workers map this file? An arena's only if they inherited its memfd
        path, _, inode = where
        if not path.startswith("/proc/self/fd/"):
            return True
        return self.arenas.get(int(path.rsplit("/", 1)[1])) == inode

    def send(self, where, shape, x2, rows, bounds, choices):  # -> why it failed, or None
        key = (*where, *shape)
        m, n_in = x2.shape
        need = 4 * m * (n_in + shape[0])
        if self.io is None or need > self.io.size:   # a new buffer, named to the workers before this product
            size = max(need, 1 << 20) if self.io is None else max(need, 2 * self.io.size)
            self.close_io()
            self.io = shared_memory.SharedMemory(create=True, size=size)
            lines = [f"io {self.io.name}"]
        else:
            lines = []
        if key not in self.weights:
            self.weights[key] = len(self.weights)
            path, offset, inode = where
            lines.append(f"weight {offset} {shape[0]} {shape[1]} {inode} {path}")
        np.ndarray((m, n_in), np.float32, self.io.buf)[...] = x2
        for k, proc in enumerate(self.procs, start=1):
            try:
                proc.stdin.write("".join(line + "\n" for line in lines) + f"product {self.weights[key]} {m} {rows} "
                                 f"{bounds[k]} {bounds[k + 1]} {choices.int8_cast} {choices.tile_form}\n")
                proc.stdin.flush()
            except OSError as e:
                return f"an int8 worker process could not be reached ({e})"
        self.answers = len(lines) + 1
        return None

    def receive(self, y, n_in, rows, bounds):  # the workers' columns of y, from the buffer -> why it failed, or None
        m, n_out = y.shape
        for proc in self.procs:
            for _ in range(self.answers):
                answer = proc.stdout.readline().strip()
                if answer != "ok":
                    return f"an int8 worker process failed ({answer or f'it ended, exit code {proc.poll()}'})"
        first = bounds[1] * rows
        y[:, first:] = np.ndarray((m, n_out), np.float32, self.io.buf, y_offset(m, n_in))[:, first:]
        return None

    def close(self):
        for proc in self.procs:
            try:
                proc.stdin.close()   # the worker ends at the end of its input
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self.close_io()

    def close_io(self):   # the workers keep a buffer they attached until they attach the next one or end
        if self.io is not None:
            self.io.close()
            self.io.unlink()


def y_offset(m, n_in):  # bytes into the shared buffer where y starts: x [m, n_in] float32 comes first
    return 4 * m * n_in


def close():
    global _pool
    if _pool is not None:
        pool, _pool = _pool, None
        pool.close()


atexit.register(close)
