"""Lesson 3: attention, global and local."""
import math
from dataclasses import replace

import numpy as np

from ...model import attention as attention_module
from ...model.attention import MASKED, attention, causal_mask, merge_heads, self_attention, softmax, split_heads
from ...model.block import Layer
from ...model.cache import GlobalCache
from .base import Case, Exercise, Mistake, patched, rand, strided


def softmax_cases():
    masked_row = rand(21, 3, 6)
    masked_row[1] = MASKED
    with_minus_inf = rand(22, 2, 5)
    with_minus_inf[:, 1] = -np.inf
    return [
        Case("random scores [2, 3, 5]", lambda: ((rand(23, 2, 3, 5),), {})),
        Case("large scores (around 1000): exp overflows unless each row's max is subtracted first",
             lambda: ((rand(24, 2, 6, scale=300, offset=1000),), {})),
        Case("a fully masked row (every score the most negative float32): expect 1/n each",
             lambda: ((masked_row,),  {})),
        Case("-inf scores next to finite ones: weight 0 there", lambda: ((with_minus_inf,), {})),
        Case("one row [7]", lambda: ((rand(25, 7),), {})),
        Case("a non-contiguous [4, 5]", lambda: ((strided(rand(26, 4, 5, scale=5)),), {})),
    ]


def _naive_softmax(x):
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


SOFTMAX = Exercise("softmax", 3, softmax, softmax_cases, [
    Mistake("does not subtract the row's max before exp (large scores overflow to inf and give NaN; "
            "a fully masked row gives 0/0)", "exp(x - x.max(axis=-1, keepdims=True))", _naive_softmax),
    Mistake("subtracts the max of the whole array, not of each row", "x.max(axis=-1, keepdims=True)",
            lambda x: (lambda e: e / e.sum(-1, keepdims=True))(np.exp(x - x.max()))),
    Mistake("normalises over the wrong axis (axis 0)", "each row sums to 1: axis=-1",
            lambda x: (lambda e: e / e.sum(0, keepdims=True))(np.exp(x - x.max(0, keepdims=True)))),
    Mistake("normalises over the whole array", "each row sums to 1: axis=-1",
            lambda x: (lambda e: e / e.sum())(np.exp(x - x.max()))),
    Mistake("returns log-probabilities (a log-softmax)", "exponentiate and divide by the row's sum",
            lambda x: np.log(softmax(x))),
])


def causal_mask_cases():
    return [
        Case("global (window None), 6 tokens", lambda: ((np.arange(6), np.arange(6)), {})),
        Case("local, window 3, 8 tokens: a key exactly 3 back is hidden, 2 back is visible",
             lambda: ((np.arange(8), np.arange(8)), {"window": 3})),
        Case("local, window 1: each query sees only itself", lambda: ((np.arange(5), np.arange(5)), {"window": 1})),
        Case("queries 10, 11 against keys 0..11 (10 tokens in the cache), global",
             lambda: ((np.arange(10, 12), np.arange(12)), {})),
        Case("queries 10, 11 against keys 0..11, window 4", lambda: ((np.arange(10, 12), np.arange(12)), {"window": 4})),
        Case("local keys 6..11 of a cache against queries 9..11, window 4",
             lambda: ((np.arange(9, 12), np.arange(6, 12)), {"window": 4})),
        Case("a window longer than the sequence (10 > 6): the same as global",
             lambda: ((np.arange(6), np.arange(6)), {"window": 10})),
    ]


def _mask_from_offsets(visible):  # a causal_mask whose rule on offset = q - k is `visible(offset, window)`
    def mask(q_idx, k_idx, window=None):
        return visible(q_idx[:, None] - k_idx[None, :], window)
    return mask


CAUSAL_MASK = Exercise("causal_mask", 3, causal_mask, causal_mask_cases, [
    Mistake("has the window off by one: a query sees window + 1 keys (offset <= window)",
            "a query sees exactly `window` keys, itself included: 0 <= q - k < window",
            _mask_from_offsets(lambda o, w: (o >= 0) & (True if w is None else o <= w))),
    Mistake("has the window off by one: a query sees only window - 1 keys (offset < window - 1)",
            "a query sees exactly `window` keys, itself included: 0 <= q - k < window",
            _mask_from_offsets(lambda o, w: (o >= 0) & (True if w is None else o < w - 1))),
    Mistake("hides the query's own key (offset > 0)", "a query sees itself: q - k >= 0",
            _mask_from_offsets(lambda o, w: (o > 0) & (True if w is None else o < w))),
    Mistake("is transposed: a query sees the keys after it", "key k is visible to query q when k <= q",
            _mask_from_offsets(lambda o, w: (o <= 0) & (True if w is None else -o < w))),
    Mistake("ignores the window", "in a local layer also require q - k < window",
            _mask_from_offsets(lambda o, w: o >= 0)),
    Mistake("compares row and column numbers instead of q_idx and k_idx (np.tril of the shape): "
            "wrong as soon as the queries come after cached keys",
            "compare the sequence indices: offset = q_idx[:, None] - k_idx[None, :]",
            lambda q_idx, k_idx, window=None: causal_mask(np.arange(len(q_idx)), np.arange(len(k_idx)), window)),
])


def attention_inputs(seed, B=2, H=3, T=4, S=4, hd=5, scale=1.0, window=None):
    q, k, v = rand(seed, B, H, T, hd, scale=scale), rand(seed + 1, B, H, S, hd, scale=scale), rand(seed + 2, B, H, S, hd)
    mask = np.broadcast_to(causal_mask(np.arange(S - T, S), np.arange(S), window), (B, 1, T, S)).copy()
    return q, k, v, mask


def attention_cases():
    def fully_masked():
        q, k, v, mask = attention_inputs(31)
        mask[1, 0, :2] = False   # row 1 is left-padded: its first two queries see no real key
        mask[1, 0, :, :2] = False
        return (q, k, v, mask), {}

    def non_contiguous():
        q, k, v, mask = attention_inputs(34, hd=6)
        return (strided(q), strided(k), strided(v), mask), {}
    return [
        Case("causal mask, batch 2, 3 heads, head size 5", lambda: (attention_inputs(30), {})),
        Case("fully masked query rows (left padding: a pad sees no real key): every score masked, "
             "expect the plain mean of the values, not NaN", fully_masked),
        Case("2 new queries against 6 keys (a KV cache), local window 3", lambda: (attention_inputs(32, T=2, S=6, window=3), {})),
        Case("large q and k (scores in the hundreds): a softmax must not overflow",
             lambda: (attention_inputs(33, scale=6), {})),
        Case("non-contiguous q, k and v, head size 3", non_contiguous),
        Case("one head of size 1, one sequence", lambda: (attention_inputs(35, B=1, H=1, T=3, S=3, hd=1), {})),
    ]


def _masked_softmax_attention(masking, scale=1.0):  # attention with another way to mask, or a scale
    def attend(q, k, v, mask):
        scores = (q @ k.swapaxes(-1, -2)) * np.float32(scale)
        return masking(scores, mask) @ v
    return attend


ATTENTION = Exercise("attention", 3, attention, attention_cases, [
    Mistake("scales the scores by 1/sqrt(head size)",
            "no scaling: GPT-Neo's training folded 1/sqrt(head size) into the query weights, so the released "
            "weights expect raw dot products q @ k.T",
            lambda q, k, v, mask: attention(q / np.float32(math.sqrt(q.shape[-1])), k, v, mask)),
    Mistake("masks with -inf (or masks after the softmax and renormalises): a fully masked row becomes 0/0 = NaN",
            "set masked scores to the most negative float32, np.finfo(np.float32).min, before the softmax: a fully "
            "masked row then gets equal weights, as in GPT-Neo",
            _masked_softmax_attention(lambda s, m: softmax(np.where(m, s, -np.inf)))),
    Mistake("masks after the softmax (multiplies the probabilities by the mask): masked keys still took their "
            "share, so the weights no longer sum to 1",
            "mask the scores before the softmax: np.where(mask, scores, np.finfo(np.float32).min)",
            _masked_softmax_attention(lambda s, m: softmax(s) * m)),
    Mistake("multiplies the scores by the mask: masked scores become 0, not very negative, and keep weight",
            "np.where(mask, scores, np.finfo(np.float32).min)",
            _masked_softmax_attention(lambda s, m: softmax(s * m))),
    Mistake("ignores the mask", "mask the scores before the softmax",
            _masked_softmax_attention(lambda s, m: softmax(s))),
    Mistake("takes the softmax over the queries (axis -2), not the keys",
            "each query's weights over the keys sum to 1: softmax over the last axis",
            _masked_softmax_attention(lambda s, m: softmax(np.where(m, s, MASKED).swapaxes(-1, -2)).swapaxes(-1, -2))),
])


def split_heads_cases():
    return [
        Case("batch 2, 3 tokens, 4 heads of size 3", lambda: ((rand(40, 2, 3, 12), 4), {})),
        Case("d 15 in 5 heads of size 3, non-contiguous x", lambda: ((strided(rand(41, 2, 4, 15)), 5), {})),
        Case("one head", lambda: ((rand(42, 1, 3, 4), 1), {})),
        Case("d 10 in 2 heads of size 5, one token", lambda: ((rand(43, 3, 1, 10), 2), {})),
    ]


def _split_without_transpose(x, n_head):
    B, T, width = x.shape
    return x.reshape(B, n_head, T, width // n_head)


def _split_interleaved(x, n_head):
    B, T, width = x.shape
    return x.reshape(B, T, width // n_head, n_head).transpose(0, 3, 1, 2)


SPLIT_HEADS = Exercise("split_heads", 3, split_heads, split_heads_cases, [
    Mistake("reshapes straight to [B, n_head, T, hd] without the transpose: a head gets pieces of several tokens",
            "reshape to [B, T, n_head, hd], then transpose to [B, n_head, T, hd]", _split_without_transpose),
    Mistake("deals the features out to the heads in turn (reshape to [B, T, hd, n_head])",
            "head h takes the features h*hd .. (h+1)*hd - 1: reshape to [B, T, n_head, hd]", _split_interleaved),
])


def merge_heads_cases():
    return [
        Case("batch 2, 4 heads, 3 tokens, head size 3", lambda: ((rand(44, 2, 4, 3, 3),), {})),
        Case("5 heads of size 3, a non-contiguous view", lambda: ((strided(rand(45, 2, 5, 4, 3)),), {})),
        Case("one head", lambda: ((rand(46, 1, 1, 3, 4),), {})),
    ]


MERGE_HEADS = Exercise("merge_heads", 3, merge_heads, merge_heads_cases, [
    Mistake("reshapes straight to [B, T, H * hd] without the transpose: a token gets pieces of several tokens",
            "transpose to [B, T, H, hd], then reshape to [B, T, H * hd]",
            lambda x: x.reshape(x.shape[0], x.shape[2], -1)),
    Mistake("interleaves the heads' features (transposes to [B, T, hd, H])",
            "head h's features go to columns h*hd .. (h+1)*hd - 1: transpose to [B, T, H, hd]",
            lambda x: x.transpose(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1)),
])


def attention_weights(seed, d):
    return ({"w": rand(seed, d, d, scale=0.4)}, {"w": rand(seed + 1, d, d, scale=0.4)},
            {"w": rand(seed + 2, d, d, scale=0.4)}, {"w": rand(seed + 3, d, d, scale=0.4), "b": rand(seed + 4, d)})


def self_attention_cases():
    d, H, B, T = 15, 3, 2, 5
    x = rand(50, B, T, d)
    weights = attention_weights(51, d)
    real = np.ones((B, T), bool)
    padded = real.copy()
    padded[1, :2] = False

    def layer(**settings):   # the block's settings for this call: minineo.model.block.Layer
        return Layer(**{**dict(n_head=H, eps=1e-5, window=None, q_idx=np.arange(T), real=real), **settings})

    def cached():   # 3 tokens already in a global cache, 2 new ones
        cache = GlobalCache()
        cache.update(rand(56, B, H, 3, d // H), rand(57, B, H, 3, d // H))
        return (x[:, :2], *weights), dict(at=layer(q_idx=np.arange(3, 5), real=np.ones((B, 5), bool), cache=cache))
    return [
        Case("global, batch 2, 3 heads of size 5", lambda: ((x, *weights), dict(at=layer()))),
        Case("local, window 2 (a key exactly 2 back is hidden)", lambda: ((x, *weights), dict(at=layer(window=2)))),
        Case("left padding: row 1 starts with 2 pads, whose queries see no real key (fully masked)",
             lambda: ((x, *weights), dict(at=layer(real=padded)))),
        Case("with a KV cache holding 3 earlier tokens: 2 new queries at indices 3, 4", cached),
        Case("large inputs (x around 10) and a non-contiguous x, window 3",
             lambda: ((strided(rand(58, B, T, d, scale=10)), *weights), dict(at=layer(window=3)))),
    ]


def _ignoring(name, value):  # self_attention called with one of the layer's settings replaced
    def variant(*args, at):
        return self_attention(*args, at=replace(at, **{name: value(getattr(at, name))}))
    return variant


SELF_ATTENTION = Exercise("self_attention", 3, self_attention, self_attention_cases, [
    *[Mistake(m.what, m.fix, patched(self_attention, attention_module, attention=m.fn)) for m in ATTENTION.mistakes[:2]],
    Mistake("splits (and merges) the heads without the transpose", "[B, T, d] -> [B, T, H, hd] -> [B, H, T, hd]",
            patched(self_attention, attention_module, split_heads=_split_without_transpose,
                    merge_heads=MERGE_HEADS.mistakes[0].fn)),
    Mistake("ignores the padding (`real`)", "mask every key whose index is padding: causal_mask(...) & real",
            _ignoring("real", np.ones_like)),
    Mistake("ignores the window", "pass the layer's window to causal_mask", _ignoring("window", lambda w: None)),
    Mistake("leaves out the output projection", "end with linear(merge_heads(heads), **out_proj)",
            # only out_proj has a bias, so this linear skips exactly that one
            patched(self_attention, attention_module, linear=lambda x, w, b=None: x if b is not None else x @ w.T)),
])
