"""Masked multi-head self-attention, global (causal) and local (a sliding window of keys).

Dimensions: B = batch, H = heads, T = new tokens (queries), S = keys visible (cached + new), hd = head size.
Every token has a sequence index (its column in the batch, left padding included); masks compare
these indices, and `real` [B, N] says which indices hold real tokens rather than padding.
"""
import numpy as np

from .linear import linear

# Masked scores become the most negative float32, not -inf, exactly as GPT-Neo's reference code does.
MASKED = np.finfo(np.float32).min


def softmax(x):  # [..., n] -> [..., n]
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def causal_mask(q_idx, k_idx, window=None):  # [T], [S] -> [T, S] bool
    # A query sees the keys at or before it; in a local layer only the last `window` of them, itself included.
    offset = q_idx[:, None] - k_idx[None, :]
    visible = offset >= 0
    return visible if window is None else visible & (offset < window)


def attention(q, k, v, mask):  # [B, H, T, hd], [B, H, S, hd], [B, H, S, hd], [B, 1, T, S] -> [B, H, T, hd]
    # No 1/sqrt(hd) scaling: GPT-Neo's training folded it into the query weights, so the released
    # weights expect raw dot products.
    scores = q @ k.swapaxes(-1, -2)
    scores = np.where(mask, scores, MASKED)
    return softmax(scores) @ v


# Queries per block in banded_attention: a local layer's block then scores at most 256 x (256 + window)
# keys instead of T x T, and a block's [B, H, 256, S'] scores stay a few MB for the released models.
QUERY_BLOCK = 256


def banded_attention(q, k, v, q_idx, k_idx, real, window=None, block=QUERY_BLOCK):  # -> [B, H, T, hd]
    # attention() for a block of queries at a time, against only the keys that its mask can let
    # through: for a local layer the band of `window` keys behind the block, not all T x S scores.
    # The same numbers as one big masked attention(); k_idx must be sorted (the caches keep it so).
    out = np.empty_like(q)
    for start in range(0, len(q_idx), block):
        rows = slice(start, start + block)
        first, last = q_idx[rows][0], q_idx[rows][-1]
        lo = 0 if window is None else np.searchsorted(k_idx, first - window + 1)
        hi = np.searchsorted(k_idx, last, side="right")
        keys = k_idx[lo:hi]
        mask = causal_mask(q_idx[rows], keys, window) & real[:, None, None, keys]   # [B, 1, T', S']
        out[:, :, rows] = attention(q[:, :, rows], k[:, :, lo:hi], v[:, :, lo:hi], mask)
    return out


def split_heads(x, n_head):  # [B, T, n_head * hd] -> [B, n_head, T, hd]
    B, T, width = x.shape
    return x.reshape(B, T, n_head, width // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):  # [B, H, T, hd] -> [B, T, H * hd]
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def self_attention(x, q_proj, k_proj, v_proj, out_proj, *, n_head, window, q_idx, real, cache=None):
    # [B, T, d] -> [B, T, d]. Each projection makes all heads at once: [B, T, d] split into n_head heads.
    q = split_heads(linear(x, **q_proj), n_head)   # [B, H, T, hd]
    k = split_heads(linear(x, **k_proj), n_head)
    v = split_heads(linear(x, **v_proj), n_head)
    k_idx = q_idx
    if cache is not None:   # prepend the keys and values of earlier tokens, and remember these
        k, v, k_idx = cache.update(k, v)
    heads = banded_attention(q, k, v, q_idx, k_idx, real, window)
    return linear(merge_heads(heads), **out_proj)
