"""Lesson 5: generating: the KV cache and sampling."""
import numpy as np

from ...model.attention import MASKED, softmax
from ...model.cache import GlobalCache, LocalCache
from ...text.sampling import apply_temperature, top_k_filter, top_p_filter
from ..compare import Named
from .base import Case, Exercise, Mistake, rand, strided


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
        Case("k 0 disables the filter", lambda: ((logits(112), 0), {}), edge=True),
        Case("k 20 > vocabulary 12: everything survives", lambda: ((logits(113), 20), {}), edge=True),
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
        Case("top_p 1 disables the filter", lambda: ((logits(124), 1.0), {}), edge=True),
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
], call=filtered, uses=("softmax",))
