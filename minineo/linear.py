import numpy as np

from .int8 import Int8Weight
from .threads import get_threads, parallel_for

TILES_PER_THREAD = 4   # enough tiles that a thread slowed by another program can hand work to the others


def linear(x, w, b=None):  # [..., n_in] -> [..., n_out]; w is [n_out, n_in], as checkpoints store it
    y = w.matmul_t(x) if isinstance(w, Int8Weight) else matmul_t(x, w)   # both are x @ w.T
    return y if b is None else y + b


def matmul_t(x, w):  # x @ w.T: [..., n_in], [n_out, n_in] -> [..., n_out]
    # w may also be a list of matrices that act as one, stacked along n_out (q, k and v), without
    # being copied into one array. The product is split over minineo's threads: each output column
    # is one row of w, so the threads take tiles of rows in turn and write disjoint columns of y
    # (see threads.py for why not BLAS's own threads).
    parts = w if isinstance(w, list) else [w]
    n_in = parts[0].shape[1]
    x2 = x.reshape(-1, n_in)                                             # [M, n_in]
    y = np.empty((len(x2), sum(len(p) for p in parts)), np.float32)     # [M, n_out]
    rows = -(-y.shape[1] // (TILES_PER_THREAD * get_threads()))
    if get_threads() == 1:
        rows = max(len(p) for p in parts)                                # one tile per matrix
    tiles, column = [], 0                                                # (matrix, first row, last row, column)
    for p in parts:
        tiles += [(p, r, min(r + rows, len(p)), column + r) for r in range(0, len(p), rows)]
        column += len(p)

    def tile(i):  # y[:, c:c + r1 - r0] = x @ p[r0:r1].T
        p, r0, r1, c = tiles[i]
        np.matmul(x2, p[r0:r1].T, out=y[:, c:c + r1 - r0])

    parallel_for(len(tiles), tile)
    return y.reshape(*x.shape[:-1], y.shape[1])
