"""The exercises: for each layer of GPT-Neo, its reference in minineo, the inputs that expose mistakes,
and the mistakes students make, each written out as a function so that a wrong answer can be named
by what it computes (never by reading the student's code).

A solution has exactly the reference's signature, so the reference itself is the model solution.
Every case builds fresh float32 inputs from a fixed seed each time it is called.
"""
import math
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np

from ..model import attention as attention_module
from ..model import mlp as mlp_module
from ..model.attention import MASKED, attention, causal_mask, merge_heads, self_attention, softmax, split_heads
from ..model.block import block
from ..model.cache import GlobalCache, LocalCache
from ..model.embedding import embed, lm_head
from ..model.layer_norm import layer_norm
from ..model.mlp import feed_forward, gelu_new
from ..text.sampling import apply_temperature, top_k_filter, top_p_filter
from .compare import ATOL, RTOL, Named


@dataclass(frozen=True)
class Case:
    what: str                        # shown in the report: which trap this input sets
    build: Callable[[], tuple]       # -> (args, kwargs), fresh arrays on every call


@dataclass(frozen=True)
class Mistake:
    what: str                        # the mistake, named as a student would recognise it
    fix: str                         # what GPT-Neo does instead
    fn: Callable                     # the reference with that mistake: same signature


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: int
    reference: Callable
    cases: Callable[[], list]        # -> [Case]
    mistakes: list
    call: Callable = None            # (student's function or class, args, kwargs) -> output; default fn(*args, **kwargs)
    rtol: float = RTOL
    atol: float = ATOL
    checks_inputs: bool = True       # probe whether the caller's arrays were changed

    @property
    def where(self):   # "minineo.model.layer_norm.layer_norm"
        return f"{self.reference.__module__}.{self.reference.__qualname__}"

    def run(self, fn, args, kwargs):
        return fn(*args, **kwargs) if self.call is None else self.call(fn, *args, **kwargs)


def rand(seed, *shape, scale=1.0, offset=0.0):  # float32 normal values
    return (offset + scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def strided(a):  # the same values as a non-contiguous view (every other column of a wider array)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def patched(fn, module, **replacements):  # fn with some of the names it calls replaced by mistaken ones
    def variant(*args, **kwargs):
        with mock.patch.multiple(module, **replacements):
            return fn(*args, **kwargs)
    return variant


def exact_gelu(x):  # the erf GELU, which GPT-Neo's tanh approximation approximates
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1 + erf(x.astype(np.float64) / math.sqrt(2)))).astype(x.dtype)


# ---- lesson 1: embeddings and the LM head -------------------------------------------------------------

def embed_cases():
    V, P, d = 13, 16, 6
    wte, wpe = rand(1, V, d), rand(2, P, d)
    ids = np.random.default_rng(3).integers(0, V, (2, 5))
    padded = np.array([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    return [
        Case("batch of 2, 5 tokens at positions 0..4", lambda: ((ids, np.tile(np.arange(5), (2, 1)), wte, wpe), {})),
        Case("positions 7..11: 7 tokens came before (a KV cache), so positions do not start at 0",
             lambda: ((ids, np.tile(np.arange(7, 12), (2, 1)), wte, wpe), {})),
        Case("left padding: row 0 has 2 pads (at position 1), its tokens at 0, 1, 2", lambda: ((ids, padded, wte, wpe), {})),
        Case("non-contiguous wte and wpe", lambda: ((ids, np.tile(np.arange(3, 8), (2, 1)), strided(wte), strided(wpe)), {})),
    ]


EMBED = Exercise("embed", 1, embed, embed_cases, [
    Mistake("ignores `positions` and uses 0..T-1", "look the positions up as given: wpe[positions] "
            "(after a cache they continue from the tokens before; with left padding they skip the pads)",
            lambda ids, positions, wte, wpe: wte[ids] + wpe[np.arange(ids.shape[-1])]),
    Mistake("looks the position embedding up with the token ids (wpe[ids])", "wpe[positions]",
            lambda ids, positions, wte, wpe: wte[ids] + wpe[ids]),
    Mistake("leaves out the position embedding", "add wpe[positions] to wte[ids]",
            lambda ids, positions, wte, wpe: wte[ids]),
])


def lm_head_cases():
    V, d = 11, 6
    wte = rand(4, V, d)
    return [
        Case("batch of 2, 3 tokens, d 6, vocabulary 11", lambda: ((rand(5, 2, 3, d), wte), {})),
        Case("one vector h [d]", lambda: ((rand(6, d), wte), {})),
        Case("large h (values around 100) and non-contiguous wte", lambda: ((rand(7, 4, d, scale=100), strided(wte)), {})),
    ]


LM_HEAD = Exercise("lm_head", 1, lm_head, lm_head_cases, [
    Mistake("returns probabilities (a softmax of the logits)", "return the logits h @ wte.T; the softmax comes later, "
            "in sampling or in the loss", lambda h, wte: softmax(h @ wte.T)),
    Mistake("returns log-probabilities (a log-softmax)", "return the logits h @ wte.T",
            lambda h, wte: (lambda z: z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
                            - z.max(-1, keepdims=True))(h @ wte.T)),
])


# ---- lesson 2: layer norm ------------------------------------------------------------------------------

def layer_norm_cases():
    g, b = rand(11, 8, scale=0.5, offset=1), rand(12, 8, scale=0.5)
    g7, b7 = rand(13, 7, scale=0.5, offset=1), rand(14, 7, scale=0.5)
    return [
        Case("random x [2, 3, 8], learnt g and b", lambda: ((rand(15, 2, 3, 8), g, b), {})),
        Case("d = 7 (odd) and a non-contiguous x", lambda: ((strided(rand(16, 4, 7, scale=3)), g7, b7), {})),
        Case("a tiny spread (std 0.001, variance 1e-6 < eps): where epsilon goes matters",
             lambda: ((rand(17, 3, 8, scale=1e-3), g, b), {})),
        Case("eps = 0.1 passed by the caller (x with std 0.3)", lambda: ((rand(18, 3, 8, scale=0.3), g, b), {"eps": 0.1})),
        Case("large values (around 300, spread 1): float32 loses E[x^2] - E[x]^2 to rounding",
             lambda: ((rand(19, 3, 8, offset=300), g, b), {})),
    ]


def _unbiased(x, g, b, eps=1e-5):
    return g * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) + b


LAYER_NORM = Exercise("layer_norm", 2, layer_norm, layer_norm_cases, [
    Mistake("uses the unbiased variance (dividing by d - 1, as np.var(ddof=1) or torch.var do)",
            "the biased variance, the mean of the squared deviations (divide by d)", _unbiased),
    Mistake("puts epsilon outside the square root: (x - mean) / (sqrt(var) + eps)",
            "divide by sqrt(var + eps)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps) + b),
    Mistake("ignores the `eps` argument (a fixed 1e-5)", "use the eps the caller passes (config.layer_norm_epsilon)",
            lambda x, g, b, eps=1e-5: layer_norm(x, g, b)),
    Mistake("computes the variance as E[x^2] - E[x]^2, which float32 rounding ruins when the mean is large "
            "next to the spread", "the mean of (x - mean)^2, as np.var does",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / np.sqrt(
                (x * x).mean(-1, keepdims=True) - x.mean(-1, keepdims=True) ** 2 + eps) + b),
    Mistake("divides by the variance, not the standard deviation", "divide by sqrt(var + eps)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / (x.var(-1, keepdims=True) + eps) + b),
    Mistake("leaves out the learnt scale g and shift b", "return g * x_hat + b",
            lambda x, g, b, eps=1e-5: layer_norm(x, 1, 0, eps).astype(x.dtype)),
    Mistake("normalises over the wrong axis (axis 0, across tokens)", "normalise each token over its d features (axis -1)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + b),
])


# ---- lesson 3: attention -------------------------------------------------------------------------------

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

    def cached():   # 3 tokens already in a global cache, 2 new ones
        cache = GlobalCache()
        cache.update(rand(56, B, H, 3, d // H), rand(57, B, H, 3, d // H))
        return (x[:, :2], *weights), dict(n_head=H, window=None, q_idx=np.arange(3, 5), real=np.ones((B, 5), bool),
                                          cache=cache)
    return [
        Case("global, batch 2, 3 heads of size 5", lambda: ((x, *weights), dict(n_head=H, window=None,
                                                                                 q_idx=np.arange(T), real=real))),
        Case("local, window 2 (a key exactly 2 back is hidden)", lambda: ((x, *weights), dict(
            n_head=H, window=2, q_idx=np.arange(T), real=real))),
        Case("left padding: row 1 starts with 2 pads, whose queries see no real key (fully masked)",
             lambda: ((x, *weights), dict(n_head=H, window=None, q_idx=np.arange(T), real=padded))),
        Case("with a KV cache holding 3 earlier tokens: 2 new queries at indices 3, 4", cached),
        Case("large inputs (x around 10) and a non-contiguous x, window 3",
             lambda: ((strided(rand(58, B, T, d, scale=10)), *weights), dict(n_head=H, window=3,
                                                                              q_idx=np.arange(T), real=real))),
    ]


def _ignoring(name, value):  # self_attention called with one keyword replaced
    def variant(*args, **kwargs):
        return self_attention(*args, **{**kwargs, name: value(kwargs[name])})
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


# ---- lesson 4: the MLP and the block ---------------------------------------------------------------------

def gelu_new_cases():
    return [
        Case("49 points from -6 to 6", lambda: ((np.linspace(-6, 6, 49, dtype=np.float32),), {})),
        Case("random [2, 3, 4] (std 3), non-contiguous", lambda: ((strided(rand(60, 2, 3, 4, scale=3)),), {})),
        Case("large magnitudes (up to 10^4): expect 0 far left, x far right",
             lambda: ((np.array([-1e4, -300, -30, 30, 300, 1e4], np.float32),), {})),
    ]


GELU_NEW = Exercise("gelu_new", 4, gelu_new, gelu_new_cases, [
    Mistake("computes the exact GELU with erf", "GPT-Neo uses GPT-2's tanh approximation, "
            "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))", exact_gelu),
    Mistake("uses the sigmoid approximation x * sigmoid(1.702 x)", "the tanh approximation",
            lambda x: x / (1 + np.exp(-1.702 * x))),
    Mistake("has x^2 where the formula has x^3", "x + 0.044715 * x^3",
            lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x)))),
    Mistake("leaves out the factor 0.5", "0.5 * x * (1 + tanh(...))", lambda x: 2 * gelu_new(x)),
    Mistake("is a ReLU", "the tanh approximation of GELU", lambda x: np.maximum(x, 0)),
])


def mlp_weights(seed, d, inner):
    return ({"w": rand(seed, inner, d, scale=0.5), "b": rand(seed + 1, inner)},
            {"w": rand(seed + 2, d, inner, scale=0.3), "b": rand(seed + 3, d)})


def feed_forward_cases():
    c_fc, c_proj = mlp_weights(61, 6, 24)
    return [
        Case("batch 2, 3 tokens, d 6, inner 24", lambda: ((rand(65, 2, 3, 6), c_fc, c_proj), {})),
        Case("large x (std 30) and a non-contiguous x", lambda: ((strided(rand(66, 2, 3, 6, scale=30)), c_fc, c_proj), {})),
        Case("d 5, inner 7 (odd sizes)", lambda: ((rand(67, 1, 4, 5), *mlp_weights(68, 5, 7)), {})),
    ]


FEED_FORWARD = Exercise("feed_forward", 4, feed_forward, feed_forward_cases, [
    Mistake("uses the exact (erf) GELU", "gelu_new, the tanh approximation",
            patched(feed_forward, mlp_module, gelu_new=exact_gelu)),
    Mistake("uses a ReLU", "gelu_new", patched(feed_forward, mlp_module, gelu_new=lambda x: np.maximum(x, 0))),
    Mistake("has no activation between the two linear layers", "gelu_new(x @ W_fc.T + b_fc)",
            patched(feed_forward, mlp_module, gelu_new=lambda x: x)),
    Mistake("leaves out the biases", "x @ W.T + b in both layers",
            lambda x, c_fc, c_proj: gelu_new(x @ c_fc["w"].T) @ c_proj["w"].T),
])


def block_cases():
    d, H, B, T = 12, 3, 2, 5
    weights = dict(ln_1={"g": rand(70, d, scale=0.3, offset=1), "b": rand(71, d, scale=0.3)},
                   attn=dict(zip(["q_proj", "k_proj", "v_proj", "out_proj"], attention_weights(72, d))),
                   ln_2={"g": rand(77, d, scale=0.3, offset=1), "b": rand(78, d, scale=0.3)},
                   mlp=dict(zip(["c_fc", "c_proj"], mlp_weights(79, d, 4 * d))))
    real = np.ones((B, T), bool)
    padded = real.copy()
    padded[0, :1] = False

    def case(x, **settings):
        return lambda: ((x,), dict(weights, **dict(dict(n_head=H, eps=1e-5, window=None, q_idx=np.arange(T), real=real),
                                                    **settings)))
    return [
        Case("global, batch 2, 3 heads of size 4", case(rand(83, B, T, d))),
        Case("local, window 2, row 0 left-padded", case(rand(84, B, T, d), window=2, real=padded)),
        Case("eps = 0.5 passed by the caller", case(rand(85, B, T, d), eps=0.5)),
        Case("a stream of large values (std 20), non-contiguous", case(strided(rand(86, B, T, d, scale=20)))),
    ]


def _block_variant(order):  # a block whose sublayers are wired by `order`(x, attend, mlp, ln_1, ln_2)
    def variant(x, ln_1, attn, ln_2, mlp, *, n_head, eps, window, q_idx, real, cache=None):
        def attend(h):
            return self_attention(h, **attn, n_head=n_head, window=window, q_idx=q_idx, real=real, cache=cache)
        return order(x, attend, lambda h: feed_forward(h, **mlp),
                     lambda h: layer_norm(h, **ln_1, eps=eps), lambda h: layer_norm(h, **ln_2, eps=eps))
    return variant


BLOCK = Exercise("block", 4, block, block_cases, [
    Mistake("normalises after adding (post-norm, as the original Transformer)",
            "pre-norm: x = x + attention(layer_norm(x)); x = x + mlp(layer_norm(x))",
            _block_variant(lambda x, a, m, n1, n2: n2((lambda y: y + m(y))(n1(x + a(x)))))),
    Mistake("leaves out the residual connections", "add each sublayer's output to the stream: x = x + ...",
            _block_variant(lambda x, a, m, n1, n2: m(n2(a(n1(x)))))),
    Mistake("leaves out the residual connection around the MLP", "x = x + mlp(layer_norm(x))",
            _block_variant(lambda x, a, m, n1, n2: (lambda y: m(n2(y)))(x + a(n1(x))))),
    Mistake("uses ln_1 for both sublayers", "ln_1 before attention, ln_2 before the MLP",
            _block_variant(lambda x, a, m, n1, n2: (lambda y: y + m(n1(y)))(x + a(n1(x))))),
    Mistake("ignores the `eps` argument (a fixed 1e-5)", "pass eps to both layer norms",
            lambda x, *args, eps, **kwargs: block(x, *args, eps=1e-5, **kwargs)),
    Mistake(ATTENTION.mistakes[0].what, ATTENTION.mistakes[0].fix,
            patched(block, attention_module, attention=ATTENTION.mistakes[0].fn)),
])


# ---- lesson 5: the KV cache and sampling -------------------------------------------------------------------

def cache_steps(cache_class, B, H, hd, steps, seed, window=None):
    """Feeds keys and values to a cache `steps` new tokens at a time -> what each update let the new
    queries see: the keys and values they may attend to (window - 1 back and newer), and their indices."""
    cache = cache_class() if window is None else cache_class(window)
    rng = np.random.default_rng(seed)
    everything_k, everything_v, seen, names = [], [], [], []
    n = 0
    for step, T in enumerate(steps):
        k, v = (rng.standard_normal((B, H, T, hd)).astype(np.float32) for _ in range(2))
        everything_k.append(k)
        everything_v.append(v)
        n += T
        keys, values, k_idx = cache.update(k, v)
        k_idx = np.asarray(k_idx)
        first_needed = 0 if window is None else max(0, n - T - window + 1)
        problem = _cache_problem(keys, values, k_idx, n, T, window, first_needed)
        if problem:
            return CacheProblem(f"after update {step + 1} (tokens {n - T}..{n - 1}): {problem}")
        needed = k_idx >= first_needed
        seen += [keys[:, :, needed], values[:, :, needed], k_idx[needed]]
        names += [f"update {step + 1}: keys", f"update {step + 1}: values", f"update {step + 1}: k_idx"]
    return Named(seen, names)


class CacheProblem(str):
    """What a cache returned that no comparison of values can put right (an unsorted k_idx, a memory that grows)."""


def _cache_problem(keys, values, k_idx, n, T, window, first_needed):  # -> None, or what is wrong
    if not (isinstance(keys, np.ndarray) and isinstance(values, np.ndarray)) or keys.ndim != 4:
        return f"expected keys and values as [B, H, S, hd] arrays, seen {type(keys).__name__}"
    if k_idx.ndim != 1 or len(k_idx) != keys.shape[2] or values.shape != keys.shape:
        return (f"expected keys, values and k_idx for the same S keys, seen keys {list(keys.shape)}, "
                f"values {list(values.shape)}, k_idx {list(k_idx.shape)}")
    if len(k_idx) > 1 and not (np.diff(k_idx) > 0).all():
        return f"expected increasing k_idx (keys in sequence order), seen {k_idx.tolist()}"
    if window is not None and len(k_idx) > window - 1 + T:
        return (f"expected at most window - 1 = {window - 1} earlier keys plus the {T} new ones, seen {len(k_idx)} "
                f"keys: a local layer's queries never look further back, so keeping more only grows the memory")
    if len(k_idx) and k_idx[-1] != n - 1:
        return f"expected the newest key's index to be {n - 1} (tokens so far - 1), seen {k_idx[-1]}"
    missing = sorted(set(range(first_needed, n)) - set(k_idx.tolist()))
    if missing:
        return (f"expected every key from {first_needed} to {n - 1} (the new queries may attend to them), "
                f"seen k_idx {k_idx.tolist()}: keys {missing[:8]} are missing")
    return None


def global_cache_cases():
    return [
        Case("a prompt of 3 tokens, then 1, 1, 2, 1 (batch 2, 2 heads of size 3)",
             lambda: ((2, 2, 3, [3, 1, 1, 2, 1], 90), {})),
        Case("40 tokens one at a time (the buffer must grow)", lambda: ((1, 1, 2, [1] * 40, 91), {})),
    ]


class _Forgetful:   # keeps nothing: every update sees only its own keys
    def __init__(self, window=None):
        self.n = 0

    def update(self, k, v):
        self.n += k.shape[2]
        return k, v, np.arange(self.n - k.shape[2], self.n)


class _IndicesFromZero(GlobalCache):   # the right keys, numbered from 0 on every call
    def update(self, k, v):
        keys, values, k_idx = super().update(k, v)
        return keys, values, np.arange(k.shape[2]) if len(k_idx) != k.shape[2] else k_idx


class _ShortWindow(LocalCache):   # keeps window - 2 earlier keys
    def update(self, k, v):
        keys, values, k_idx = super().update(k, v)
        keep = k_idx >= k_idx[-1] - k.shape[2] - self.window + 3
        return keys[:, :, keep], values[:, :, keep], k_idx[keep]


class _LocalIndicesFromZero(LocalCache):
    def update(self, k, v):
        keys, values, k_idx = super().update(k, v)
        return keys, values, k_idx - k_idx[0]


GLOBAL_CACHE = Exercise("GlobalCache", 5, GlobalCache, global_cache_cases, [
    Mistake("forgets the earlier keys: update returns only the new ones",
            "keep every key and value so far, and return them all", _Forgetful),
    Mistake("numbers the keys from 0 on every call", "k_idx counts every token so far: 0 .. n - 1",
            _IndicesFromZero),
], call=cache_steps, checks_inputs=False)


def local_cache_cases():
    return [
        Case("window 3: a prompt of 1, then 1, 1, 1, 2, 1, 5, 1, 1 (batch 2, 2 heads of size 3)",
             lambda: ((2, 2, 3, [1, 1, 1, 1, 2, 1, 5, 1, 1], 92), {"window": 3})),
        Case("window 1: each query sees only itself", lambda: ((1, 2, 2, [2, 1, 1, 3, 1], 93), {"window": 1})),
        Case("window 4: a prompt of 6, then 20 tokens one at a time", lambda: ((1, 1, 3, [6] + [1] * 20, 94), {"window": 4})),
    ]


LOCAL_CACHE = Exercise("LocalCache", 5, LocalCache, local_cache_cases, [
    Mistake("keeps window - 2 earlier keys: the key exactly window - 1 back, which a new query still sees, is lost",
            "keep the last window - 1 earlier keys", _ShortWindow),
    Mistake("forgets the earlier keys: update returns only the new ones",
            "keep the last window - 1 keys and return them before the new ones", _Forgetful),
    Mistake("numbers the returned keys from 0 instead of by their place in the sequence",
            "k_idx are sequence indices: the last one is n - 1 for n tokens so far", _LocalIndicesFromZero),
], call=cache_steps, checks_inputs=False)


def filtered(fn, *args, **kwargs):  # fn's logits, with any value at or below the most negative float32 as -inf
    # A filtered token must get probability 0; -inf (transformers' choice) and finfo(float32).min both do.
    out = fn(*args, **kwargs)
    if isinstance(out, np.ndarray) and np.issubdtype(out.dtype, np.floating):
        return np.where(out <= MASKED, -np.inf, out).astype(out.dtype)
    return out


def logits(seed, B=2, V=12, scale=2.0):
    return rand(seed, B, V, scale=scale)


def temperature_cases():
    return [
        Case("temperature 0.7 on [2, 12] logits", lambda: ((logits(100), 0.7), {})),
        Case("temperature 2.5, non-contiguous logits", lambda: ((strided(logits(101)), 2.5), {})),
        Case("temperature 1: unchanged", lambda: ((logits(102), 1.0), {})),
    ]


APPLY_TEMPERATURE = Exercise("apply_temperature", 5, apply_temperature, temperature_cases, [
    Mistake("multiplies by the temperature", "divide: logits / temperature (a low temperature sharpens)",
            lambda x, t: x * np.float32(t)),
    Mistake("returns probabilities (a softmax of logits / temperature)", "return the scaled logits",
            lambda x, t: softmax(x / np.float32(t))),
], call=filtered)


def top_k_cases():
    tied = np.array([[3.0, 1.0, 5.0, 5.0, 2.0, 5.0, 0.5, 4.0], [1.0, 2.0, 2.0, 0.0, 2.0, -1.0, 3.0, 2.0]], np.float32)
    return [
        Case("k 3 on [2, 12] logits", lambda: ((logits(110), 3), {})),
        Case("k 1: only the largest survives", lambda: ((logits(111), 1), {})),
        Case("ties with the k-th largest (k 2 and 3): all of them survive, as in transformers",
             lambda: ((tied, 2), {})),
        Case("k 0 disables the filter", lambda: ((logits(112), 0), {})),
        Case("k 20 > vocabulary 12: everything survives", lambda: ((logits(113), 20), {})),
        Case("k 4 on non-contiguous logits", lambda: ((strided(logits(114)), 4), {})),
    ]


def _top_k_exactly(x, k):  # keeps exactly k by sorting, so ties with the k-th largest may go
    if k == 0:
        return x
    keep = np.argsort(-x, axis=-1, kind="stable")[:, :k]
    out = np.full_like(x, -np.inf)
    np.put_along_axis(out, keep, np.take_along_axis(x, keep, -1), -1)
    return out


TOP_K_FILTER = Exercise("top_k_filter", 5, top_k_filter, top_k_cases, [
    Mistake("keeps exactly k tokens (by sorting): ties with the k-th largest are dropped",
            "keep every logit >= the k-th largest, as transformers' TopKLogitsWarper", _top_k_exactly),
    Mistake("keeps k + 1 tokens", "keep the k largest", lambda x, k: top_k_filter(x, k + 1 if k else 0)),
    Mistake("keeps k - 1 tokens", "keep the k largest", lambda x, k: top_k_filter(x, k - 1) if k > 1 else
            (np.full_like(x, -np.inf) if k == 1 else x)),
    Mistake("does not treat k = 0 as 'no filter'", "k = 0 disables top-k, as in transformers",
            lambda x, k: top_k_filter(x, k) if k else np.full_like(x, -np.inf)),
    Mistake("keeps the k smallest logits", "keep the k largest", lambda x, k: np.where(np.isinf(top_k_filter(-x, k)), -np.inf, x)),
], call=filtered)


def top_p_cases():
    sharp = logits(120)
    sharp[:, 3] = 9.0
    return [
        Case("top_p 0.9 on [2, 12] logits", lambda: ((logits(121), 0.9), {})),
        Case("top_p 0.5", lambda: ((logits(122, scale=1.5), 0.5), {})),
        Case("top_p 0.01: only the most likely token survives", lambda: ((logits(123), 0.01), {})),
        Case("top_p 1 disables the filter", lambda: ((logits(124), 1.0), {})),
        Case("one token holds more than top_p 0.8 alone: it survives", lambda: ((sharp, 0.8), {})),
        Case("top_p 0.7 on non-contiguous logits over 40 tokens", lambda: ((strided(logits(125, V=40)), 0.7), {})),
    ]


def _top_p_variant(keep_sorted):  # top-p with another rule: keep_sorted(descending cumulative, top_p) -> bool
    def variant(x, top_p):
        order = np.argsort(-x, axis=-1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(softmax(x), order, -1), axis=-1)
        keep = np.empty(x.shape, bool)
        np.put_along_axis(keep, order, keep_sorted(cumulative, top_p), -1)
        return np.where(keep, x, -np.inf)
    return variant


def _always_first(rule):  # the same rule, with the most likely token kept whatever it says
    def keep(cumulative, top_p):
        kept = rule(cumulative, top_p)
        kept[:, 0] = True
        return kept
    return keep


TOP_P_FILTER = Exercise("top_p_filter", 5, top_p_filter, top_p_cases, [
    Mistake("drops the token that carries the cumulative probability past top_p",
            "keep the smallest set of most likely tokens whose probabilities add up to at least top_p: "
            "the token that crosses top_p stays", _top_p_variant(_always_first(lambda c, p: c < p))),
    Mistake("can drop every token (when the most likely one alone holds more than top_p)",
            "the most likely token always survives", _top_p_variant(lambda c, p: c < p)),
    Mistake("keeps the least likely tokens (adds probabilities up from the bottom)",
            "add them up from the most likely token down",
            lambda x, p: np.where(np.isinf(top_p_filter(-x, p)), -np.inf, x)),
], call=filtered)


EXERCISES = {e.name: e for e in [EMBED, LM_HEAD, LAYER_NORM, SOFTMAX, CAUSAL_MASK, ATTENTION, SPLIT_HEADS, MERGE_HEADS,
                                 SELF_ATTENTION, GELU_NEW, FEED_FORWARD, BLOCK, GLOBAL_CACHE, LOCAL_CACHE,
                                 APPLY_TEMPERATURE, TOP_K_FILTER, TOP_P_FILTER]}
LESSONS = {1: "Tokens in, logits out: embeddings and the tied LM head", 2: "Layer norm",
           3: "Attention, global and local", 4: "The MLP and the transformer block",
           5: "Generating: the KV cache and sampling"}
