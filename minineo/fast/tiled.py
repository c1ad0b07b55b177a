"""Weights that compute `x @ w.T` themselves, the way measured fastest on this CPU (choices.py).

minineo.model.linear computes `x @ w.T + b`. When w is one of these, NumPy hands `x @ w.T` to the
weight (`__array_ufunc__ = None` makes ndarray's `@` give way to `__rmatmul__`), and it computes
the same product one of two ways:
- whole, by BLAS with its own threads: NumPy's plain product;
- as tiles: output column j is x @ w[j], so a tile of rows r0:r1 of w fills the columns r0:r1 of y,
  and minineo's threads fill different tiles at once without a lock.

Shapes: M = rows of x (tokens, or batch x tokens), n_in = in_features, n_out = out_features.
"""
import numpy as np

from .choices import PREFILL_ROWS, current
from .threads import blas_threads, get_threads, parallel_for, threads_for


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

    def matmul_t(self, x, choices=None):  # x @ w.T: [..., n_in] -> [..., n_out]
        choices = choices or current()
        n_out, n_in = self.shape
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)   # [M, n_in]
        if self.whole_by_blas(len(x2), choices):
            with blas_threads(get_threads()):
                y = np.matmul(x2, self.w.T)                                  # [M, n_out]
            return y.reshape(*np.shape(x)[:-1], n_out)
        y = np.empty((len(x2), n_out), np.float32)                          # [M, n_out]
        threads = threads_for(n_out * n_in * len(x2), self.threads_from(choices))
        rows = self.tile_rows(len(x2), threads, choices)

        def tile(i):
            self.tile(i, rows, x2, y, choices)

        if threads == 1 or not self.by_processes(x2, y, rows, tile, threads, choices):
            parallel_for(-(-n_out // rows), tile, threads)
        self.finish(y)
        return y.reshape(*np.shape(x)[:-1], n_out)

    def whole_by_blas(self, m, choices):
        return (choices.prefill if m >= PREFILL_ROWS else choices.decode) == "blas"

    def threads_from(self, choices):  # weights x rows of x from which minineo's threads share the tiles
        return choices.fp32_threads_from

    def tile_rows(self, m, threads, choices):  # rows of w per tile
        return self.shape[0] if threads == 1 else -(-self.shape[0] // (choices.tiles_per_thread * threads))

    def tile(self, i, rows, x2, y, choices):  # tile i of `rows` rows: y[:, r0:r1] = x2 @ w[r0:r1].T
        r0, r1 = i * rows, min((i + 1) * rows, self.shape[0])
        self.tile_product(x2, r0, r1, y[:, r0:r1], choices)

    def tile_product(self, x2, r0, r1, out, choices):  # out [M, r1 - r0] = x2 @ w[r0:r1].T
        multiply(x2, self.w[r0:r1], out, choices)

    def by_processes(self, x2, y, rows, tile, threads, choices):  # -> whether worker processes computed the tiles
        return False   # float32 products are memory-bound: threads share them at the memory's speed

    def finish(self, y):  # what is left to do to y once every tile is done: nothing, in float32
        pass


def multiply(x2, w, out, choices):  # out [M, r] = x2 [M, n_in] @ w [r, n_in].T, the same numbers either way
    if len(x2) == 1 and choices.tile_form == "dot":   # w @ x, the matrix-vector kernel that walks w's rows
        np.dot(w, x2[0], out=out[0])
    else:
        np.matmul(x2, w.T, out=out)
