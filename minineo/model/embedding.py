from .hooks import NO_HOOK
from .linear import linear


def embed(ids, positions, wte, wpe, hook=NO_HOOK):  # [B, T], [B, T] -> [B, T, d]
    return hook("hook_embed", wte[ids]) + hook("hook_pos_embed", wpe[positions])


def lm_head(h, wte):  # [..., d] -> [..., V]
    # Tied weights: the matrix that turns a token into a vector also scores every token against h.
    return linear(h, wte)
