from .int8 import Int8Weight


def linear(x, w, b=None):  # [..., n_in] -> [..., n_out]; w is [n_out, n_in], as checkpoints store it
    y = w.matmul_t(x) if isinstance(w, Int8Weight) else x @ w.T   # int8: the same product, tile by tile
    return y if b is None else y + b
