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
"""
import numpy as np

from ..model.attention import attention, causal_mask

# Queries per block: a local layer's block then scores at most 256 x (256 + window) keys instead of
# T x S, and a block's [B, H, 256, S'] scores stay a few MB for the released models.
QUERY_BLOCK = 256


def banded_attention(q, k, v, q_idx, k_idx, real, window=None, block=QUERY_BLOCK):  # -> [B, H, T, hd]
    # The arguments of masked_attention: q [B, H, T, hd], k and v [B, H, S, hd], q_idx [T], k_idx [S]
    # sorted, real [B, N]. No hook points: no block sees a whole pattern, so a hooked run attends with
    # masked_attention instead (GPTNeo.forward).
    out = np.empty_like(q)
    for start in range(0, len(q_idx), block):
        rows = slice(start, start + block)
        first, last = q_idx[rows][0], q_idx[rows][-1]
        lo = 0 if window is None else np.searchsorted(k_idx, first - window + 1)   # the oldest key in view
        hi = np.searchsorted(k_idx, last, side="right")                            # the newest: the last query
        keys = k_idx[lo:hi]
        mask = causal_mask(q_idx[rows], keys, window) & real[:, None, None, keys]   # [B, 1, T', S']
        out[:, :, rows] = attention(q[:, :, rows], k[:, :, lo:hi], v[:, :, lo:hi], mask)
    return out
