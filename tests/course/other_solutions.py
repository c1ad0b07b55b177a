"""Correct solutions written differently from minineo's (loops, einsum, float64 inside, other stable
formulas): every check must pass on them."""
import math

import numpy as np


def embed(ids, positions, wte, wpe):
    out = np.empty(ids.shape + (wte.shape[1],), np.float32)
    for i in np.ndindex(ids.shape):
        out[i] = wte[ids[i]] + wpe[positions[i]]
    return out


def lm_head(h, wte):
    return np.einsum("...d,vd->...v", h, wte)


def layer_norm(x, g, b, eps=1e-5):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = np.var(x64, axis=-1, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * g + b).astype(np.float32)


def softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True)))   # exp of a log-softmax


def causal_mask(q_idx, k_idx, window=None):
    mask = np.zeros((len(q_idx), len(k_idx)), bool)
    for i, q in enumerate(q_idx):
        for j, k in enumerate(k_idx):
            mask[i, j] = k <= q and (window is None or q - k < window)
    return mask


def attention(q, k, v, mask):
    scores = np.einsum("bhtd,bhsd->bhts", q, k)
    scores = np.where(mask, scores, np.finfo(np.float32).min)
    return np.einsum("bhts,bhsd->bhtd", softmax(scores), v)


def split_heads(x, n_head):
    hd = x.shape[-1] // n_head
    return np.stack([x[..., h * hd:(h + 1) * hd] for h in range(n_head)], axis=1)


def merge_heads(x):
    return np.concatenate([x[:, h] for h in range(x.shape[1])], axis=-1)


def linear(x, w, b=None):
    return np.einsum("...i,oi->...o", x, w) + (0 if b is None else b)


def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):
    q, k, v = (split_heads(linear(x, **p), at.n_head) for p in (q_proj, k_proj, v_proj))
    k_idx = at.q_idx
    if at.cache is not None:
        k, v, k_idx = at.cache.update(k, v)
    mask = causal_mask(at.q_idx, k_idx, at.window)[None, None] & at.real[:, None, None, k_idx]
    return linear(merge_heads(attention(q, k, v, mask)), **out_proj)


def gelu_new(x):
    inner = np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)
    return x * (0.5 + 0.5 * np.tanh(inner))


def feed_forward(x, c_fc, c_proj):
    return linear(gelu_new(linear(x, **c_fc)), **c_proj)


def block(x, ln_1, attn, ln_2, mlp, at):
    h = x + self_attention(layer_norm(x, **ln_1, eps=at.eps), **attn, at=at)
    return h + feed_forward(layer_norm(h, **ln_2, eps=at.eps), **mlp)


class GlobalCache:   # concatenation instead of a growing buffer
    def __init__(self):
        self.k = self.v = None

    def update(self, k, v):
        self.k = k if self.k is None else np.concatenate([self.k, k], axis=2)
        self.v = v if self.v is None else np.concatenate([self.v, v], axis=2)
        return self.k, self.v, np.arange(self.k.shape[2])


class LocalCache:   # keeps exactly the last window - 1 keys after each update
    def __init__(self, window):
        self.window, self.n = window, 0
        self.k = self.v = None

    def update(self, k, v):
        keys = k if self.k is None else np.concatenate([self.k, k], axis=2)
        values = v if self.v is None else np.concatenate([self.v, v], axis=2)
        self.n += k.shape[2]
        kept = min(self.window - 1, keys.shape[2])
        self.k, self.v = keys[:, :, keys.shape[2] - kept:], values[:, :, keys.shape[2] - kept:]
        return keys, values, np.arange(self.n - keys.shape[2], self.n)


def apply_temperature(logits, temperature):
    return logits * np.float32(1 / temperature)


def top_k_filter(logits, k):
    if k == 0 or k >= logits.shape[-1]:
        return logits.copy()
    kth = -np.sort(-logits, axis=-1)[:, k - 1:k]
    return np.where(logits >= kth, logits, np.finfo(np.float32).min)


def top_p_filter(logits, top_p):
    if top_p >= 1:
        return logits
    out = np.full_like(logits, -np.inf)
    for row in range(logits.shape[0]):
        order = np.argsort(-logits[row], kind="stable")
        probs = softmax(logits[row].astype(np.float64))[order]
        before = np.cumsum(probs) - probs           # probability of the tokens more likely than this one
        for token, mass in zip(order, before):
            if mass < top_p:
                out[row, token] = logits[row, token]
    return out
