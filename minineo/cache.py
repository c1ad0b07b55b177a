"""The KV cache: each layer's keys and values of earlier tokens, so a new token costs one
matrix-vector product per weight instead of a re-run of the whole prefix.

A global layer keeps every key. A local layer's queries never look further back than `window`
keys, so it keeps only the last `window` in a ring buffer: its memory stops growing there.
Both return keys sorted by sequence index, which banded_attention relies on.
"""
import numpy as np


class GlobalCache:
    def __init__(self):
        self.k = self.v = None   # [B, H, capacity, hd], filled up to self.n
        self.n = 0

    def update(self, k, v, idx):  # [B, H, T, hd] x 2, [T] -> [B, H, n, hd] x 2, [n]: every key so far
        end = self.n + k.shape[2]
        if self.k is None or end > self.k.shape[2]:   # grow by doubling: amortised O(1) per token
            capacity = max(end, 2 * (0 if self.k is None else self.k.shape[2]), 16)
            self.k, self.v = (_grow(buf, k, capacity, self.n) for buf in (self.k, self.v))
        self.k[:, :, self.n:end], self.v[:, :, self.n:end] = k, v
        self.n = end
        return self.k[:, :, :end], self.v[:, :, :end], np.arange(end)


class LocalCache:
    def __init__(self, window):
        self.window = window
        self.k = self.v = None   # [B, H, window, hd]: the key of sequence index i lives in slot i % window
        self.n = 0               # tokens seen

    def update(self, k, v, idx):  # [B, H, T, hd] x 2, [T] -> the last `window` keys before these, then these
        if self.k is None:
            B, H, _, hd = k.shape
            self.k, self.v = (np.zeros((B, H, self.window, hd), np.float32) for _ in range(2))
        kept = np.arange(max(self.n - self.window, 0), self.n)   # sequence indices still in the ring
        keys = np.concatenate([self.k[:, :, kept % self.window], k], axis=2)
        values = np.concatenate([self.v[:, :, kept % self.window], v], axis=2)
        newest = slice(max(len(idx) - self.window, 0), len(idx))
        self.k[:, :, idx[newest] % self.window] = k[:, :, newest]
        self.v[:, :, idx[newest] % self.window] = v[:, :, newest]
        self.n += len(idx)
        return keys, values, np.concatenate([kept, idx])


def _grow(buffer, like, capacity, n):  # a bigger [B, H, capacity, hd] buffer holding the first n keys
    B, H, _, hd = like.shape
    bigger = np.empty((B, H, capacity, hd), np.float32)
    if buffer is not None:
        bigger[:, :, :n] = buffer[:, :, :n]
    return bigger


class Cache:
    """Everything incremental decoding needs to remember about the tokens so far."""

    def __init__(self, config, batch_size):
        self.layers = [LocalCache(config.window_size) if kind == "local" else GlobalCache()
                       for kind in config.attention_layers]
        self.real = np.zeros((batch_size, 0), bool)   # [B, N]: which sequence indices are real tokens
        self.length = 0                                # N, the tokens so far (padding included)

    @property
    def batch_size(self):
        return self.real.shape[0]
