import numpy as np


def layer_norm(x, g, b, eps=1e-5):  # [..., d] -> [..., d]
    # Each token's features are centred and scaled to unit variance, then given a learned scale and shift.
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)
    return g * (x - mean) / np.sqrt(variance + eps) + b
