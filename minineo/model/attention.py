"""Masked multi-head self-attention, global (causal) and local (a sliding window of keys).

Dimensions: B = batch, H = heads, T = new tokens (queries), S = keys visible (cached + new), hd = head size.
Every token has a sequence index (its column in the batch, left padding included); masks compare
these indices, and `real` [B, N] says which indices hold real tokens rather than padding.
"""
import numpy as np

from .hooks import NO_HOOK
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


def attention(q, k, v, mask, hook=NO_HOOK):  # [B, H, T, hd], [B, H, S, hd], [B, H, S, hd], [B, 1, T, S] -> [B, H, T, hd]
    # No 1/sqrt(hd) scaling: GPT-Neo's training folded it into the query weights, so the released
    # weights expect raw dot products.
    scores = hook("hook_attn_scores", np.where(mask, q @ k.swapaxes(-1, -2), MASKED))   # [B, H, T, S]
    return hook("hook_pattern", softmax(scores)) @ v


def masked_attention(q, k, v, q_idx, k_idx, real, window=None, hook=NO_HOOK):  # -> [B, H, T, hd]
    # Every query against every key, as the textbook draws it: a key counts if the query may see it
    # (causal, within the window) and it is a real token, not padding. q_idx [T], k_idx [S], real [B, N].
    mask = causal_mask(q_idx, k_idx, window) & real[:, None, None, k_idx]   # [T, S] & [B, 1, 1, S] -> [B, 1, T, S]
    return attention(q, k, v, mask, **hook)


def split_heads(x, n_head):  # [B, T, n_head * hd] -> [B, n_head, T, hd]
    B, T, width = x.shape
    return x.reshape(B, T, n_head, width // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):  # [B, H, T, hd] -> [B, T, H * hd]
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):  # [B, T, d] -> [B, T, d]
    # Each projection makes all heads at once: [B, T, d] split into at.n_head heads. `at` is this layer
    # in this call (minineo.model.block.Layer): its window, the tokens' indices, padding, KV cache,
    # how attention is computed, and the hook points.
    q = at.attn("hook_q", split_heads(linear(x, **q_proj), at.n_head))   # [B, H, T, hd]
    k = at.attn("hook_k", split_heads(linear(x, **k_proj), at.n_head))
    v = at.attn("hook_v", split_heads(linear(x, **v_proj), at.n_head))
    k_idx = at.q_idx
    if at.cache is not None:   # prepend the keys and values of earlier tokens, and remember these
        k, v, k_idx = at.cache.update(k, v)
    z = at.attend(q, k, v, at.q_idx, k_idx, at.real, at.window, **at.attn)
    return linear(merge_heads(at.attn("hook_z", z)), **out_proj)
