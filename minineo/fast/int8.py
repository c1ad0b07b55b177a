"""int8 linear weights: W [out, in] stored as int8 q with one float32 scale per output row.

    W ~= q * scale[:, None]        so        x @ W.T == (x @ q.T) * scale

The scale of output row j multiplies only output column j, so it is applied after the matmul.
NumPy has no int8 matmul (an int8 @ float32 product converts the whole of q first), so
`x @ W.T` (see tiled.py) converts a tile of rows of q at a time into a float32 buffer that stays
in cache, multiplies them at once with BLAS, and moves on; how many rows is measured per CPU
(choices.py: on a 2-core Xeon a 64-row tile (640 KiB) that stays in L2 converted and multiplied at 6.7 G
weights/s per core, a 1,024-row tile at 2.9). Decoding reads every weight
once per token, so the win is reading 1 byte per weight from memory instead of 4.

Shapes: M = rows of x (tokens, or batch x tokens), in = in_features, out = out_features.
"""
import threading

import numpy as np

from ..errors import MinineoError
from .choices import PREFILL_ROWS
from .processes import shared
from .tiled import TiledWeight, multiply

class Int8Weight(TiledWeight):
    def __init__(self, q, scale):
        self.q = np.asarray(q)  # [out, in]; a memmap stays a view of its file (asarray never copies it)
        self.scale = np.asarray(scale, dtype=np.float32)  # [out]
        if self.q.dtype != np.int8 or self.q.ndim != 2:
            raise MinineoError(f"q must be a 2-D int8 array, got {self.q.dtype} {self.q.shape}")
        if self.scale.shape != self.q.shape[:1]:
            raise MinineoError(f"scale must have shape {self.q.shape[:1]}, got {self.scale.shape}")

    @property
    def shape(self):
        return self.q.shape

    @property
    def nbytes(self):
        return self.q.nbytes + self.scale.nbytes

    def dequantize(self):  # -> [out, in] float32, the whole matrix: for tests and teaching
        return self.q.astype(np.float32) * self.scale[:, None]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.dequantize(), dtype=dtype)

    def __getitem__(self, rows):  # wte[ids]: ids [...] -> [..., in] float32
        w = self.q[rows].astype(np.float32)
        w *= np.asarray(self.scale[rows])[..., None]
        return w

    def whole_by_blas(self, m, choices):  # never: q is converted to float32 a tile at a time
        return False

    def threads_from(self, choices):  # a tile converts before it multiplies: its own measured threshold
        return choices.int8_threads_from

    def tile_rows(self, m, threads, choices):
        """Rows of q converted at once, for M rows of x: at most the measured height for a prompt; for
        few rows the measured tile, and never so few tiles that a thread slowed by another program
        cannot hand some over (see TiledWeight). Then evened out, as many tiles for every thread:
        2.7B's 2,560 rows in 1,024-row tiles would leave one thread a 512-row tile to do alone while
        the other waits, and 125M's 768 rows would be a single tile."""
        if m >= PREFILL_ROWS:
            most = choices.int8_prefill_rows
        else:
            most = min(max(1, choices.int8_tile_kib * 1024 // (4 * self.shape[1])),
                       super().tile_rows(m, threads, choices))
        tiles = -(-self.shape[0] // most)                               # at most `most` rows each
        return -(-self.shape[0] // (-(-tiles // threads) * threads))   # a multiple of the threads

    def tile_product(self, x2, r0, r1, out, choices):  # out = x2 @ q[r0:r1].T, before the scale
        shape = (r1 - r0, self.shape[1])
        w = _scratch(np.float32, shape)               # [r, in], reused; every cast here is exact
        cast = choices.int8_prefill_cast if len(x2) >= PREFILL_ROWS else choices.int8_cast
        if cast == "int16":                           # two casts NumPy does faster than the one (choices.py)
            wide = _scratch(np.int16, shape)
            wide[...] = self.q[r0:r1]
            w[...] = wide
        else:
            w[...] = self.q[r0:r1]
        multiply(x2, w, out, choices)                 # [M, in] @ [in, r] -> [M, r]

    def by_processes(self, x2, y, rows, tile, threads, choices):  # the tiles on worker processes, where chosen
        return shared(self, x2, y, rows, tile, threads, choices)

    def finish(self, y):
        y *= self.scale                               # [M, out] * [out]


def quantize(w):  # [out, in] float32 -> Int8Weight
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1) / np.float32(127)             # [out]
    divisor = np.where(scale > 0, scale, np.float32(1))          # a zero row stays zero, no 0 / 0
    q = w / divisor[:, None]                                     # one float32 temporary, reused
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)                                 # rounding can never pass 127; be sure
    return Int8Weight(q.astype(np.int8), scale)


_local = threading.local()


def _scratch(dtype, shape):  # an array [shape] of dtype, one per thread and dtype, reused: no allocation per call
    size = shape[0] * shape[1]
    buf = getattr(_local, dtype.__name__, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_local, dtype.__name__, buf)
    return buf[:size].reshape(shape)
