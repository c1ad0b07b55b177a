"""The KV cache: each layer's keys and values of earlier tokens, so a new token costs one
matrix-vector product per weight instead of a re-run of the whole prefix.

A global layer keeps every key. A local layer's queries never look further back than `window`
keys, so it keeps only the last ones, in a buffer of 2 x window rows: its memory stops growing there.
The model only asks: `update` hands a layer's new keys and values to its cache and gets back every
key in view, and `Cache.update` records which new indices are real tokens. What attention relies on
(keys sorted by index, one per index, a local buffer of 2 x window rows) is checked in `checked`.
"""
import numpy as np


def checked(keys, values, k_idx, rows=None, limit=None):  # -> keys, values, k_idx, after the invariants hold
    # Every layer's update ends here. Keys in view come in ascending sequence index, one key and one
    # value per index (minineo.fast.banded bisects k_idx to find its band), and a local layer's
    # buffer never holds more than its 2 x window rows. A failure is a bug in minineo, not a user mistake.
    assert keys.shape[2] == values.shape[2] == len(k_idx), (keys.shape, values.shape, len(k_idx))
    assert len(k_idx) < 2 or (np.diff(k_idx) == 1).all(), f"key indices not consecutive: {k_idx}"
    assert limit is None or rows <= limit, f"a local cache holds {rows} rows, more than {limit}"
    return keys, values, k_idx


class GlobalCache:
    def __init__(self):
        self.k = self.v = None   # [B, H, capacity, hd], filled up to self.n
        self.n = 0

    def update(self, k, v):  # [B, H, T, hd] x 2 -> [B, H, n, hd] x 2, [n]: every key so far, and its index
        end = self.n + k.shape[2]
        if self.k is None or end > self.k.shape[2]:   # grow by doubling: amortised O(1) per token
            # at least 16 rows, so that a prompt of a few tokens does not regrow on each of the next steps
            capacity = max(end, 2 * (0 if self.k is None else self.k.shape[2]), 16)
            self.k, self.v = (grow(buf, k, capacity, self.n) for buf in (self.k, self.v))
        self.k[:, :, self.n:end], self.v[:, :, self.n:end] = k, v
        self.n = end
        return checked(self.k[:, :, :end], self.v[:, :, :end], np.arange(end))


class LocalCache:
    def __init__(self, window):
        self.window = window
        self.k = self.v = None    # [B, H, 2 * window, hd]: keys in sequence order, live in rows start..end
        self.start = self.end = 0
        self.n = 0                # tokens seen

    def update(self, k, v):  # [B, H, T, hd] x 2 -> the last window - 1 keys before these, then these; indices
        # A new query sees at most window - 1 earlier keys, so those are kept. New keys are appended
        # after them, and attention reads a view of the buffer: no copy per token. When the buffer is
        # full (once every `window` tokens), the kept keys and the new ones are joined into a new
        # array, and the last window - 1 of them move back to the front of the buffer.
        T = k.shape[2]
        if self.k is None:
            B, H, _, hd = k.shape
            self.k, self.v = (np.empty((B, H, 2 * self.window, hd), np.float32) for _ in range(2))
        start = max(self.start, self.end - (self.window - 1))
        if self.end + T <= self.k.shape[2]:
            self.k[:, :, self.end:self.end + T], self.v[:, :, self.end:self.end + T] = k, v
            self.start, self.end = start, self.end + T
            keys, values = self.k[:, :, start:self.end], self.v[:, :, start:self.end]
        else:
            keys = np.concatenate([self.k[:, :, start:self.end], k], axis=2)
            values = np.concatenate([self.v[:, :, start:self.end], v], axis=2)
            kept = min(keys.shape[2], self.window - 1)
            tail = slice(keys.shape[2] - kept, keys.shape[2])
            self.k[:, :, :kept], self.v[:, :, :kept] = keys[:, :, tail], values[:, :, tail]
            self.start, self.end = 0, kept
        self.n += T
        return checked(keys, values, np.arange(self.n - keys.shape[2], self.n),
                       rows=self.k.shape[2], limit=2 * self.window)


def grow(buffer, like, capacity, n):  # a bigger [B, H, capacity, hd] buffer holding the first n keys
    B, H, _, hd = like.shape
    bigger = np.empty((B, H, capacity, hd), np.float32)
    if buffer is not None:
        bigger[:, :, :n] = buffer[:, :, :n]
    return bigger


class Cache:
    """Everything incremental decoding needs to remember about the tokens so far: each layer's keys
    and values (self.layers), and which sequence indices hold real tokens rather than padding."""

    def __init__(self, config, batch_size):
        # No sequence is longer than max_position_embeddings, so a wider window changes nothing but the memory.
        window = min(config.window_size, config.max_position_embeddings)
        self.layers = [LocalCache(window) if kind == "local" else GlobalCache()
                       for kind in config.attention_layers]
        self.real = np.zeros((batch_size, 0), bool)   # [B, N]: which sequence indices are real tokens

    @property
    def batch_size(self):
        return self.real.shape[0]

    @property
    def length(self):  # N, the tokens so far, padding included: the next token's sequence index
        return self.real.shape[1]

    def update(self, real):  # [B, T] bool, the new tokens' -> [B, N + T], every index's so far
        self.real = np.concatenate([self.real, real], axis=1)
        return self.real
