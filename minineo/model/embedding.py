from .linear import linear


def embed(ids, positions, wte, wpe):  # [B, T], [B, T] -> [B, T, d]
    return wte[ids] + wpe[positions]


def lm_head(h, wte):  # [..., d] -> [..., V]
    # Tied weights: the matrix that turns a token into a vector also scores every token against h.
    return linear(h, wte)
