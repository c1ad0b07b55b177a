"""Speed beside the math: the same products as minineo.model, computed faster.

    tiled.py      float32 weights whose `x @ w.T` runs whole on BLAS's threads or in tiles of rows
                  shared by minineo's threads, whichever choices.py picked
    int8.py       int8 weights with one scale per row, and their tiled product
    threads.py    how many threads, and how they share a product
    processes.py  int8 decode products shared with worker processes (worker.py), where that is faster
    choices.py    which way each product runs on this CPU: measured once, kept per CPU model, forceable
    measure.py    the measurement behind choices.py (python -m minineo.calibrate)
    cpu.py        the CPU's name, cores and caches
    memory.py     malloc settings that keep freed memory for the next step's temporaries
    banded.py     attention a block of queries at a time, over only the keys in view (local layers)
    elementwise.py  a prompt's GELU in blocks of rows that stay in L2, shared by the threads where it pays

`tiled(params)` swaps every matrix of a model's weights for its tiled version; the forward pass is
unchanged, since `linear` only ever writes `x @ w.T`. tests/test_fast.py checks that both give the
same numbers.
"""
import numpy as np

from .int8 import Int8Weight, quantize
from .threads import get_threads, set_threads
from .tiled import TiledWeight


def tiled(params):  # the same nested dict of weights, each float32 matrix wrapped in a TiledWeight
    if isinstance(params, dict):
        return {name: tiled(value) for name, value in params.items()}
    if isinstance(params, list):
        return [tiled(value) for value in params]
    if isinstance(params, np.ndarray) and params.ndim == 2:
        return TiledWeight(params)
    return params


__all__ = ["Int8Weight", "TiledWeight", "get_threads", "quantize", "set_threads", "tiled"]
