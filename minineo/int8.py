"""int8 linear weights: W [out, in] stored as int8 q with one float32 scale per output row.

    W ~= q * scale[:, None]        so        x @ W.T == (x @ q.T) * scale

The scale of output row j multiplies only output column j, so it is applied after the matmul.
NumPy has no int8 matmul (an int8 @ float32 product converts the whole of q first), so
`Int8Weight.matmul_t` converts a few rows of q at a time into a small float32 buffer that stays
in the core's cache, multiplies them at once with BLAS, and moves on. Decoding reads every weight
once per token, so the win is reading 1 byte per weight from memory instead of 4.

Shapes: M = rows of x (tokens, or batch x tokens), in = in_features, out = out_features.
"""
import threading

import numpy as np

from .threads import parallel_for

# Decode (few rows of x): float32 bytes of one converted tile, measured with
# scripts/bench_int8_kernel.py. The tile must stay in the core's L2 cache between its conversion and
# its matmul, yet be big enough that the ~5 us of Python per tile stays small: 512 KiB-1 MiB were
# equally fast (2 MiB L2 per core here), 128 KiB and 2 MiB 1.2-1.4x slower.
TILE_BYTES = 512 * 1024
# Prefill (M >= 32 rows of x) reuses each converted tile M times, so the cache matters less than
# letting sgemm run on wide tiles. 64-512 rows were within noise of each other for M = 128; 256 rows
# keep the buffer at 10 MiB per thread (in = 10240) and cut 2560 rows into 10 tiles, even for 2 threads.
PREFILL_ROWS = 32
PREFILL_TILE_ROWS = 256


class Int8Weight:
    def __init__(self, q, scale):
        self.q = np.asarray(q)  # [out, in]; a memmap stays a view of its file (asarray never copies it)
        self.scale = np.asarray(scale, dtype=np.float32)  # [out]
        if self.q.dtype != np.int8 or self.q.ndim != 2:
            raise ValueError(f"q must be a 2-D int8 array, got {self.q.dtype} {self.q.shape}")
        if self.scale.shape != self.q.shape[:1]:
            raise ValueError(f"scale must have shape {self.q.shape[:1]}, got {self.scale.shape}")

    @property
    def shape(self):
        return self.q.shape

    @property
    def nbytes(self):
        return self.q.nbytes + self.scale.nbytes

    def dequantize(self):  # -> [out, in] float32, the whole matrix: for tests and teaching
        return self.q.astype(np.float32) * self.scale[:, None]

    def __getitem__(self, rows):  # wte[ids]: ids [...] -> [..., in] float32
        w = self.q[rows].astype(np.float32)
        w *= np.asarray(self.scale[rows])[..., None]
        return w

    def matmul_t(self, x):  # x @ W.T: [..., in] -> [..., out] float32
        n_out, n_in = self.shape
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)  # [M, in]
        y = np.empty((x2.shape[0], n_out), dtype=np.float32)              # [M, out]
        rows = tile_rows(x2.shape[0], n_in)

        def tile(i):  # y[:, r0:r1] = x @ q[r0:r1].T; tiles never overlap, so threads need no lock
            r0, r1 = i * rows, min((i + 1) * rows, n_out)
            w = _scratch(rows * n_in)[:(r1 - r0) * n_in].reshape(r1 - r0, n_in)  # [r, in]
            w[...] = self.q[r0:r1]                        # int8 -> float32 is exact
            np.matmul(x2, w.T, out=y[:, r0:r1])           # [M, in] @ [in, r] -> [M, r]

        parallel_for(-(-n_out // rows), tile)
        y *= self.scale                                   # [M, out] * [out]
        return y.reshape(*np.shape(x)[:-1], n_out)


def quantize(w):  # [out, in] float32 -> Int8Weight
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1) / np.float32(127)             # [out]
    divisor = np.where(scale > 0, scale, np.float32(1))          # a zero row stays zero, no 0 / 0
    q = w / divisor[:, None]                                     # one float32 temporary, reused
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)                                 # rounding can never pass 127; be sure
    return Int8Weight(q.astype(np.int8), scale)


def tile_rows(m, n_in):
    """Rows of q converted at once, for M rows of x and in_features n_in."""
    if m >= PREFILL_ROWS:
        return PREFILL_TILE_ROWS
    return max(1, TILE_BYTES // (4 * n_in))


_local = threading.local()


def _scratch(size):  # float32 [size], one per thread, reused across calls: no per-call allocation
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        buf = _local.buf = np.empty(size, dtype=np.float32)
    return buf[:size]
