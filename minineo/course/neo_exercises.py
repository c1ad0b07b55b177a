"""Your GPT-Neo, one function at a time. Replace each `raise NotImplementedError` with your code.

Check a function:      python -m minineo.check layer_norm neo_exercises.py
See it in the model:   python -m minineo.check layer_norm neo_exercises.py --in-model
Check the whole file:  python -m minineo.check all neo_exercises.py

Each function has exactly the signature of minineo's own (named in its docstring): that one is the
solution, so read it only once yours passes. Shapes: B = batch, T = new tokens (queries),
S = keys visible, d = hidden size, H = heads, hd = head size, V = vocabulary. Arrays are float32;
keep them so (a float64 constant promotes a whole computation). Never change an array you were given.
A weight is a dict: {"w": [n_out, n_in], "b": [n_out]} (the bias may be absent), and a linear layer
computes x @ w.T + b.
"""
import numpy as np


# ---- lesson 1: tokens in, logits out ------------------------------------------------------------------

def embed(ids, positions, wte, wpe):  # [B, T], [B, T] -> [B, T, d]
    """The input of the first block: each token's embedding (a row of wte [V, d]) plus its position's
    (a row of wpe [max_positions, d]). Solution: minineo.model.embedding.embed."""
    raise NotImplementedError


def lm_head(h, wte):  # [..., d] -> [..., V]
    """The logits: a score for every token of the vocabulary. GPT-Neo ties the head to the token
    embedding wte [V, d] (no separate matrix, no bias). Solution: minineo.model.embedding.lm_head."""
    raise NotImplementedError


# ---- lesson 2: layer norm -----------------------------------------------------------------------------

def layer_norm(x, g, b, eps=1e-5):  # [..., d] -> [..., d]
    """Normalise each token's d features to mean 0 and variance 1, then scale by g [d] and shift by
    b [d]. Solution: minineo.model.layer_norm.layer_norm."""
    raise NotImplementedError


# ---- lesson 3: attention ------------------------------------------------------------------------------

def softmax(x):  # [..., n] -> [..., n]
    """Probabilities over the last axis, safe for large scores and for rows that are all masked
    (every score the most negative float32). Solution: minineo.model.attention.softmax."""
    raise NotImplementedError


def causal_mask(q_idx, k_idx, window=None):  # [T], [S] -> [T, S] bool
    """Which keys each query may see, by sequence index (a query may come after cached keys): every
    key at or before it (global layer), or only the last `window` of them, itself included (local
    layer). Solution: minineo.model.attention.causal_mask."""
    raise NotImplementedError


def attention(q, k, v, mask):  # [B, H, T, hd], [B, H, S, hd], [B, H, S, hd], [B, 1, T, S] bool -> [B, H, T, hd]
    """softmax(scores) @ v with scores = q @ k^T, masked where mask is False, exactly as GPT-Neo
    does it. Solution: minineo.model.attention.attention."""
    raise NotImplementedError


def split_heads(x, n_head):  # [B, T, n_head * hd] -> [B, n_head, T, hd]
    """Head h takes features h*hd .. (h+1)*hd - 1 of every token. Solution: minineo.model.attention.split_heads."""
    raise NotImplementedError


def merge_heads(x):  # [B, H, T, hd] -> [B, T, H * hd]
    """The inverse of split_heads. Solution: minineo.model.attention.merge_heads."""
    raise NotImplementedError


def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):  # [B, T, d] -> [B, T, d]
    """Multi-head self-attention of a global or local layer. q_proj, k_proj, v_proj (no bias) and
    out_proj (with bias) are weights. `at` is the layer in this call (minineo.model.block.Layer):
    at.n_head heads; at.window, None for a global layer; at.q_idx [T], the new tokens' sequence indices;
    at.real [B, N], which sequence indices hold real tokens (False: left padding), N = all tokens so far;
    at.cache, None or a KV cache (lesson 5) whose at.cache.update(k, v) takes this call's keys and values
    [B, H, T, hd] and returns every key and value the new queries may need, and their indices k_idx.
    Use your own split_heads, causal_mask, attention and merge_heads (at.attend and the hook points
    at.attn(...) are for minineo's model: leave them out). Solution: minineo.model.attention.self_attention."""
    raise NotImplementedError


# ---- lesson 4: the MLP and the block ------------------------------------------------------------------

def gelu_new(x):  # [...] -> [...]
    """GPT-Neo's activation (GPT-2's "gelu_new"). Solution: minineo.model.mlp.gelu_new."""
    raise NotImplementedError


def feed_forward(x, c_fc, c_proj):  # [B, T, d] -> [B, T, d]
    """The MLP: c_fc (d -> inner), gelu_new, c_proj (inner -> d); both weights have a bias.
    Solution: minineo.model.mlp.feed_forward."""
    raise NotImplementedError


def block(x, ln_1, attn, ln_2, mlp, at):  # [B, T, d] -> [B, T, d]
    """One transformer block: attention and the MLP, each with its layer norm (ln_1, ln_2: {"g", "b"};
    attn: the four weights of self_attention; mlp: {"c_fc", "c_proj"}). `at` is self_attention's (pass it
    on), and at.eps is the layer norms' epsilon. Solution: minineo.model.block.block."""
    raise NotImplementedError


# ---- lesson 5: generating -----------------------------------------------------------------------------

class GlobalCache:
    """A global layer's KV cache. Solution: minineo.model.cache.GlobalCache."""

    def update(self, k, v):  # [B, H, T, hd] x 2 -> keys [B, H, S, hd], values [B, H, S, hd], k_idx [S]
        """Remember this call's keys and values; return every key and value so far, in sequence
        order, and their sequence indices (0 .. n - 1 for n tokens so far)."""
        raise NotImplementedError


class LocalCache:
    """A local layer's KV cache: its memory stops growing. Solution: minineo.model.cache.LocalCache."""

    def __init__(self, window):
        self.window = window

    def update(self, k, v):  # [B, H, T, hd] x 2 -> keys [B, H, S, hd], values [B, H, S, hd], k_idx [S]
        """As GlobalCache.update, but return only what the new queries may see: at most the last
        window - 1 earlier keys, then the new ones, in sequence order, with their sequence indices."""
        raise NotImplementedError


def apply_temperature(logits, temperature):  # [B, V] -> [B, V]
    """Logits for sampling at this temperature (below 1: sharper, above 1: flatter).
    Solution: minineo.text.sampling.apply_temperature."""
    raise NotImplementedError


def top_k_filter(logits, k):  # [B, V] -> [B, V]
    """Keep the k largest logits of each row (and any tied with the k-th); the rest become -inf.
    k = 0 keeps everything. Solution: minineo.text.sampling.top_k_filter."""
    raise NotImplementedError


def top_p_filter(logits, top_p):  # [B, V] -> [B, V]
    """Nucleus filtering: keep the most likely tokens whose probabilities add up to top_p (the token
    that crosses it included); the rest become -inf. top_p = 1 keeps everything.
    Solution: minineo.text.sampling.top_p_filter."""
    raise NotImplementedError
