"""Weights that compute `x @ w.T` themselves, in tiles of rows that minineo's threads share.

minineo.model.linear computes `x @ w.T + b`. When w is one of these, NumPy hands `x @ w.T` to the
weight (`__array_ufunc__ = None` makes ndarray's `@` give way to `__rmatmul__`), and it computes
the same product as tiles: output column j is x @ w[j], so a tile of rows r0:r1 of w fills the
columns r0:r1 of y, and threads can fill different tiles at once without a lock.

Shapes: M = rows of x (tokens, or batch x tokens), n_in = in_features, n_out = out_features.
"""
import numpy as np

from .threads import parallel_for, threads_for

TILES_PER_THREAD = 4   # enough tiles that a thread slowed by another program can hand work to the others


class Transposed:
    """w.T for a tiled weight: only there to be multiplied, `x @ w.T`."""
    __array_ufunc__ = None

    def __init__(self, weight):
        self.weight = weight

    def __rmatmul__(self, x):  # x @ w.T
        return self.weight.matmul_t(x)


class TiledWeight:
    """A float32 weight [n_out, n_in] (usually a view of the memory-mapped checkpoint)."""

    def __init__(self, w):
        self.w = w

    @property
    def T(self):
        return Transposed(self)

    @property
    def shape(self):
        return self.w.shape

    @property
    def nbytes(self):
        return self.w.nbytes

    def __array__(self, dtype=None, copy=None):  # np.asarray(weight): the matrix itself
        return np.asarray(self.w, dtype=dtype)

    def __getitem__(self, rows):  # wte[ids]: embedding rows
        return self.w[rows]

    def matmul_t(self, x):  # x @ w.T: [..., n_in] -> [..., n_out]
        n_out, n_in = self.shape
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)   # [M, n_in]
        y = np.empty((len(x2), n_out), np.float32)                          # [M, n_out]
        threads = threads_for(n_out * n_in, len(x2))
        rows = self.tile_rows(len(x2), threads)

        def tile(i):  # y[:, r0:r1] = x @ w[r0:r1].T
            r0, r1 = i * rows, min((i + 1) * rows, n_out)
            self.tile_product(x2, r0, r1, y[:, r0:r1])

        parallel_for(-(-n_out // rows), tile, threads)
        self.finish(y)
        return y.reshape(*np.shape(x)[:-1], n_out)

    def tile_rows(self, m, threads):  # rows of w per tile
        return self.shape[0] if threads == 1 else -(-self.shape[0] // (TILES_PER_THREAD * threads))

    def tile_product(self, x2, r0, r1, out):  # out [M, r1 - r0] = x2 @ w[r0:r1].T
        np.matmul(x2, self.w[r0:r1].T, out=out)

    def finish(self, y):  # what is left to do to y once every tile is done: nothing, in float32
        pass
