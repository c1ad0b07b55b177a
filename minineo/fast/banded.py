"""Attention a block of queries at a time, over only the keys their mask can let through.

minineo.model.attention.masked_attention scores every query against every key and then masks: T x S
scores. In a local layer most of them are masked (a 2,048-token prompt with a window of 256: each
query sees 256 of 2,048 keys), and the [B, H, T, S] scores alone are 200 MB for GPT-Neo 125M.
banded_attention takes the queries QUERY_BLOCK at a time and gives each block the same
`attention(q, k, v, mask)` with the same mask, cut down to the keys between the first one its
first query may see and its last query itself. A key outside that band is masked for every query of
the block: in the whole matrix its score becomes MASKED and exp(MASKED - max) is exactly 0, so
leaving it out changes only the order of float32 sums (tests/test_banded.py checks both agree).

It needs the key indices sorted, which the model's caches keep (minineo/model/cache.py checks it).

For a prompt, where choices.py measured that it pays (prompt_attention="heads"), minineo's threads
share the blocks and the heads: each head's attention is its own (its scores, softmax and sum), so
a thread computes whole heads, the same numbers as one thread computing them all. Decode (a few
queries) stays on one thread: a parallel region would cost more than it saves.
"""
import numpy as np

from ..model.attention import attention, causal_mask
from .choices import PREFILL_ROWS, known
from .threads import get_threads, parallel_for

# Queries per block: a local layer's block then scores at most 256 x (256 + window) keys instead of
# T x S, and a block's [B, H, 256, S'] scores stay a few MB for the released models.
QUERY_BLOCK = 256


def banded_attention(q, k, v, q_idx, k_idx, real, window=None, block=QUERY_BLOCK, choices=None):  # -> [B, H, T, hd]
    # The arguments of masked_attention: q [B, H, T, hd], k and v [B, H, S, hd], q_idx [T], k_idx [S]
    # sorted, real [B, N]. No hook points: no block sees a whole pattern, so a hooked run attends with
    # masked_attention instead (GPTNeo.forward).
    out = np.empty_like(q)
    shared = get_threads() > 1 and len(q_idx) >= PREFILL_ROWS and (choices or known()).prompt_attention == "heads"
    threads = get_threads() if shared else 1
    items = [(start, heads) for start in range(0, len(q_idx), block) for heads in head_groups(q.shape[1], threads)]

    def item(i):   # one block of queries, one group of heads
        start, heads = items[i]
        rows = slice(start, start + block)
        first, last = q_idx[rows][0], q_idx[rows][-1]
        lo = 0 if window is None else np.searchsorted(k_idx, first - window + 1)   # the oldest key in view
        hi = np.searchsorted(k_idx, last, side="right")                            # the newest: the last query
        keys = k_idx[lo:hi]
        mask = causal_mask(q_idx[rows], keys, window) & real[:, None, None, keys]   # [B, 1, T', S']
        out[:, heads, rows] = attention(q[:, heads, rows], k[:, heads, lo:hi], v[:, heads, lo:hi], mask)
    parallel_for(len(items), item, threads)
    return out


def head_groups(n_heads, threads):  # -> slices of heads: one for one thread, else about 2 per thread
    if threads == 1:
        return [slice(0, n_heads)]
    size = max(1, -(-n_heads // (2 * threads)))   # two items a thread: a core slowed by a neighbour hands one over
    return [slice(h, h + size) for h in range(0, n_heads, size)]
