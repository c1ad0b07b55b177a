import numpy as np


def layer_norm(x, g, b, eps=1e-5):  # [..., d] -> [..., d]
    # Each token's features are centred and scaled to unit variance, then given a learned scale and shift.
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = (centred * centred).mean(axis=-1, keepdims=True)   # np.var, without computing the mean twice
    return g * centred / np.sqrt(variance + eps) + b
