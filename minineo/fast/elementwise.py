"""A prompt's GELU, computed faster: the same operations as minineo.model.mlp.gelu_new, in the same
order, into one buffer, a block of rows at a time, the blocks shared by minineo's threads where
choices.py measured that it pays (prompt_elementwise="rows").

gelu_new is one line of NumPy, and each of its nine operations makes a new array the size of x: for
2.7B's MLP and a 1,024-token prompt, nine 42 MB arrays, each read and written from memory (and, past
glibc's 32 MiB limit, faulted in page by page). Here each block of rows stays in the core's L2 through
all nine, and is written once. On a quiet 2-core Intel Xeon, gelu_new against one thread in blocks
against two threads sharing them: [1024, 10240] 60 ms, 17.2, 11.7; [128, 10240] 3.4, 1.39, 1.11;
[128, 3072] 0.96, 0.45, 0.48 (two threads gain nothing on the small one: measured, not assumed).

The numbers are gelu_new's, bit for bit (tests/test_elementwise.py): every operation is the same
float32 operation on the same operands (one reordering, exact: see gelu_new_into), only written into
a buffer instead of a new array.
"""
import math

import numpy as np

from ..model.mlp import gelu_new
from .choices import PREFILL_ROWS, known
from .threads import get_threads, parallel_for

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)   # the constant gelu_new uses, a Python float as there
# A block of rows of x and of out, 512 KiB each: in L2 on the CPUs met (1-2 MiB), and few NumPy calls.
# Each call hands Python's GIL over, so two threads of smaller blocks wait on each other: quiet Xeon,
# [128, 10240] on 2 threads 1.96 ms in blocks of 128 KiB, 1.11 in blocks of 512 KiB (1.39 on one thread).
BLOCK_BYTES = 1 << 19


def gelu_new_into(x, out):  # x [R, n] -> out [R, n]
    # gelu_new = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * (x * x * x)))), evaluated as NumPy does it
    np.multiply(x, x, out=out)          # x * x
    out *= x                            # (x * x) * x
    out *= 0.044715                     # 0.044715 * (x * x * x)
    out += x                            # x + ...
    out *= SQRT_2_OVER_PI               # sqrt(2/pi) * (...)
    np.tanh(out, out=out)
    out += 1                            # 1 + tanh(...)
    # (0.5 * x) * u as x * u * 0.5: halving is exact for normal floats, and where x * u is subnormal
    # x is so small that u is exactly 1
    out *= x
    out *= 0.5


def gelu_new_rows(x, choices=None):  # [..., n] -> [..., n]: gelu_new(x), the same numbers
    """For a prompt (PREFILL_ROWS rows or more) in blocks of rows; for a few rows, gelu_new itself."""
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])                       # [R, n]
    if len(x2) < PREFILL_ROWS or x2.dtype != np.float32:
        return gelu_new(x)
    out = np.empty_like(x2)
    rows = max(1, BLOCK_BYTES // (4 * x2.shape[1]))
    threads = get_threads() if (choices or known()).prompt_elementwise == "rows" else 1
    # two pieces a thread, so that a core slowed by a neighbour hands one over; each a few blocks in turn
    pieces = np.linspace(0, len(x2), 2 * threads + 1 if threads > 1 else 2).astype(int)

    def piece(i):
        for r0 in range(pieces[i], pieces[i + 1], rows):
            r = slice(r0, min(r0 + rows, pieces[i + 1]))
            gelu_new_into(x2[r], out[r])
    parallel_for(len(pieces) - 1, piece, threads)
    return out.reshape(x.shape)
